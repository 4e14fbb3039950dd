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

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import allocation as al
from autosparse_jax import (
    checkpoint,
    criteria,
    data,
    evaluation,
    features,
    irp,
    masks,
    models,
    train,
)
from autosparse_jax import scorer as scorer_lib
from experiments import common

DEFAULT_CONFIG = "experiments/configs/allocation_fmnist_lenet300.py"
DEFAULT_WORKDIR = "experiments/results/allocation_fmnist_lenet300"
PAPER = features.FeatureConfig()
WITHIN = features.FeatureConfig(normalization="layer")


# ------------------------------------------------------------- the learners


def _features(labels: irp.IRPLabels, model, batches, fc) -> jax.Array:
    apply_fn = models.make_apply_fn(model, labels.init_model_state)
    return common.initial_features(labels.init_params, batches, apply_fn, fc)


def fit_learners(config) -> dict:
    """The paper and within-layer scorers, the allocation model, their reports.

    The scorers are evaluated on ``config.held_out`` (another IRP run's
    labels) when the config names one. Everything is computed on the source
    run's own network and dataset (from its labels' metadata), whatever the
    target of the study.
    """
    source = irp.load_labels(config.source)
    held_out = irp.load_labels(config.held_out) if config.get("held_out") else None
    meta = source.metadata
    info = data.DATASETS[meta["dataset"]]
    model = models.get_model(meta["model"], num_classes=info.num_classes)
    host_train = data.load_dataset(meta["dataset"], meta.get("train_split", "train"))
    key = jax.random.key(config.scorer_seed)
    batches = common.score_batches(
        key,
        host_train,
        meta["dataset"],
        config.num_score_batches,
        config.score_batch_size,
    )
    layers = features.layer_ids(source.init_params)
    y = np.asarray(features.stack_leaves(source.counts)) / source.metadata["num_rounds"]
    fit, val = evaluation.split_weights(
        config.scorer_seed, len(y), config.validation_fraction
    )
    scorer_config = dataclasses.replace(
        scorer_lib.PRESETS["default"], num_steps=config.scorer_num_steps
    )
    out, report = {}, {}
    for name, fc, target in (
        ("paper", PAPER, y),
        ("within", WITHIN, scorer_lib.within_layer_targets(y, layers)),
    ):
        x = _features(source, model, batches, fc)
        out[name], _ = scorer_lib.train_scorer(
            key, x[fit], target[fit], config=scorer_config,
            feature_config=fc, validation=(x[val], target[val]), progress=False,
        )  # fmt: skip
        if held_out is None:
            continue
        held_counts = np.asarray(features.stack_leaves(held_out.counts))
        held_layers = features.layer_ids(held_out.init_params)
        pred = scorer_lib.predict_flat(
            out[name], _features(held_out, model, batches, fc)
        )
        within = evaluation.within_layer_spearman(
            np.asarray(pred), held_counts, held_layers
        )
        report[name] = {
            "spearman": evaluation.spearman(np.asarray(pred), held_counts),
            "within_layer_spearman": within["mean"],
            "per_layer": {str(k): v for k, v in within["per_layer"].items()},
        }
    apply_fn = models.make_apply_fn(model, source.init_model_state)
    phi = al.layer_features(
        source.init_params, apply_fn=apply_fn, input_shape=info.input_shape
    )
    out["allocation"] = al.fit_allocation(
        phi,
        al.layer_densities(source.masks[1:]),
        al.layer_sizes(source.init_params),
        metadata=(
            ("model", source.metadata["model"]),
            ("seed", source.metadata["seed"]),
        ),
    )
    out["oracle"] = (
        source.masks[1:],
        [h["sparsity"] for h in source.metadata["history"]],
    )
    report["allocation_model"] = dataclasses.asdict(out["allocation"])
    return out, report


# ---------------------------------------------------------------- the masks


def ranking_scores(ranking, allocation, learners, key, params, batches, apply_fn):
    """The within-layer ranking's scores for one network."""
    if ranking == "autos":
        scorer = learners["paper" if allocation == "global" else "within"]
        fc = scorer.feature_config
        feats = features.compute_features(
            key, params, batches, apply_fn=apply_fn, **dataclasses.asdict(fc)
        )
        return scorer_lib.predict_scores(scorer, feats)
    return criteria.compute_scores(
        key, criteria.CRITERIA[ranking], params, batches, apply_fn=apply_fn
    )


def layer_counts(
    allocation, sparsity, scores, snip_scores, learners, params, phi, config
):
    """Per-layer kept counts, or ``None`` where the allocation is undefined.

    Every allocation but the IRP oracle is ``allocation.layer_counts``.
    """
    if allocation != "irp":
        return al.layer_counts(
            scores,
            sparsity,
            allocation="scores" if allocation == "snip" else allocation,
            phi=phi,
            model=learners["allocation"],
            reference_scores=snip_scores,
        )
    sizes = al.layer_sizes(params)
    round_masks, round_sparsities = learners["oracle"]
    r = evaluation.irp_round_at(round_sparsities, sparsity)
    if abs(round_sparsities[r] - sparsity) > config.oracle_tolerance:
        return None
    kept = al.layer_densities([round_masks[r]])[0] * sizes
    total = masks._num_keep(sparsity, int(sizes.sum()))
    return al.integer_counts(jnp.asarray(kept * total / kept.sum()), sizes, total)


# -------------------------------------------------------------------- runs


def run_seed(seed, todo, learners, recipe, host_train, datasets, config, on_done):
    t = common.make_target(seed, recipe, host_train, config)
    params, apply_fn = t.params, t.apply_fn
    cache = {}

    def scores(ranking, allocation):
        name = (
            "autos-global" if ranking == "autos" and allocation == "global" else ranking
        )
        if name not in cache:
            cache[name] = ranking_scores(
                ranking, allocation, learners, t.prune_key, params, t.batches, apply_fn
            )
        return cache[name]

    for allocation, ranking, sparsity in todo:
        record = {"allocation": allocation, "ranking": ranking, "sparsity": sparsity}
        record["seed"] = seed
        if allocation == "dense":
            mask = masks.dense_mask(params)
        else:
            s = scores(ranking, allocation)
            counts = layer_counts(
                allocation, sparsity, s, scores("snip", allocation), learners,
                params, t.phi, config,
            )  # fmt: skip
            if counts is None:
                continue
            mask = al.mask_from_counts(s, counts)
        tic = time.perf_counter()
        _, history = common.train_masked(
            recipe,
            t.data_key,
            params,
            t.model_state,
            mask,
            *datasets,
            progress=False,
        )
        record.update(
            common.summarize_training(mask, history, time.perf_counter() - tic)
        )
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
    learners, report = fit_learners(config)
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
