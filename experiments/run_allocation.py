"""Allocation x ranking study: which layers keep how many weights, and which.

Command (see ``experiments/configs/allocation_fmnist_lenet300.py``):

    .venv/bin/python -m experiments.run_allocation \\
        [--config experiments/configs/allocation_fmnist_lenet300.py] \\
        [--workdir experiments/results/allocation_fmnist_lenet300] [--quick]

Trains two AutoS scorers and the allocation model on the source IRP run,
reports the scorers' within-layer Spearman on the held-out IRP run, then for
every seed, sparsity, allocation and ranking builds the mask
(``allocation.mask_from_counts``) and trains it with the config's one recipe.
Writes ``runs.jsonl`` (resumable: finished runs are skipped), ``table.md``
(mean ± sample std over seeds, per-layer kept %, empty layers flagged),
``accuracy.png`` and ``scorers.json``.
"""

import json
import os
import time

import jax.numpy as jnp
import numpy as np

from autosparse_jax import allocation as al
from autosparse_jax import (
    checkpoint,
    criteria,
    data,
    evaluation,
    features,
    masks,
    train,
)
from experiments import common

DEFAULT_CONFIG = "experiments/configs/allocation_fmnist_lenet300.py"
DEFAULT_WORKDIR = "experiments/results/allocation_fmnist_lenet300"
PAPER = features.FeatureConfig()
WITHIN = features.FeatureConfig(normalization="layer")


# ---------------------------------------------------------------- the masks

ALLOCATIONS = {
    "global": al.global_topk(),
    "erk": al.erk(),
    "uniform": al.uniform(),
    "snip": al.like(criteria.snip),
}
"""The allocations of the study by name ("learned" and "irp" come from the
source run: ``fit_learners``)."""


def irp_oracle(learners, sparsity, config):
    """IRP's own per-layer densities at ``sparsity`` (its nearest round), as an
    allocation; ``None`` where no round is within ``config.oracle_tolerance``."""
    round_masks, round_sparsities = learners["oracle"]
    r = evaluation.irp_round_at(round_sparsities, sparsity)
    if abs(round_sparsities[r] - sparsity) > config.oracle_tolerance:
        return None
    density = al.layer_densities([round_masks[r]])[0]

    def oracle(scores, s, ctx):
        del scores
        kept, total = density * ctx.sizes, al.num_keep(s, ctx)
        return al.integer_counts(
            jnp.asarray(kept * total / kept.sum()), ctx.alive, total
        )

    return oracle


def mask(t, allocation, ranking, sparsity, learners, config):
    """One (allocation, ranking) mask of the target, or ``None`` if undefined.

    AutoS ranks with the paper's scorer under AutoS's own global threshold and
    with the within-layer scorer under every other allocation.
    """
    autos = learners["autos"]
    if allocation == "irp":
        alloc = irp_oracle(learners, sparsity, config)
        if alloc is None:
            return None
    else:
        alloc = autos.allocation if allocation == "learned" else ALLOCATIONS[allocation]
    if ranking == "autos":
        criterion = autos.paper_criterion if allocation == "global" else autos.criterion
    else:
        criterion = criteria.CRITERIA[ranking]
    return criteria.prune_at_init(
        t.prune_key, criterion, t.params, t.batches, apply_fn=t.apply_fn,
        sparsity=sparsity, allocation=alloc,
    )  # fmt: skip


# -------------------------------------------------------------------- runs


def run_seed(seed, todo, learners, recipe, host_train, datasets, config, on_done):
    t = common.make_target(seed, recipe, host_train, config)
    for allocation, ranking, sparsity in todo:
        record = {"allocation": allocation, "ranking": ranking, "sparsity": sparsity}
        record["seed"] = seed
        if allocation == "dense":
            m = masks.dense_mask(t.params)
        else:
            m = mask(t, allocation, ranking, sparsity, learners, config)
            if m is None:
                continue
        tic = time.perf_counter()
        _, history = common.train_masked(
            recipe, t.data_key, t.params, t.model_state, m, *datasets, progress=False
        )
        record.update(common.summarize_training(m, history, time.perf_counter() - tic))
        on_done(record)


def planned(config) -> list[tuple]:
    runs = [("dense", "-", 0.0)]
    runs += [
        (a, r, s)
        for s in config.sparsities
        for a in config.allocations
        for r in config.rankings
    ]
    return [(*run, seed) for seed in config.seeds for run in runs]


def _key(r: dict) -> tuple:
    return (r["allocation"], r["ranking"], r["sparsity"], r["seed"])


# ---------------------------------------------------------------- summary


def table(config, records: list[dict], report: dict) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(_key(r)[:3], []).append(r)
    layers = list(records[0]["sparsity_by_layer"])
    names = " / ".join(n.removesuffix("/kernel") for n in layers)
    lines = [
        f"# Allocation x ranking: {config.model} on {config.dataset}",
        "",
        f"Fresh seeds {tuple(config.seeds)}; every mask trained with one recipe "
        f"({config.train.num_epochs} epochs, SGD momentum {config.train.momentum}, "
        f"lr {config.train.learning_rate} {config.train.schedule}, batch "
        f"{config.train.batch_size}). Final-epoch test accuracy, mean ± sample "
        "std over seeds (best epoch, selected on the test set, in brackets). "
        "AutoS and the allocation model were trained on the IRP run of seed 0 only.",
        "",
        "Scorers on the held-out IRP run (seed 1): "
        + "; ".join(
            f"{n}: Spearman {report[n]['spearman']:.3f}, within-layer "
            f"{report[n]['within_layer_spearman']:.3f}"
            for n in ("paper", "within")
        )
        + ".",
        "",
        f"| sparsity | allocation | ranking | final test acc % | best % | "
        f"kept % per layer ({names}) | empty layers |",
        "|---|---|---|---|---|---|---|",
    ]
    for (a, r, s), runs in groups.items():
        final = [100 * x["final_test_accuracy"] for x in runs]
        best = [100 * x["best_test_accuracy_selected_on_test"] for x in runs]
        kept = [
            100 * (1 - np.mean([x["sparsity_by_layer"][n] for x in runs]))
            for n in layers
        ]
        empty = sum(x["sparsity_by_layer"][n] == 1.0 for x in runs for n in layers)
        std = np.std(final, ddof=1) if len(final) > 1 else 0.0
        lines.append(
            f"| {s:g} | {a} | {r} | {np.mean(final):.2f} ± {std:.2f} | "
            f"({np.mean(best):.2f}) | {' / '.join(f'{k:.3g}' for k in kept)} | "
            f"{empty} |"
        )
    return "\n".join(lines) + "\n"


def plot(config, records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rankings = list(config.rankings)
    fig, axes = plt.subplots(
        1, len(rankings), figsize=(4 * len(rankings), 4), sharey=True
    )
    for ax, ranking in zip(np.atleast_1d(axes), rankings, strict=True):
        for allocation in config.allocations:
            pts = sorted(
                (r["sparsity"], 100 * r["final_test_accuracy"])
                for r in records
                if r["ranking"] == ranking and r["allocation"] == allocation
            )
            if not pts:
                continue
            xs = sorted({p[0] for p in pts})
            ys = [np.mean([a for s, a in pts if s == x]) for x in xs]
            es = [np.std([a for s, a in pts if s == x]) for x in xs]
            ax.errorbar([1 - x for x in xs], ys, yerr=es, marker="o", label=allocation)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_title(f"ranking: {ranking}")
        ax.set_xlabel("density (log)")
    np.atleast_1d(axes)[0].set_ylabel("final test accuracy %")
    np.atleast_1d(axes)[0].legend(fontsize="small", title="allocation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    args, config = common.label_study_args(
        __doc__.splitlines()[0], DEFAULT_CONFIG, None, argv
    )
    workdir = args.workdir or os.path.join(
        DEFAULT_WORKDIR, *(["quick"] if args.quick else [])
    )
    common.prepare_workdir(workdir, config)
    host_train = data.load_dataset(config.dataset, config.train_split)
    test = data.load_dataset(config.dataset, config.test_split)
    recipe = common.make_recipe(config, len(host_train["label"]))
    learners, report = common.fit_learners(config)
    same = (config.model, config.dataset) == tuple(
        checkpoint.load_metadata(config.source)[k] for k in ("model", "dataset")
    )
    if "irp" in config.allocations and not same:
        raise ValueError(
            "the IRP-oracle allocation needs the source run's model and dataset; "
            "drop 'irp' from config.allocations for a transfer target."
        )
    with open(os.path.join(workdir, "scorers.json"), "w") as f:
        json.dump(report, f, indent=2)
    path = os.path.join(workdir, "runs.jsonl")
    done = {_key(r): r for r in common.read_jsonl(path)}
    plan = [p for p in planned(config) if p not in done]
    datasets = (train.to_device(host_train), train.to_device(test))
    bar = tqdm(total=len(plan), unit="run")

    def on_done(record):
        common.append_jsonl(path, record)
        done[_key(record)] = record
        bar.update()

    for seed in config.seeds:
        todo = [p[:3] for p in plan if p[3] == seed]
        if todo:
            run_seed(
                seed, todo, learners, recipe, host_train, datasets, config, on_done
            )
    bar.close()
    records = [done[p] for p in planned(config) if p in done]
    text = table(config, records, report)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(text)
    plot(config, records, os.path.join(workdir, "accuracy.png"))
    print(text)


if __name__ == "__main__":
    main()
