"""Tables and plots of a study's run records (the one report of every study).

A record is one trained mask: ``method``, ``sparsity``, ``seed``,
``final_test_accuracy``, ``best_test_accuracy_selected_on_test``,
``measured_sparsity``, ``sparsity_by_layer``, ``history`` and, when its loss
became non-finite, ``diverged`` (``train.divergence``). Accuracies are
reported as mean ± sample std over seeds, in percent. A diverged run never
enters a mean: each cell says how many runs diverged, and a table lists them
with the epoch and the last finite loss. The best epoch is selected on the
test set, so its table is labelled optimistic.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from autosparse_jax import train

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d", "8")


class Cell(NamedTuple):
    """The summary of one (method, sparsity) over seeds."""

    final: tuple[float, float] | None  # mean, std in %, None if all diverged
    best: tuple[float, float] | None
    n: int  # runs that trained to the end
    diverged: int
    measured: float  # mean measured sparsity
    kept: dict[str, float]  # mean kept % per layer
    empty: int  # (run, layer) pairs with nothing kept


def divergence(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record's divergence (stored, or read off its history)."""
    if "diverged" in record:
        return record["diverged"]
    return train.divergence(record.get("history", []))


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean and sample std (ddof 1; 0 for one value); ``None`` for no values."""
    if not values:
        return None
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, float], Cell]:
    """One ``Cell`` per (method, sparsity), in the records' order."""
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], round(r["sparsity"], 6)), []).append(r)
    cells = {}
    for key, runs in groups.items():
        ok = [r for r in runs if not divergence(r)]
        layers = list(runs[0]["sparsity_by_layer"])
        cells[key] = Cell(
            final=mean_std([100 * r["final_test_accuracy"] for r in ok]),
            best=mean_std([100 * r["best_test_accuracy_selected_on_test"] for r in ok]),
            n=len(ok),
            diverged=len(runs) - len(ok),
            measured=float(np.mean([r["measured_sparsity"] for r in runs])),
            kept={
                n: 100 * (1 - float(np.mean([r["sparsity_by_layer"][n] for r in runs])))
                for n in layers
            },
            empty=sum(r["sparsity_by_layer"][n] == 1.0 for r in runs for n in layers),
        )
    return cells


def _order(records, methods: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(r["method"] for r in records))
    if methods is None:
        return present
    return [m for m in methods if m in present] + [
        m for m in present if m not in methods
    ]


def _accuracy_cell(cell: Cell | None, what: str) -> str:
    if cell is None:
        return "-"
    value, runs = getattr(cell, what), cell.n + cell.diverged
    if value is None:
        return f"diverged ({cell.diverged}/{runs})"
    text = f"{value[0]:.2f}" if cell.n == 1 else "{:.2f} ± {:.2f}".format(*value)
    return text + (f" ({cell.diverged}/{runs} diverged)" if cell.diverged else "")


def _grid(cells, methods, sparsities, what: str) -> list[str]:
    head = ["method", *(f"{s:g}" if s else "0 (dense)" for s in sparsities)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for m in methods:
        row = [_accuracy_cell(cells.get((m, s)), what) for s in sparsities]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _layer_name(name: str) -> str:
    return name.removesuffix("/kernel")


def markdown(
    records: Sequence[Mapping[str, Any]],
    *,
    title: str,
    header: str = "",
    methods: Sequence[str] | None = None,
) -> str:
    """The study's ``table.md``: final and best-epoch grids, kept % per layer,
    diverged runs, measured sparsity where it differs from the target, time."""
    if not records:
        return f"# {title}\n\nNo finished runs yet.\n"
    cells = summarize(records)
    order = _order(records, methods)
    sparsities = sorted({s for _, s in cells})
    lines = [f"# {title}", ""] + ([header, ""] if header else [])
    lines += ["## Final-epoch test accuracy % (mean ± sample std over seeds)", ""]
    lines += _grid(cells, order, sparsities, "final")
    lines += [
        "",
        "## Best-epoch test accuracy % (the epoch is selected on the test set: "
        "optimistic, for reference only)",
        "",
    ]
    lines += _grid(cells, order, sparsities, "best")
    layers = list(records[0]["sparsity_by_layer"])
    pruned = [s for s in sparsities if s > 0]
    lines += [
        "",
        f"## Kept % per layer ({' / '.join(map(_layer_name, layers))}), "
        "mean over seeds; **n empty**: runs x layers with nothing kept",
        "",
        "| method | " + " | ".join(f"{s:g}" for s in pruned) + " |",
        "|---" * (len(pruned) + 1) + "|",
    ]
    for m in order:
        row = []
        for s in pruned:
            cell = cells.get((m, s))
            if cell is None:
                row.append("-")
                continue
            kept = " / ".join(f"{v:.3g}" for v in cell.kept.values())
            row.append(kept + (f" (**{cell.empty} empty**)" if cell.empty else ""))
        if any(c != "-" for c in row):
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    off = [
        f"{m} at {s:g}: {100 * c.measured:.2f} %"
        for (m, s), c in cells.items()
        if s and abs(c.measured - s) > 1e-3
    ]
    if off:
        lines += ["", "Measured sparsity differs from the target: " + "; ".join(off)]
    diverged = [r for r in records if divergence(r)]
    if diverged:
        lines += [
            "",
            "## Diverged runs (loss became non-finite; training stopped; not in "
            "any mean above)",
            "",
            "| method | sparsity | seed | epoch | last finite train loss |",
            "|---|---|---|---|---|",
        ]
        for r in diverged:
            d = divergence(r)
            loss = d["last_finite_loss"]
            lines.append(
                f"| {r['method']} | {r['sparsity']:g} | {r['seed']} | {d['epoch']} "
                f"| {'-' if loss is None else f'{loss:.4f}'} |"
            )
    timed = [r for r in records if "train_s" in r]
    if timed:
        lines += ["", "## Seconds per run (mean): prune / train", ""]
        lines += ["| method | prune s | train s |", "|---|---|---|"]
        for m in order:
            runs = [r for r in timed if r["method"] == m]
            if runs:
                prune = np.mean([r.get("prune_s", 0.0) for r in runs])
                fit = np.mean([r["train_s"] for r in runs])
                lines.append(f"| {m} | {prune:.2f} | {fit:.1f} |")
    return "\n".join(lines) + "\n"


def recipe_line(
    config, learned: Mapping[str, Any] | None, records: Sequence[Mapping[str, Any]]
) -> str:
    """The paragraph saying what every run shared (recipe, seeds, learners),
    and the time the logged ``records`` took (pruning + training, summed)."""
    tc = config.train
    text = (
        f"Seeds {tuple(config.seeds)}; every mask trained with one recipe "
        f"({tc.num_epochs} epochs, SGD momentum {tc.momentum}, lr "
        f"{tc.learning_rate} {tc.schedule}, batch {tc.batch_size}, weight decay "
        f"{tc.weight_decay}) from the seed's initialisation and data order; "
        f"scores on {config.num_score_batches} x {config.score_batch_size} "
        "training images."
    )
    if learned is not None:
        text += f" AutoS learned from `{config.source}` only."
        for name, key in (("paper scorer", "paper"), ("within-layer", "within")):
            if key in learned:
                text += (
                    f" Held-out {name}: Spearman {learned[key]['spearman']:.3f}, "
                    f"within-layer {learned[key]['within_layer_spearman']:.3f}."
                )
    if "irp" in config.methods:
        text += (
            f" IRP: {config.irp.num_rounds} rounds of the recipe on each seed to "
            f"{config.irp.final_sparsity}, its nearest round retrained."
        )
    seconds = sum(r["prune_s"] + r["train_s"] for r in records)
    return text + (
        f" Time of the {len(records)} logged runs (pruning + training, summed): "
        f"{seconds / 60:.1f} min."
    )


def _styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct colour and marker per method (sanity checks dashed)."""
    import matplotlib.pyplot as plt

    colors = plt.cm.tab20.colors
    return {
        m: {
            "color": colors[i % len(colors)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": "--" if m.endswith(("_shuffled", "_reinit")) else "-",
        }
        for i, m in enumerate(methods)
    }


def plot_accuracy(
    records, path: str, *, title: str, methods: Sequence[str] | None = None
) -> None:
    """Final accuracy against density (log), error bars, dense as a line;
    cells where every run diverged are drawn as an ``x`` at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summarize(records)
    order = [m for m in _order(records, methods) if m != "dense"]
    styles = _styles(order)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m in order:
        pts = sorted((1 - c.measured, c) for (mm, s), c in cells.items() if mm == m)
        ok = [(d, c.final) for d, c in pts if c.final is not None]
        if ok:
            ax.errorbar(
                [d for d, _ in ok], [f[0] for _, f in ok], yerr=[f[1] for _, f in ok],
                ms=4, capsize=2, label=m, **styles[m],
            )  # fmt: skip
        lost = [d for d, c in pts if c.final is None]
        if lost:
            ax.plot(lost, [0.0] * len(lost), "x", color=styles[m]["color"])
    dense = cells.get(("dense", 0.0))
    if dense is not None and dense.final is not None:
        ax.axhline(dense.final[0], color="k", lw=0.8, label="dense")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (fraction of prunable weights kept, log scale)")
    ax.set_ylabel("final-epoch test accuracy %")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_layer_density(
    records, sparsity: float, path: str, *, methods: Sequence[str] | None = None
) -> None:
    """Kept fraction per layer (log) per method at ``sparsity``; ``x``: empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summarize(records)
    s = round(sparsity, 6)
    at = {
        m: cells[(m, s)]
        for m in _order(records, methods)
        if (m, s) in cells and not m.endswith(("_shuffled", "_reinit"))
    }
    if not at:
        return
    styles = _styles(list(at))
    layers = list(next(iter(at.values())).kept)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(at)
    floor = 1e-4  # percent; an empty layer is drawn at the floor and marked
    for i, (m, cell) in enumerate(at.items()):
        xs = np.arange(len(layers)) + i * width
        ys = [max(cell.kept[k], floor) for k in layers]
        ax.bar(xs, ys, width, label=m, color=styles[m]["color"])
        empty = [x for x, k in zip(xs, layers, strict=True) if cell.kept[k] == 0]
        ax.plot(empty, [floor] * len(empty), "kx")
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels([_layer_name(k) for k in layers])
    ax.set_yscale("log")
    ax.set_ylabel("kept % (log)")
    ax.set_title(f"kept % per layer at {100 * s:g}% sparsity (mean over seeds)")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_text(path: str, text: str) -> None:
    """Replaces ``path`` with ``text`` atomically (a report is never half-written)."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
