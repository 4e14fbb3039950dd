"""What a predictor must output: three diagnostics of IRP and the PaI masks.

Command (resumable; each part skips what its work directory already holds):

    .venv/bin/python -m experiments.diagnostics \\
        [--config experiments/configs/diagnostics_fmnist_lenet300.py] \\
        [--workdir experiments/results/diagnostics_fmnist_lenet300]

There is no ``--quick`` variant: every part reads the committed full-length
IRP runs (``config.irp_labels``).

1. **Noise ceiling** (``noise_ceiling.json``): a second IRP run from the
   source run's initialisation with another data order (``irp_key`` folded
   with 1); mask IoU per round and layer and the Spearman correlation of the
   survival counts with the source run's labels. No predictor can agree with
   IRP better than IRP agrees with itself.
2. **Structure-keeping shuffles** (``shuffles/``, a study of
   ``experiments.runner``): each labelled IRP run's mask, retrained with the
   recipe on its own initialisation; on another initialisation; shuffled
   within layers; keeping each unit's fan-in; keeping each input's fan-out;
   keeping both (degree-preserving rewiring, ``structure.rewire``).
3. **Structure** (``structure.json``, ``first_layer.png``): effective
   sparsity, alive units, inputs used and median fan-in per layer of every
   method's mask on one seed, and the first layer's maps.
"""

import json
import os
from typing import Any

import jax
import numpy as np

from autosparse_jax import (
    criteria,
    data,
    evaluation,
    irp,
    masks,
    models,
    structure,
    train,
)
from experiments import common, irp_study, methods, runner

DEFAULT_CONFIG = "experiments/configs/diagnostics_fmnist_lenet300.py"


def labels_of(config: Any, seed: int) -> irp.IRPLabels:
    """The labelled IRP run of ``seed`` (``config.irp_labels``)."""
    return irp.load_labels(config.irp_labels[str(seed)])


def irp_mask_at(labels: irp.IRPLabels, sparsity: float) -> Any:
    """The labelled run's mask after its round nearest ``sparsity``."""
    rounds = [h["sparsity"] for h in labels.metadata["history"]]
    return labels.masks[1 + evaluation.irp_round_at(rounds, sparsity)]


def _flat(tree: Any) -> list[np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [np.asarray(x) for p, x in leaves if masks.is_prunable(p, x)]


# ------------------------------------------------------------ noise ceiling


def noise_ceiling(config: Any, workdir: str, progress: bool = True) -> dict:
    """IRP against itself: same init, another data order (part 1)."""
    path = os.path.join(workdir, "noise_ceiling.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    irp_config = common.load_config(config.irp_config)
    source = labels_of(config, irp_config.seed)
    setup = irp_study.make_setup(irp_config)
    same = jax.tree.map(np.array_equal, setup.params, source.init_params)
    if not all(jax.tree.leaves(same)):
        raise ValueError(
            f"{config.irp_labels[str(irp_config.seed)]} was not made from "
            f"{config.irp_config}'s initialisation; point the config at its run."
        )
    setup = setup._replace(irp_key=jax.random.fold_in(setup.irp_key, 1))
    rerun_dir = os.path.join(workdir, "irp_rerun")
    common.prepare_workdir(rerun_dir, irp_config)
    result, rows, _ = irp_study.run_rounds(
        irp_config, setup, rerun_dir, progress=progress
    )
    counts_a = np.concatenate([c.ravel() for c in _flat(source.counts)])
    counts_b = sum(
        np.concatenate([m.ravel() for m in _flat(mk)]) for mk in result.masks[1:]
    )
    out = {
        "spearman_counts": evaluation.spearman(counts_a, counts_b),
        "rounds": [],
    }
    for r, (h, row) in enumerate(zip(source.metadata["history"], rows, strict=True)):
        a, b = _flat(source.masks[1 + r]), _flat(result.masks[1 + r])
        out["rounds"].append({
            "round": r,
            "sparsity": h["sparsity"],
            "iou": evaluation.iou(
                np.concatenate([x.ravel() for x in a]),
                np.concatenate([x.ravel() for x in b]),
            ),
            "iou_by_layer": [
                evaluation.iou(x.ravel(), y.ravel()) for x, y in zip(a, b, strict=True)
            ],
            "test_accuracy": [h["test_accuracy"], row["test_accuracy"]],
        })  # fmt: skip
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return out


# ----------------------------------------------------------------- shuffles


def _irp_method(change):
    """A method: the seed's labelled IRP mask, ``change(key, mask, init,
    new_init)`` giving ``(mask, params)`` to train, where ``init`` is the IRP
    run's initialisation and ``new_init()`` draws another one."""

    def method(t, sparsity, study):
        labels = labels_of(study.config, t.seed)
        key = jax.random.fold_in(t.prune_key, int(1e6 * sparsity))
        recipe = study.recipe

        def new_init():
            k = jax.random.fold_in(key, 1)
            return models.init_params(k, recipe.model, recipe.input_shape)[0]

        mask = irp_mask_at(labels, sparsity)
        return change(key, mask, labels.init_params, new_init)

    return method


SHUFFLES = {
    "irp_own_init": lambda k, m, init, new: (m, init),
    "irp_new_init": lambda k, m, init, new: (m, new()),
    "irp_shuffled": lambda k, m, init, new: (
        criteria.shuffle_within_layers(k, m),
        init,
    ),
    "irp_keep_fan_in": lambda k, m, init, new: (
        structure.shuffle_keeping_fan_in(k, m),
        init,
    ),
    "irp_keep_fan_out": lambda k, m, init, new: (
        structure.shuffle_keeping_fan_out(k, m),
        init,
    ),
    "irp_keep_degrees": lambda k, m, init, new: (structure.rewire(k, m), init),
}
"""Part 2's methods: the IRP mask and what each shuffle keeps of it."""


def shuffles(config: Any, workdir: str, progress: bool = True) -> str:
    """Part 2 as a runner study in ``workdir/shuffles``; returns its table."""
    study = config.copy_and_resolve_references()
    study.seeds = tuple(int(s) for s in config.irp_labels)
    study.sparsities = config.shuffle_sparsities
    study.methods = tuple(SHUFFLES)
    extra = {name: _irp_method(fn) for name, fn in SHUFFLES.items()}
    return runner.run_study(
        study, os.path.join(workdir, "shuffles"), extra_methods=extra,
        progress=progress,
    )  # fmt: skip


# ---------------------------------------------------------------- structure


def structure_of_masks(config: Any, workdir: str) -> dict:
    """Part 3: every method's mask on ``config.structure_seed`` at
    ``config.structure_sparsity``, and the labelled IRP runs' masks on their
    own initialisations: ``structure.summary`` of each, and the first layer's
    maps (``first_layer.png``)."""
    path = os.path.join(workdir, "structure.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    sparsity = config.structure_sparsity
    host_train = data.load_dataset(config.dataset, config.train_split)
    test = data.load_dataset(config.dataset, config.test_split)
    recipe = common.make_recipe(config, len(host_train["label"]))
    datasets = (train.to_device(host_train), train.to_device(test))
    study = runner.Study(config, workdir, recipe, host_train, datasets)
    t = common.make_target(config.structure_seed, recipe, host_train, config)
    apply_fn = models.make_apply_fn(recipe.model, t.model_state)
    named = {}
    for seed in config.irp_labels:
        labels = labels_of(config, int(seed))
        named[f"IRP (seed {seed})"] = (
            irp_mask_at(labels, sparsity),
            labels.init_params,
        )
    for name in config.structure_methods:
        named[name] = (methods.resolve(name)(t, sparsity, study)[0], t.params)
    out = {}
    for name, (mask, params) in named.items():
        out[name] = structure.summary(
            params, mask, apply_fn=apply_fn, input_shape=recipe.input_shape
        )
    structure.plot_first_layer(
        {k: named[k][0] for k in config.structure_plot},
        recipe.input_shape,
        path=os.path.join(workdir, "first_layer.png"),
        title=(
            f"{config.model} / {config.dataset}, first layer at "
            f"{100 * sparsity:g} % sparsity (seed {config.structure_seed}; "
            "IRP on its own run's init)"
        ),
    )
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return out


def structure_table(summaries: dict) -> str:
    """Markdown: effective sparsity and the per-layer unit counts."""
    lines = [
        "| mask | kept | on a path | effective sparsity % | per layer: units "
        "alive / inputs used / median fan-in |",
        "|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        layers = "; ".join(
            f"{row['units_alive']} / {row['inputs_used']} / {row['median_fan_in']:g}"
            for row in s["layers"]
        )
        lines.append(
            f"| {name} | {s['kept']} | {s['effective']} | "
            f"{100 * s['effective_sparsity']:.3f} | {layers} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, config, workdir = common.parse_args(
        __doc__.splitlines()[0], DEFAULT_CONFIG, argv
    )
    if args.quick:
        raise SystemExit(
            "experiments.diagnostics has no --quick variant: it reads the "
            "committed IRP runs of config.irp_labels; run it without --quick."
        )
    os.makedirs(workdir, exist_ok=True)
    ceiling = noise_ceiling(config, workdir)
    table = shuffles(config, workdir)
    summaries = structure_of_masks(config, workdir)
    rows = [
        f"| {100 * r['sparsity']:.2f} | {r['iou']:.3f} | "
        + " / ".join(f"{x:.3f}" for x in r["iou_by_layer"])
        + " | " + " / ".join(f"{100 * a:.2f}" for a in r["test_accuracy"]) + " |"
        for r in ceiling["rounds"]
    ]  # fmt: skip
    text = "\n".join([
        f"# Diagnostics: {config.model} on {config.dataset}", "",
        "## 1. IRP noise ceiling: the source run against a rerun from the same "
        "init with another data order", "",
        f"Spearman of the survival counts: {ceiling['spearman_counts']:.3f}", "",
        "| sparsity % | mask IoU | IoU per layer | test acc % (source / rerun) |",
        "|---|---|---|---|", *rows, "",
        "## 2. Structure-keeping shuffles of the IRP masks (`shuffles/table.md`)",
        "", table.split("## Final-epoch test accuracy")[1].split("##")[0].strip(),
        "", f"## 3. Structure at {100 * config.structure_sparsity:g} %", "",
        structure_table(summaries), "", "![first layer](first_layer.png)", "",
    ])  # fmt: skip
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
