"""Which context features help the within-layer AutoS scorer (no pruned training).

The within-layer scorer is fitted on the seed-0 IRP run of LeNet-300-100 /
Fashion-MNIST with (w0, g0) plus each context feature (``"context_lookahead"``
features, layer-normalised; the other columns zeroed, so they standardise to a
constant the scorer cannot read) and scored on the held-out IRP run of seed 1:
Spearman with the survival counts, and each layer's top-k precision at 99 %
against IRP's final mask (k: that layer's count in the mask).
    .venv/bin/python -m experiments.context_ablation  # writes results/context_ablation/
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import data, evaluation, features, irp, models, train, unit_stats
from autosparse_jax import scorer as scorer_lib
from experiments import common, variants

SOURCE = "experiments/results/irp_fmnist_lenet300/labels"
HELD_OUT = "experiments/results/irp_fmnist_lenet300_seed1/labels"
CONFIG = "experiments/configs/variants_fmnist_lenet300.py"
OUT = "experiments/results/context_ablation"
FEATURES = features.FeatureConfig(
    feature_set="context_lookahead", normalization="layer"
)
BASE = ("w0", "g0")
AHEAD = (*BASE, "wk", "|wk|-|w0|")
SUBSETS = {
    "w0, g0": BASE,
    "+ |x_j|": (*BASE, "|x_j|"),
    "+ |w0|*|x_j|": (*BASE, "|w0|*|x_j|"),
    "+ rms w0 of input row, unit column": (*BASE, "rms w0[j,:]", "rms w0[:,i]"),
    "+ rms g0 of input row, unit column": (*BASE, "rms g0[j,:]", "rms g0[:,i]"),
    "+ log synflow": (*BASE, "log synflow"),
    "context (all of the above)": features.FEATURE_NAMES["context"],
    "look-ahead 30 % (w0, g0, wk, |wk|-|w0|)": AHEAD,
    "look-ahead 30 % + |x_j|, |w0|*|x_j|": (*AHEAD, "|x_j|", "|w0|*|x_j|"),
    "look-ahead 30 % + context": FEATURES.names,
}


def load_run(config, path: str) -> dict:
    """A labelled run's features, counts, layers, raw reference scores (host)."""
    labels = irp.load_labels(path)
    meta = labels.metadata
    host = data.load_dataset(meta["dataset"], meta.get("train_split", "train"))
    source_config = common.load_config(config.source_config)
    recipe = common.make_recipe(source_config, len(host["label"]))
    ahead = variants._ahead(
        recipe, jax.random.fold_in(jax.random.key(config.scorer_seed), 1),
        labels.init_params, labels.init_model_state, train.to_device(host), config,
    )  # fmt: skip
    apply_fn = models.make_apply_fn(recipe.model, labels.init_model_state)
    batches = common.source_batches(config, labels)
    feats = features.compute_features(
        labels.init_params, batches, apply_fn=apply_fn, ahead_params=ahead,
        **dataclasses.asdict(FEATURES),
    )  # fmt: skip
    act = unit_stats.input_rms(labels.init_params, batches, apply_fn=apply_fn)
    w0 = features.stack_leaves(jax.tree.map(jnp.abs, labels.init_params))
    history = meta["history"]
    return {
        "x": np.asarray(features.stack_features(feats)),
        "counts": np.asarray(features.stack_leaves(labels.counts)),
        "num_rounds": meta["num_rounds"],
        "layers": features.layer_ids(labels.init_params),
        "final_round": evaluation.irp_round_at([h["sparsity"] for h in history], 0.99),
        "|w0|": np.asarray(w0),
        "|w_k|": np.asarray(features.stack_leaves(jax.tree.map(jnp.abs, ahead))),
        "|w0|*|x_j|": np.asarray(w0 * features.stack_leaves(act)),
    }


def evaluate(scores: np.ndarray, run: dict) -> dict:
    """Spearman (global, within layers) and per-layer top-k precision at 99 %."""
    target = evaluation.irp_mask(run["counts"], run["final_round"])
    precision = []
    for layer in np.unique(run["layers"]):
        sel = run["layers"] == layer
        k = int(target[sel].sum())
        top = evaluation.top_k_mask(scores[sel], k)
        precision.append(float((top & target[sel]).sum() / max(k, 1)))
    within = evaluation.within_layer_spearman(scores, run["counts"], run["layers"])
    rho = evaluation.spearman(scores, run["counts"])
    return dict(spearman=rho, spearman_within_layer=within["mean"], precision=precision)


def fit_and_score(config, source: dict, held_out: dict, names) -> np.ndarray:
    """The within-layer scorer on ``names`` (other columns zeroed), held-out scores."""
    keep = np.isin(np.array(FEATURES.names), names).astype(np.float32)
    y = scorer_lib.within_layer_targets(
        source["counts"] / source["num_rounds"], source["layers"]
    )
    x = source["x"] * keep
    fit_idx, val_idx = evaluation.split_weights(
        config.scorer_seed, len(y), config.validation_fraction
    )
    fitted, _ = scorer_lib.train_scorer(
        jax.random.key(config.scorer_seed), x[fit_idx], y[fit_idx],
        config=dataclasses.replace(
            scorer_lib.PRESETS["default"], num_steps=config.scorer_num_steps
        ),
        feature_config=FEATURES, validation=(x[val_idx], y[val_idx]), progress=False,
    )  # fmt: skip
    flat = scorer_lib.predict_flat(
        fitted, jnp.asarray(held_out["x"] * keep), feature_config=FEATURES
    )
    return np.asarray(flat)


def write_tables(results: dict) -> None:
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ablation.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = [
        "# Context features: within-layer scorers fitted on the seed-0 IRP run of "
        "LeNet-300-100 / FMNIST, scored on the seed-1 run (`python -m "
        "experiments.context_ablation`)\n\n| features | precision of each layer's "
        "top-k at 99 % (Dense_0 / Dense_1 / head) | Spearman | within-layer "
        "Spearman |\n|---|---|---|---|"
    ]
    for name, r in results.items():
        p = " / ".join(f"{v:.3f}" for v in r["precision"])
        rho, within = r["spearman"], r["spearman_within_layer"]
        name = name.replace("|", "\\|")
        lines.append(f"| {name} | {p} | {rho:.3f} | {within:.3f} |")
    with open(os.path.join(OUT, "ablation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    config = common.load_config(CONFIG)
    config.lookahead_fraction = 0.3
    source, held_out = load_run(config, SOURCE), load_run(config, HELD_OUT)
    refs = ("|w0|", "|w_k|", "|w0|*|x_j|")
    results = {f"{k} (not learned)": evaluate(held_out[k], held_out) for k in refs}
    for name, names in SUBSETS.items():
        scores = fit_and_score(config, source, held_out, names)
        results[name] = evaluate(scores, held_out)
    write_tables(results)


if __name__ == "__main__":
    main()
