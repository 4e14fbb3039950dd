"""The fair benchmark: every pruning method x sparsity x seed on one target.

Command (see ``experiments/configs/benchmark_fmnist_lenet300.py``; resumable):

    .venv/bin/python -m experiments.run_benchmark \\
        [--config experiments/configs/benchmark_fmnist_lenet300.py] \\
        [--workdir experiments/results/benchmark_fmnist_lenet300] [--quick]

For a target (model, dataset), every seed's network is initialised once and
every method prunes that same network; every mask is then trained with the
config's one recipe and the seed's one data key (only the mask differs).
Methods: dense; random, magnitude, SNIP, GraSP, SynFlow (100 rounds), global
scope; AutoS with the paper's single global threshold (``autos_global``) and
with the learned layer allocation and the within-layer scorer
(``autos_learned``), both trained on ONE labelled IRP run (``config.source``)
and never on the target; IRP's own mask at the same density: an IRP run of
the target seed (the recipe per round, checkpointed, resumable) whose round
nearest each sparsity is rewound to the seed's initialisation and retrained
like every other mask (its measured sparsity is in the CSV). Sanity checks on
each AutoS mask: ``*_shuffled`` permutes the mask within every layer (random
pruning with AutoS's per-layer densities) and ``*_reinit`` keeps the mask but
trains freshly initialised weights.

Seed ``s`` splits ``jax.random.key(s)`` into init, score and data keys as
``run_pai_baselines`` and ``run_allocation`` do, so rows shared with those
studies repeat their numbers.

Writes to the work directory: ``runs.csv`` (one row per trained mask, the
resume record: rows already there are not repeated), ``histories.jsonl``
(per-epoch metrics), ``irp_seed<S>.jsonl`` (the IRP rounds), ``scorers.json``,
``table.md`` (mean ± sample std, final epoch; best epoch, selected on the
test set, reported separately), ``accuracy.png`` (accuracy against density,
log scale, error bars) and ``layer_density.png`` (per-layer density per
method at ``config.density_plot_sparsity``).
"""

import csv
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autosparse_jax import allocation as al
from autosparse_jax import criteria, data, evaluation, irp, masks, models, train
from experiments import common

DEFAULT_CONFIG = "experiments/configs/benchmark_fmnist_lenet300.py"
DENSE = "dense"
BASELINES = ("random", "magnitude", "snip", "grasp", "synflow")
AUTOS = ("autos_global", "autos_learned")
IRP = "irp"
METHODS = (*BASELINES, *AUTOS, IRP)
SANITY_CHECKS = ("shuffled", "reinit")
FIELDS = (
    "method",
    "sparsity",
    "seed",
    "measured_sparsity",
    "final_test_accuracy",
    "best_test_accuracy_selected_on_test",
    "best_epoch",
    "prune_s",
    "train_s",
)
DENSITY_PREFIX = "density:"


# ------------------------------------------------------------------ the plan


def check_config(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the fix, on methods or sparsities the script lacks."""
    sanity = tuple(f"{a}_{c}" for a in AUTOS for c in SANITY_CHECKS)
    unknown = sorted(set(config.methods) - set(METHODS) - set(sanity))
    if unknown:
        raise ValueError(
            f"Unknown methods {unknown} in config.methods; choose from "
            f"{[*METHODS, *sanity]}."
        )
    bad = [s for s in config.sparsities if not 0.0 < s < 1.0]
    if bad:
        raise ValueError(
            f"config.sparsities must lie in (0, 1) (fractions of prunable weights "
            f"removed), got {bad}; dense is always run once per seed."
        )
    if IRP in config.methods and max(config.sparsities) > config.irp.final_sparsity:
        raise ValueError(
            f"IRP ends at {config.irp.final_sparsity} but the grid reaches "
            f"{max(config.sparsities)}; raise config.irp.final_sparsity "
            "(and num_rounds) or drop 'irp' from config.methods."
        )


def planned(config: ml_collections.ConfigDict) -> list[tuple[str, float, int]]:
    """``(method, sparsity, seed)`` of every run, seed-major, dense first."""
    runs = []
    for seed in config.seeds:
        runs.append((DENSE, 0.0, seed))
        for s in config.sparsities:
            for m in config.methods:
                if is_sanity(m) and s < config.sanity_min_sparsity:
                    continue  # sanity checks only where masks matter
                runs.append((m, s, seed))
    return runs


def is_sanity(method: str) -> bool:
    return method.endswith(SANITY_CHECKS)


def run_key(method: str, sparsity: float, seed: int) -> tuple[str, float, int]:
    return str(method), round(float(sparsity), 6), int(seed)


# ---------------------------------------------------------------- CSV store


def read_csv(path: str) -> list[dict[str, Any]]:
    """Complete rows of ``runs.csv`` (a row cut short by a killed run is dropped)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if None not in r and None not in r.values()]
    return [{k: _parse(k, v) for k, v in row.items()} for row in rows]


def _parse(key: str, value: str) -> Any:
    if key == "method":
        return value
    if key in ("seed", "best_epoch"):
        return int(value)
    return float(value)


def append_csv(path: str, row: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Appends one row, writing the header first for a new file.

    A partial last line left by a killed run is ended first, so it is the
    only row lost.
    """
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    if new:
        writer.writeheader()
    writer.writerow({k: row[k] for k in fields})
    common.append_text(path, buf.getvalue())


def csv_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The CSV row of one run record (per-layer densities as columns)."""
    row = {k: record[k] for k in FIELDS}
    for layer, s in record["sparsity_by_layer"].items():
        row[DENSITY_PREFIX + layer] = 1.0 - s
    return row


# ----------------------------------------------------------------- the masks


def baseline_mask(name: str, sparsity: float, t: common.Target) -> Any:
    rounds = criteria.DEFAULT_ROUNDS.get(name, 1)
    return common.prune_at_init(
        common.criterion_key(t.prune_key, rounds),
        criteria.CRITERIA[name],
        t.params,
        t.batches,
        apply_fn=t.apply_fn,
        sparsity=jnp.asarray(sparsity, jnp.float32),
        allocation=common.SCOPES["global"],
        num_rounds=rounds,
        schedule="geometric",
    )


def autos_mask(name: str, sparsity: float, t: common.Target, autos) -> Any:
    """AutoS's mask: the paper's scorer under one global threshold (never an
    empty layer), or the within-layer scorer under the learned allocation."""
    criterion, allocation = {
        "autos_global": (autos.paper_criterion, al.global_topk()),
        "autos_learned": (autos.criterion, autos.allocation),
    }[name]
    return criteria.prune_at_init(
        t.prune_key, criterion, t.params, t.batches, apply_fn=t.apply_fn,
        sparsity=sparsity, allocation=allocation,
    )  # fmt: skip


def run_irp(t: common.Target, recipe, datasets, config, workdir: str) -> irp.IRPResult:
    """IRP of the target seed (checkpointed; a finished run is just reloaded)."""
    path = os.path.join(workdir, f"irp_seed{t.seed}.jsonl")
    return irp.irp(
        t.data_key,
        t.params,
        datasets[0],
        model=recipe.trained_model,
        optimizer=recipe.optimizer,
        config=irp.IRPConfig(**config.irp),
        eval_data=datasets[1],
        model_state=t.model_state,
        preprocess=data.preprocess_config(config.dataset),
        checkpoint_dir=os.path.abspath(
            os.path.join(workdir, "checkpoints", f"irp_seed{t.seed}")
        ),
        callback=lambda r, row: common.append_jsonl(path, {"seed": t.seed, **row}),
        progress=None,
    )


def irp_mask(result: irp.IRPResult, sparsity: float) -> Any:
    """IRP's mask after the round whose sparsity is nearest ``sparsity``."""
    rounds = [h["sparsity"] for h in result.history]
    return result.masks[1 + evaluation.irp_round_at(rounds, sparsity)]


def method_mask(method, sparsity, t: common.Target, ctx) -> tuple[Any, Any]:
    """``(mask, params to train)`` of one method at one sparsity."""
    base, _, check = method.rpartition("_")
    if method == DENSE:
        return masks.dense_mask(t.params), t.params
    if method in BASELINES:
        return baseline_mask(method, sparsity, t), t.params
    if method in AUTOS:
        return autos_mask(method, sparsity, t, ctx["learners"]["autos"]), t.params
    if method == IRP:
        if IRP not in ctx["cache"]:
            ctx["cache"][IRP] = ctx["irp"](t)
        return irp_mask(ctx["cache"][IRP], sparsity), t.params
    mask, params = method_mask(base, sparsity, t, ctx)
    check_key = jax.random.fold_in(t.prune_key, int(1e6 * sparsity))
    if check == "shuffled":
        return criteria.shuffle_within_layers(check_key, mask), params
    recipe = ctx["recipe"]

    def init_fn(k):
        return models.init_params(k, recipe.model, recipe.input_shape)[0]

    return mask, criteria.reinitialize(check_key, params, mask, init_fn=init_fn)


# ---------------------------------------------------------------------- runs


def run_seed(seed, todo, ctx, on_done: Callable[[dict], None]) -> None:
    recipe, config = ctx["recipe"], ctx["config"]
    t = common.make_target(seed, recipe, ctx["host_train"], config)
    ctx["cache"] = {}
    ctx["irp"] = lambda target: run_irp(
        target, recipe, ctx["datasets"], config, ctx["workdir"]
    )
    for method, sparsity in todo:
        tic = time.perf_counter()
        mask, params = method_mask(method, sparsity, t, ctx)
        mask = jax.block_until_ready(mask)
        prune_s = time.perf_counter() - tic
        tic = time.perf_counter()
        _, history = common.train_masked(
            recipe, t.data_key, params, t.model_state, mask, *ctx["datasets"],
            progress=False,
        )  # fmt: skip
        record = {"method": method, "sparsity": sparsity, "seed": seed}
        record["prune_s"] = prune_s
        record.update(
            common.summarize_training(mask, history, time.perf_counter() - tic)
        )
        on_done(record)


# ------------------------------------------------------------------- summary


def _groups(rows: list[dict]) -> dict[tuple[str, float], list[dict]]:
    out: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        out.setdefault((r["method"], round(r["sparsity"], 6)), []).append(r)
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def summarize(rows: list[dict]) -> dict[tuple[str, float], dict[str, Any]]:
    """Mean ± sample std (over seeds) per (method, sparsity), in percent."""
    out = {}
    for key, runs in _groups(rows).items():
        final = _mean_std([100 * r["final_test_accuracy"] for r in runs])
        best = _mean_std([100 * r["best_test_accuracy_selected_on_test"] for r in runs])
        layers = [k for k in runs[0] if k.startswith(DENSITY_PREFIX)]
        out[key] = {
            "final": final,
            "best": best,
            "n": len(runs),
            "measured": float(np.mean([r["measured_sparsity"] for r in runs])),
            "density": {k: float(np.mean([r[k] for r in runs])) for k in layers},
            "empty_layers": sum(r[k] == 0.0 for r in runs for k in layers),
        }
    return out


def _method_order(config, rows) -> list[str]:
    present = {r["method"] for r in rows}
    return [m for m in (DENSE, *config.methods) if m in present]


def table(config, rows: list[dict], report: Mapping[str, Any], wall_s: float) -> str:
    stats = summarize(rows)
    sparsities = sorted({k[1] for k in stats if k[0] != DENSE})
    methods = _method_order(config, rows)
    tc = config.train
    lines = [
        f"# Benchmark: {config.model} on {config.dataset}",
        "",
        f"Seeds {tuple(config.seeds)}; every mask trained with one recipe "
        f"({tc.num_epochs} epochs, SGD momentum {tc.momentum}, lr "
        f"{tc.learning_rate} {tc.schedule}, batch {tc.batch_size}, weight decay "
        f"{tc.weight_decay}) from the seed's initialisation and data order. "
        f"AutoS (scorers and allocation model) trained on `{config.source}` only. "
        + (
            f"IRP: {config.irp.num_rounds} rounds of the recipe on each seed, to "
            f"{config.irp.final_sparsity}, its nearest round retrained. "
            if IRP in config.methods
            else ""
        )
        + f"Machine: {report.get('device', '?')}; wall time of the runs so far "
        f"{wall_s / 60:.1f} min.",
        "",
        "## Final-epoch test accuracy % (mean ± sample std over seeds)",
        "",
    ]
    lines += _grid(stats, methods, sparsities, "final")
    lines += [
        "",
        "## Best-epoch test accuracy % (the epoch is selected on the test set: "
        "optimistic, for reference only)",
        "",
    ]
    lines += _grid(stats, methods, sparsities, "best")
    if IRP in methods:
        measured = [
            f"{s:g}: {100 * stats[(IRP, s)]['measured']:.2f}"
            for s in sparsities
            if (IRP, s) in stats
        ]
        lines += ["", "IRP's measured sparsity % per target: " + ", ".join(measured)]
    dense_layers = next(iter(stats.values()))["density"]
    names = " / ".join(
        k.removeprefix(DENSITY_PREFIX).removesuffix("/kernel") for k in dense_layers
    )
    lines += [
        "",
        f"## Kept % per layer ({names}); runs with an empty layer",
        "",
        "| method | " + " | ".join(f"{s:g}" for s in sparsities) + " |",
        "|---|" + "---|" * len(sparsities),
    ]
    for m in methods:
        if m == DENSE:
            continue
        cells = []
        for s in sparsities:
            st = stats.get((m, s))
            if st is None:
                cells.append("-")
                continue
            kept = " / ".join(f"{100 * v:.3g}" for v in st["density"].values())
            flag = f" (**{st['empty_layers']} empty**)" if st["empty_layers"] else ""
            cells.append(kept + flag)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _grid(stats, methods, sparsities, what: str) -> list[str]:
    lines = [
        "| method | " + " | ".join(f"{s:g}" for s in sparsities) + " |",
        "|---|" + "---|" * len(sparsities),
    ]
    for m in methods:
        if m == DENSE:
            st = stats[(DENSE, 0.0)]
            mean, std = st[what]
            lines.append(f"| dense (n={st['n']}) | {mean:.2f} ± {std:.2f} |")
            continue
        cells = []
        for s in sparsities:
            st = stats.get((m, s))
            cells.append("-" if st is None else "{:.2f} ± {:.2f}".format(*st[what]))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def plot(config, rows: list[dict], workdir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(rows)
    methods = [m for m in _method_order(config, rows) if m != DENSE]
    colors = dict(zip(methods, plt.cm.tab20.colors, strict=False))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m in methods:
        pts = sorted((s, st) for (mm, s), st in stats.items() if mm == m)
        dens = [1 - st["measured"] for _, st in pts]
        style = "--" if is_sanity(m) else "-"
        ax.errorbar(
            dens, [st["final"][0] for _, st in pts],
            yerr=[st["final"][1] for _, st in pts], marker="o", ms=3,
            linestyle=style, capsize=2, label=m, color=colors[m],
        )  # fmt: skip
    if (DENSE, 0.0) in stats:
        ax.axhline(stats[(DENSE, 0.0)]["final"][0], color="k", lw=0.8, label="dense")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (fraction of prunable weights kept, log scale)")
    ax.set_ylabel("final-epoch test accuracy %")
    ax.set_title(f"{config.model} on {config.dataset}, seeds {tuple(config.seeds)}")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "accuracy.png"), dpi=120)
    plt.close(fig)

    s = round(config.density_plot_sparsity, 6)
    # Sanity checks keep their AutoS mask's per-layer densities: not repeated.
    at = {m: stats[(m, s)] for m in methods if (m, s) in stats and not is_sanity(m)}
    if not at:
        return
    layers = list(next(iter(at.values()))["density"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(at)
    floor = 1e-6  # an empty layer is drawn at the floor and marked "x"
    for i, (m, st) in enumerate(at.items()):
        xs = np.arange(len(layers)) + i * width
        ys = [max(st["density"][k], floor) for k in layers]
        ax.bar(xs, ys, width, label=m, color=colors[m])
        empty = [x for x, k in zip(xs, layers, strict=True) if st["density"][k] == 0]
        ax.plot(empty, [floor] * len(empty), "kx")
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels(
        [k.removeprefix(DENSITY_PREFIX).removesuffix("/kernel") for k in layers]
    )
    ax.set_yscale("log")
    ax.set_ylabel("density kept (log)")
    ax.set_title(
        f"per-layer density at {100 * s:g}% sparsity (mean over seeds; x: empty)"
    )
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "layer_density.png"), dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def default_workdir(config_path: str, quick: bool) -> str:
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("experiments/results", name, *(["quick"] if quick else []))


def run_study(config, workdir: str, *, learners=None, report=None) -> str:
    """Runs (or resumes) every planned run and writes the outputs; the table."""
    from tqdm.auto import tqdm

    check_config(config)
    common.prepare_workdir(workdir, config)
    host_train = data.load_dataset(config.dataset, config.train_split)
    test = data.load_dataset(config.dataset, config.test_split)
    recipe = common.make_recipe(config, len(host_train["label"]))
    if learners is None:
        tic = time.perf_counter()
        learners, report = common.fit_learners(config)
        report["fit_learners_s"] = time.perf_counter() - tic
    device = f"{jax.devices()[0].device_kind} ({os.cpu_count()} host cores)"
    report = {**(report or {}), "device": device}
    with open(os.path.join(workdir, "scorers.json"), "w") as f:
        json.dump(report, f, indent=2)
    path = os.path.join(workdir, "runs.csv")
    done = {run_key(r["method"], r["sparsity"], r["seed"]) for r in read_csv(path)}
    plan = [p for p in planned(config) if run_key(*p) not in done]
    ctx = {
        "config": config,
        "recipe": recipe,
        "learners": learners,
        "host_train": host_train,
        "datasets": (train.to_device(host_train), train.to_device(test)),
        "workdir": workdir,
    }
    bar = tqdm(total=len(plan), unit="run", desc=os.path.basename(workdir))
    fields: list[str] = []
    tic = time.perf_counter()

    def on_done(record):
        row = csv_row(record)
        if not fields:
            existing = read_csv(path)
            fields.extend(existing[0] if existing else row)
        append_csv(path, row, fields)
        common.append_jsonl(
            os.path.join(workdir, "histories.jsonl"),
            {k: record[k] for k in ("method", "sparsity", "seed", "history")},
        )
        bar.set_postfix_str(
            f"{record['method']} {record['sparsity']:g} seed {record['seed']}: "
            f"{100 * record['final_test_accuracy']:.2f}%",
            refresh=False,
        )
        bar.update()

    for seed in config.seeds:
        todo = [p[:2] for p in plan if p[2] == seed]
        if todo:
            run_seed(seed, todo, ctx, on_done)
    bar.close()
    timing_path = os.path.join(workdir, "invocations.jsonl")
    if plan:
        common.append_jsonl(
            timing_path,
            {"device": device, "runs": len(plan), "wall_s": time.perf_counter() - tic},
        )
    wall = sum(r["wall_s"] for r in common.read_jsonl(timing_path))
    rows = read_csv(path)
    text = table(config, rows, report, wall)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(text)
    plot(config, rows, workdir)
    return text


def main(argv: list[str] | None = None) -> None:
    args, config = common.label_study_args(
        __doc__.splitlines()[0], DEFAULT_CONFIG, None, argv
    )
    workdir = args.workdir or default_workdir(args.config, args.quick)
    print(run_study(config, workdir))
    print(f"Wrote {workdir}/runs.csv, table.md, accuracy.png, layer_density.png")


if __name__ == "__main__":
    main()
