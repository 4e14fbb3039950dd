"""Why a mask fails to train: its network's scale at initialisation.

For a grid-study config (``run_benchmark``'s), each seed and each method's
mask at one sparsity, with the masked initial params of the seed: the
standard deviation of every Dense / Conv output (inference mode) on the first
512 training images, the initial loss on them and the norm of the masked loss
gradient. A mask that inflates these by orders of magnitude over random
pruning's meets the recipe's learning rate with a huge first step (GraSP on
the deeper MLP and on LeNet-5, ``RESULTS.md``). Writes
``<workdir>/mask_scale.json`` and prints a table.

    .venv/bin/python -m experiments.mask_scale \\
        --config experiments/configs/benchmark_fmnist_lenet5.py \\
        [--seeds 2 3] [--sparsity 0.9] [--methods dense random snip grasp synflow]

AutoS methods load (or fit, once) their learners in the study's own work
directory, as the study does.
"""

import argparse
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from autosparse_jax import data, masks, train
from experiments import common, methods, runner

NUM_IMAGES = 512


def _is_layer(module: nn.Module, method_name: str) -> bool:
    return method_name == "__call__" and isinstance(module, nn.Dense | nn.Conv)


def scale_of(recipe: common.Recipe, params, model_state, images, labels):
    """Per-layer output std, the loss and its gradient of ``params`` on a batch
    (one forward pass: the outputs are the loss's auxiliary result)."""

    def loss_fn(p):
        logits, state = recipe.model.apply(
            {"params": p, **model_state}, images, train=False,
            capture_intermediates=_is_layer, mutable=["intermediates"],
        )  # fmt: skip
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, state["intermediates"]

    (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    stds = {}
    for path, value in jax.tree_util.tree_leaves_with_path(outputs):
        keys = [str(p.key) for p in path if hasattr(p, "key")]  # not tuple indices
        stds["/".join(k for k in keys if k != "__call__")] = float(jnp.std(value))
    return stds, float(loss), grads


def measure(config, study_workdir: str, seeds, sparsity: float, names) -> list[dict]:
    """One record per (seed, method): the method's mask at ``sparsity``."""
    host = data.load_dataset(config.dataset, config.train_split)
    recipe = common.make_recipe(config, len(host["label"]))
    study = runner.Study(config, study_workdir, recipe, host, (None, None))
    pre = data.preprocess_config(config.dataset)
    images = train.prepare_images(
        None, jnp.asarray(host["image"][:NUM_IMAGES]), pre, train=False
    )
    labels = jnp.asarray(host["label"][:NUM_IMAGES])
    records = []
    for seed in seeds:
        t = common.make_target(seed, recipe, host, config)
        for name in names:
            out = methods.resolve(name)(t, sparsity, study)
            if out is None:
                continue
            mask, params = out
            params = masks.apply_mask(params, mask)
            stds, loss, grads = scale_of(recipe, params, t.model_state, images, labels)
            grads = masks.apply_mask(grads, mask)
            norm = optax.tree.norm(grads)
            records.append({
                "seed": seed, "method": name, "sparsity": sparsity, "loss": loss,
                "masked_grad_norm": float(norm), "output_std": stds,
            })  # fmt: skip
    return records


def table(records: list[dict[str, Any]]) -> str:
    """A markdown table: one row per record, one column per layer."""
    layers = list(records[0]["output_std"]) if records else []
    head = ["seed", "method", "initial loss", "masked grad norm"]
    head += [f"std {name}" for name in layers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [str(r["seed"]), r["method"], f"{r['loss']:.3g}"]
        cells.append(f"{r['masked_grad_norm']:.3g}")
        cells += [f"{r['output_std'][name]:.3g}" for name in layers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3])
        parser.add_argument("--sparsity", type=float, default=0.9)
        parser.add_argument(
            "--methods",
            nargs="+",
            default=["dense", "random", "snip", "grasp", "synflow"],
        )

    args, config, _ = common.parse_args(
        __doc__.splitlines()[0],
        "experiments/configs/benchmark_fmnist_lenet5.py",
        argv,
        add_arguments,
    )
    name = os.path.basename(args.config)
    workdir = args.workdir or common.default_workdir(f"mask_scale_{name}", args.quick)
    study_workdir = common.default_workdir(args.config, args.quick)
    records = measure(config, study_workdir, args.seeds, args.sparsity, args.methods)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "mask_scale.json"), "w") as f:
        json.dump(records, f, indent=1)
    print(table(records))
    print(f"Wrote {workdir}/mask_scale.json")


if __name__ == "__main__":
    main()
