"""Pruning-at-initialisation baselines: every criterion x sparsity x seed, one recipe.

Command (from the repository root):

    .venv/bin/python -m experiments.run_pai_baselines \\
        [--config experiments/configs/pai_fmnist_lenet300.py] \\
        [--workdir experiments/results/pai_fmnist_lenet300] [--quick]

For each seed ``s``: ``key = jax.random.key(s)`` is split once into init, score
and data keys; every method at that seed trains from the same initial params
with the same data key (only the mask differs), and dense is trained once.
Each criterion is scored by one jitted ``criteria.prune_at_init`` (sparsity
traced, so one compilation per criterion), called twice per run: the first call
is timed as compile + run (compile only the first time in a process), the
second as run. Every finished run is appended to ``<workdir>/runs.jsonl`` and
skipped on restart. At the end the script prints one table and writes
``table.md`` and ``accuracy_vs_sparsity.png`` to the work directory.
"""

import argparse
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autosparse_jax import criteria, data, masks, models, train
from experiments import common

DEFAULT_CONFIG = "experiments/configs/pai_fmnist_lenet300.py"
DEFAULT_WORKDIR = "experiments/results/pai_fmnist_lenet300"
DENSE = "dense"


# ------------------------------------------------------------ config, workdir


def load_config(path: str, quick: bool) -> ml_collections.ConfigDict:
    """The config file's ``get_config()``, shrunk by its ``quick`` section."""
    config = common.load_config(path)
    if quick:
        config.pai.seeds = config.quick.seeds
        config.train.num_epochs = config.quick.num_epochs
        config.pai.train_split = config.quick.train_split
    return config


def run_id(method: str, sparsity: float, seed: int) -> tuple[str, float, int]:
    return method, round(float(sparsity), 6), int(seed)


def planned_runs(config: ml_collections.ConfigDict) -> list[tuple[str, float, int]]:
    """Dense once per seed, then every criterion at every sparsity."""
    return [
        run_id(method, sparsity, seed)
        for seed in config.pai.seeds
        for method, sparsity in [(DENSE, 0.0)]
        + [(c, s) for c in config.pai.criteria for s in config.pai.sparsities]
    ]


def read_runs(path: str) -> dict[tuple[str, float, int], dict[str, Any]]:
    """Finished runs in ``runs.jsonl``, keyed by ``(method, sparsity, seed)``."""
    records = common.read_jsonl(path)
    return {run_id(r["method"], r["sparsity"], r["seed"]): r for r in records}


# ---------------------------------------------------------- scoring, training


def device_name() -> str:
    """The accelerator kind and host core count, recorded with every run."""
    return f"{jax.devices()[0].device_kind} ({os.cpu_count()} host cores)"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` (blocked until ready) and its wall time in seconds."""
    tic = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - tic


def prune(key, name, params, batch, apply_fn, sparsity, config) -> tuple[Any, dict]:
    """The criterion's mask and its timings (first call, then a second call)."""

    def call():
        return common.prune_at_init(
            common.criterion_key(key, config.pai.rounds[name]),
            criteria.CRITERIA[name],
            params,
            batch,
            apply_fn=apply_fn,
            sparsity=jnp.asarray(sparsity, jnp.float32),
            allocation=common.SCOPES[config.pai.scope],
            num_rounds=config.pai.rounds[name],
            schedule=config.pai.schedule,
        )

    _, first = timed(call)
    mask, second = timed(call)
    return mask, {"score_first_call_s": first, "score_run_s": second}


def train_run(recipe, data_key, params, model_state, mask, datasets) -> dict:
    """Trains under ``mask`` with the shared recipe; accuracies and sparsities."""
    tic = time.perf_counter()
    _, history = common.train_masked(
        recipe, data_key, params, model_state, mask, *datasets, progress=False
    )
    return common.summarize_training(mask, history, time.perf_counter() - tic)


def run_seed(seed, todo, recipe, apply_fn, host_train, datasets, config, on_done):
    """Runs the ``(method, sparsity)`` pairs in ``todo`` for one seed."""
    key = jax.random.key(seed)
    init_key, score_key, data_key = jax.random.split(key, 3)
    del key
    batch_key, prune_key = jax.random.split(score_key)
    params, model_state = models.init_params(init_key, recipe.model, recipe.input_shape)
    batch = common.score_batches(
        batch_key,
        host_train,
        config.dataset,
        config.pai.num_score_batches,
        config.pai.score_batch_size,
    )
    for method, sparsity in todo:
        record = {"method": method, "sparsity": sparsity, "seed": seed}
        record["device"] = device_name()
        if method == DENSE:
            mask = masks.dense_mask(params)
        else:
            record["num_rounds"] = config.pai.rounds[method]
            mask, times = prune(
                prune_key, method, params, batch, apply_fn, sparsity, config
            )
            record.update(times)
        record.update(train_run(recipe, data_key, params, model_state, mask, datasets))
        on_done(record)


# ------------------------------------------------------------------- summary


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = np.asarray(list(values), np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _summarize_runs(runs: list[dict], criterion_runs: list[dict]) -> dict[str, Any]:
    """One table row from the seeds of one (method, sparsity)."""
    layers = list(runs[0]["sparsity_by_layer"])
    by_layer = {n: [r["sparsity_by_layer"][n] for r in runs] for n in layers}
    pruned = "score_run_s" in runs[0]
    return {
        "method": runs[0]["method"],
        "sparsity": runs[0]["sparsity"],
        "num_seeds": len(runs),
        "rounds": runs[0].get("num_rounds", 0),
        "final": _mean_std(100 * r["final_test_accuracy"] for r in runs),
        "best": _mean_std(100 * r["best_test_accuracy_selected_on_test"] for r in runs),
        "kept": {n: 100 * (1 - float(np.mean(v))) for n, v in by_layer.items()},
        "collapsed": {n: sum(s == 1.0 for s in v) for n, v in by_layer.items()},
        # The first call of a criterion in a process compiles; later first calls
        # hit the cache, so the largest first-minus-second difference is compile.
        "compile_s": max(
            r["score_first_call_s"] - r["score_run_s"] for r in criterion_runs
        )
        if pruned
        else None,
        "run_s": _mean_std(r["score_run_s"] for r in runs) if pruned else None,
        "train_s": float(np.mean([r["train_s"] for r in runs])),
    }


def summarize(records: list[dict], config) -> list[dict[str, Any]]:
    """Rows in table order: dense, then every criterion at each sparsity."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in records:
        groups.setdefault(run_id(r["method"], r["sparsity"], 0)[:2], []).append(r)
    order = [(DENSE, 0.0)] + [
        run_id(c, s, 0)[:2] for s in config.pai.sparsities for c in config.pai.criteria
    ]
    return [
        _summarize_runs(groups[k], [r for r in records if r["method"] == k[0]])
        for k in order
        if k in groups
    ]


def _cells(row: dict[str, Any]) -> list[str]:
    collapsed = [
        f"{n.removesuffix('/kernel')} ({c}/{row['num_seeds']} seeds)"
        for n, c in row["collapsed"].items()
        if c
    ]
    pruned = row["run_s"] is not None
    return [
        f"{row['sparsity']:.2f}",
        row["method"],
        str(row["rounds"]) if pruned else "-",
        str(row["num_seeds"]),
        "{:.2f} ± {:.2f}".format(*row["final"]),
        "{:.2f} ± {:.2f}".format(*row["best"]),
        " / ".join(f"{v:.3g}" for v in row["kept"].values()),
        "collapsed: " + ", ".join(collapsed) if collapsed else "none",
        f"{row['compile_s']:.2f}" if pruned else "-",
        "{:.3f} ± {:.3f}".format(*row["run_s"]) if pruned else "-",
        f"{row['train_s']:.1f}",
    ]


def format_table(rows: list[dict[str, Any]], config, devices: set[str]) -> str:
    """The markdown table, with a header saying what every column means."""
    layers = " / ".join(n.removesuffix("/kernel") for n in rows[0]["kept"])
    header = [
        "sparsity", "method", "rounds", "seeds", "final test acc %",
        "best test acc % (selected on test)", f"kept % per layer ({layers})",
        "empty layers", "score compile s", "score run s", "train s",
    ]  # fmt: skip
    lines = [
        f"{config.model} on {config.dataset}: {config.train.num_epochs} epochs, "
        f"SGD momentum {config.train.momentum}, lr {config.train.learning_rate} "
        f"{config.train.schedule}, batch {config.train.batch_size}, seeds "
        f"{tuple(config.pai.seeds)}, {config.pai.scope} scope, scoring on "
        f"{config.pai.num_score_batches} x {config.pai.score_batch_size} images. "
        "Accuracy: mean ± sample std over seeds. Score compile: first jitted call "
        "minus second; score run: second call (both block_until_ready); "
        f"Timed on {', '.join(sorted(devices))}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], config, path: str) -> None:
    """Final accuracy vs density (log x, sparsest on the right), dense as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in config.pai.criteria:
        points = sorted(
            (1 - r["sparsity"], *r["final"]) for r in rows if r["method"] == name
        )
        if points:
            x, y, err = zip(*points, strict=True)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    for r in rows:
        if r["method"] == DENSE:
            mean, std = r["final"]
            ax.axhline(mean, color="black", linestyle="--", label="dense")
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.1)
    ax.axhline(10.0, color="gray", linestyle=":", label="chance (10 classes)")
    densities = sorted({round(1 - s, 6) for s in config.pai.sparsities})
    ax.set_xscale("log")
    ax.set_xticks(densities, labels=[f"{d:g}" for d in densities])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("density (fraction of prunable weights kept, log scale)")
    ax.set_ylabel("final-epoch test accuracy (%)")
    ax.set_title(f"{config.model} / {config.dataset}, mean ± std over seeds")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def run_missing(planned, done: dict, runs_path: str, config) -> None:
    """Trains every planned run not in ``done``; appends each to ``runs_path``."""
    from tqdm.auto import tqdm

    host_train = data.load_dataset(config.dataset, config.pai.train_split)
    test = data.load_dataset(config.dataset, config.pai.test_split)
    recipe = common.make_recipe(config, len(host_train["label"]))
    datasets = (train.to_device(host_train), train.to_device(test))
    # One apply_fn for every seed: it is a static argument of the jitted pruner,
    # and initial model state (BatchNorm statistics) does not depend on the key.
    _, model_state = models.init_params(
        jax.random.key(0), recipe.model, recipe.input_shape
    )
    apply_fn = models.make_apply_fn(recipe.model, model_state)
    bar = tqdm(total=len(planned), initial=sum(k in done for k in planned), unit="run")

    def on_done(record: dict[str, Any]) -> None:
        common.append_jsonl(runs_path, record)
        done[run_id(record["method"], record["sparsity"], record["seed"])] = record
        bar.update()
        bar.set_postfix_str(
            f"{record['method']} {record['sparsity']} seed {record['seed']}: "
            f"{100 * record['final_test_accuracy']:.2f}%"
        )

    for seed in config.pai.seeds:
        todo = [(m, s) for m, s, sd in planned if sd == seed and (m, s, sd) not in done]
        if todo:
            run_seed(
                seed, todo, recipe, apply_fn, host_train, datasets, config, on_done
            )
    bar.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument(
        "--workdir", default=None, help=f"default {DEFAULT_WORKDIR}[/quick]"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test (<1 min)")
    args = parser.parse_args(argv)

    tic = time.perf_counter()
    config = load_config(args.config, args.quick)
    workdir = args.workdir or os.path.join(
        DEFAULT_WORKDIR, *(["quick"] if args.quick else [])
    )
    common.prepare_workdir(workdir, config)
    runs_path = os.path.join(workdir, "runs.jsonl")
    done = read_runs(runs_path)
    planned = planned_runs(config)
    if any(k not in done for k in planned):
        run_missing(planned, done, runs_path, config)
    records = [done[k] for k in planned]
    rows = summarize(records, config)
    table = format_table(rows, config, {r["device"] for r in records})
    print(table)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table)
    plot(rows, config, os.path.join(workdir, "accuracy_vs_sparsity.png"))
    print(f"{len(planned)} runs in {workdir} ({time.perf_counter() - tic:.0f} s)")


if __name__ == "__main__":
    main()
