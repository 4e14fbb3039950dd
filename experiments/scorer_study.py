"""AutoS scorers trained on one IRP run, evaluated on held-out weights and runs.

The study behind ``experiments/run_scorer.py``, importable: ``run(config,
workdir)`` does everything the script does after parsing its arguments and
returns a ``ScorerStudy``.

For every scorer variant of the config: features of the source run's initial
network (``features.compute_features``), training on its survival labels with
checkpoint selection on a random ``validation_fraction`` of its weights
(``scorer.train_scorer``), then the ranking metrics of ``evaluation`` on
three held-out sets: (a) ``split=random``, a random ``test_fraction`` of the
source weights (excluded from training and selection); (b)
``split=layer:<name>``, one whole layer left out of training; (c)
``split=seed``, every weight of the held-out IRP run. The single heuristics
are scored on the same sets. Writes ``metrics.csv`` (one row per split,
method), ``summary.md``, ``iou.png`` and the trained (c) scorers under
``scorers/`` (for the AutoSparse studies). Finished rows are kept: running
again on the same work directory computes only what is missing.
"""

import csv
import dataclasses
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autosparse_jax import criteria, data, evaluation, features, irp, masks, models
from autosparse_jax import scorer as scorer_lib
from experiments import common

HEURISTICS = ("|w0|", "|g0|", "snip |w0*g0|", "grasp w0*Hg", "synflow")
_FIELDS = ("split", "method", "kind", "n", "seconds")


class ScorerStudy(NamedTuple):
    """What ``run`` returns.

    Attributes:
      summary: the text of ``summary.md``.
      rows: the rows of ``metrics.csv`` (strings for the rows read back from
        an earlier invocation, numbers for those computed now): ``split``,
        ``method``, ``kind`` (``heuristic`` or ``scorer``), ``n`` (weights
        evaluated), ``seconds`` and the metrics of
        ``evaluation.ranking_report``.
      scorers_dir: ``<workdir>/scorers``, the scorers trained for split (c).
    """

    summary: str
    rows: list[dict]
    scorers_dir: str


class Run:
    """One labelled IRP run: its network, labels and feature batches."""

    def __init__(self, path: str, config: ml_collections.ConfigDict):
        self.labels = irp.load_labels(path)
        meta = self.labels.metadata
        host = data.load_dataset(meta["dataset"], meta.get("train_split", "train"))
        self.model = models.get_model(
            meta["model"], num_classes=data.DATASETS[meta["dataset"]].num_classes
        )
        self.apply_fn = models.make_apply_fn(self.model, self.labels.init_model_state)
        key = jax.random.fold_in(jax.random.key(config.seed), meta["seed"])
        self.batches = common.score_batches(
            key,
            host,
            meta["dataset"],
            config.num_feature_batches,
            config.feature_batch_size,
        )
        self.num_rounds = meta["num_rounds"]
        self.round_sparsities = [h["sparsity"] for h in meta["history"]]
        self.counts = np.asarray(features.stack_leaves(self.labels.counts))
        self.layers = features.layer_ids(self.labels.init_params)
        items, flags, _ = masks._flatten(self.labels.init_params, masks.is_prunable, "")
        self.layer_names = [
            jax.tree_util.keystr(p, simple=True, separator="/")
            for (p, _), f in zip(items, flags, strict=True)
            if f
        ]
        self._features = {}

    def features(self, fc: features.FeatureConfig) -> jax.Array:
        """``[N, F]`` features of the initial network (cached per config)."""
        if fc not in self._features:
            self._features[fc] = common.initial_features(
                self.labels.init_params, self.batches, self.apply_fn, fc
            )
        return self._features[fc]

    def heuristic(self, name: str) -> np.ndarray:
        """A single criterion's ``[N]`` scores on the initial network."""
        p, fn = self.labels.init_params, self.apply_fn
        dense = masks.dense_mask(p)
        if name == "|w0|":
            tree = jax.tree.map(jnp.abs, p)
        elif name == "|g0|":
            grad = criteria.loss_gradient(p, self.batches, apply_fn=fn)
            tree = jax.tree.map(jnp.abs, grad)
        elif name == "synflow":
            shape = self.batches["image"].shape[2:]
            tree = criteria.synflow_scores(p, dense, apply_fn=fn, input_shape=shape)
        else:
            crit = criteria.snip if name.startswith("snip") else criteria.grasp
            tree = crit(None, p, self.batches, apply_fn=fn, mask=dense)
        return np.asarray(features.stack_leaves(tree))

    def report(self, scores: np.ndarray, idx: np.ndarray, sparsities) -> dict:
        """Ranking metrics on the weights ``idx`` (IoU only for whole runs)."""
        whole = len(idx) == len(self.counts)
        return evaluation.ranking_report(
            scores,
            self.counts[idx],
            self.num_rounds,
            self.round_sparsities,
            self.layers[idx],
            sparsities=sparsities if whole else (),
        )


def scorer_config(config, preset: str) -> scorer_lib.ScorerConfig:
    """A preset, with ``config.num_steps`` (the quick variant's) if set."""
    base = scorer_lib.PRESETS[preset]
    if "num_steps" in config:
        return dataclasses.replace(base, num_steps=config.num_steps, eval_every=50)
    return base


def fit(config, run: Run, fc, sc, train_idx: np.ndarray):
    """Trains on ``train_idx`` less a random validation part used for selection."""
    rel_train, rel_val = evaluation.split_weights(
        config.seed, len(train_idx), config.validation_fraction
    )
    x, y = run.features(fc), run.counts / run.num_rounds
    fit_idx, val_idx = train_idx[rel_train], train_idx[rel_val]
    return scorer_lib.train_scorer(
        jax.random.key(config.seed),
        x[fit_idx],
        y[fit_idx],
        config=sc,
        feature_config=fc,
        validation=(x[val_idx], y[val_idx]),
    )


def evaluations(config, source: Run, held_out: Run):
    """``(split, train_idx, eval_run, eval_idx)`` for splits (a), (b) and (c)."""
    n = len(source.counts)
    rest, test = evaluation.split_weights(config.seed + 1, n, config.test_fraction)
    yield "random", rest, source, test
    for layer, name in enumerate(source.layer_names):
        train_idx, test_idx = evaluation.split_layers(source.layers, [layer])
        yield f"layer:{name}", train_idx, source, test_idx
    yield "seed", np.arange(n), held_out, np.arange(len(held_out.counts))


def read_rows(path: str) -> list[dict]:
    """The rows of ``metrics.csv`` (strings), none if it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_rows(path: str, rows: list[dict]) -> None:
    """Replaces ``metrics.csv`` atomically (``_FIELDS`` first, then sorted)."""
    keys = list(_FIELDS) + sorted({k for r in rows for k in r} - set(_FIELDS))
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def run_all(config, workdir: str) -> list[dict]:
    """Every (split, method) not yet in ``metrics.csv``, appended in order."""
    source, held_out = Run(config.source, config), Run(config.held_out, config)
    path = os.path.join(workdir, "metrics.csv")
    rows = read_rows(path)
    done = {(r["split"], r["method"]) for r in rows}
    for split, train_idx, run, idx in evaluations(config, source, held_out):
        sparsities = tuple(config.sparsities)
        for name in HEURISTICS:
            if (split, name) not in done:
                tic = time.perf_counter()
                rep = run.report(run.heuristic(name)[idx], idx, sparsities)
                row = {"split": split, "method": name, "kind": "heuristic", **rep}
                rows.append(
                    {**row, "n": len(idx), "seconds": time.perf_counter() - tic}
                )
                write_rows(path, rows)
        for name, (preset, fset, norm, loss) in config.scorers.items():
            if (split, name) in done or (
                split != "seed" and name in config.seed_split_only
            ):
                continue
            tic = time.perf_counter()
            fc = features.FeatureConfig(feature_set=fset, normalization=norm)
            sc = dataclasses.replace(scorer_config(config, preset), loss=loss)
            scorer, history = fit(config, source, fc, sc, train_idx)
            pred = scorer_lib.predict_flat(
                scorer, run.features(fc)[idx], feature_config=fc
            )
            pred = np.asarray(pred)
            rep = run.report(pred, idx, sparsities)
            row = {"split": split, "method": name, "kind": "scorer", **rep}
            rows.append({**row, "n": len(idx), "seconds": time.perf_counter() - tic})
            write_rows(path, rows)
            if split == "seed":
                save_scorer(workdir, name, scorer, history, source, config)
    return rows


def save_scorer(workdir, name, scorer, history, source: Run, config) -> None:
    """Saves a split-(c) scorer under ``scorers/`` (never overwritten)."""
    target = os.path.join(workdir, "scorers", name.replace("/", "__"))
    if not os.path.exists(target):
        meta = source.labels.metadata
        scorer_lib.save_scorer(
            target,
            scorer,
            metadata={
                "source_model": meta["model"],
                "source_dataset": meta["dataset"],
                "source_seed": meta["seed"],
                "irp_config": meta["irp_config"],
                "num_feature_batches": config.num_feature_batches,
                "feature_batch_size": config.feature_batch_size,
                "history": history,
            },
        )


def _cell(row: dict, key: str) -> str:
    value = row.get(key, "")
    return "" if value in ("", None) else f"{float(value):.3f}"


def format_summary(config, rows: list[dict], seconds: float) -> str:
    """The whole ``summary.md``: one table per split."""
    iou_keys = [f"iou@{s:g}" for s in config.sparsities]
    keys = ["spearman", "kendall", "spearman_within_layer", *iou_keys, "mse"]
    lines = [
        "# AutoS scorers: held-out ranking quality",
        "",
        f"Source IRP run: `{config.source}`; held-out run: `{config.held_out}`. "
        f"Features on {config.num_feature_batches} x {config.feature_batch_size} "
        f"training images. Checkpoints selected on {config.validation_fraction:.0%} "
        "of the training weights. Higher is better except MSE (scorers trained "
        "with MSE only; heuristics are not on the label scale).",
        "",
        f"Wall time of the last invocation: {seconds:.0f} s on {common.device_name()}.",
    ]
    for split in dict.fromkeys(r["split"] for r in rows):
        chosen = [r for r in rows if r["split"] == split]
        lines += ["", f"## split = {split} ({chosen[0]['n']} weights)", ""]
        lines += ["| method | " + " | ".join(keys) + " | s |"]
        lines += ["|---" * (len(keys) + 2) + "|"]
        for r in chosen:
            cells = [_cell(r, k) for k in keys]
            lines += [
                f"| {r['method']} | "
                + " | ".join(cells)
                + f" | {float(r['seconds']):.1f} |"
            ]
    return "\n".join(lines) + "\n"


def plot(config, rows: list[dict], path: str) -> None:
    """IoU with the held-out run's IRP masks against density (split (c))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in (r for r in rows if r["split"] == "seed"):
        ys = [float(r[f"iou@{s:g}"]) for s in config.sparsities]
        style = "-o" if r["kind"] == "scorer" else "--x"
        ax.plot([1 - s for s in config.sparsities], ys, style, label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("density (IRP round nearest the sparsity)")
    ax.set_ylabel("IoU of top-k mask with IRP mask")
    ax.set_title("Held-out IRP run (another seed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str) -> ScorerStudy:
    """The whole study in ``workdir`` (resumable); see the module docstring."""
    tic = time.perf_counter()
    common.prepare_workdir(workdir, config)
    rows = run_all(config, workdir)
    text = format_summary(config, rows, time.perf_counter() - tic)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(text)
    plot(config, rows, os.path.join(workdir, "iou.png"))
    return ScorerStudy(text, rows, os.path.join(workdir, "scorers"))
