"""The main job: LeNet-300-100 on Fashion-MNIST, dense and at 95% random sparsity.

Command (from the repository root, after `make demo` has installed everything):

    .venv/bin/python -m experiments.demo [--workdir runs/demo] [--epochs 10]

Hardware: 2 CPU cores. Runtime: about 1 minute plus the one-off Fashion-MNIST
preparation. Expected: dense final-epoch test accuracy about 89%; the 95%
random mask a few points lower. It prints a table and writes results.json to
the work directory. (The full AutoSparse pipeline joins this demo as the
pruning criteria, IRP and the AutoS scorer land.)
"""

import argparse
import json
import os
import time

import jax

from autosparse_jax import data, masks, models, train
from experiments import common
from experiments.configs import fmnist_lenet300


def random_mask(key: jax.Array, params, sparsity: float):
    """A mask keeping a uniformly random ``1 - sparsity`` of the prunable weights."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    scores = [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    return masks.mask_from_scores(jax.tree.unflatten(treedef, scores), sparsity)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    config = fmnist_lenet300.get_config()
    if args.epochs is not None:
        config.train.num_epochs = args.epochs
    if args.seed is not None:
        config.seed = args.seed
    start = time.perf_counter()
    train_data = data.load_dataset(config.dataset, "train")
    test_data = data.load_dataset(config.dataset, "test")
    print(
        f"Fashion-MNIST: {len(train_data['label'])} train / "
        f"{len(test_data['label'])} test images ({time.perf_counter() - start:.1f} s)"
    )
    recipe = common.make_recipe(config, len(train_data["label"]))
    train_data, test_data = train.to_device(train_data), train.to_device(test_data)

    key = jax.random.key(config.seed)
    init_key, mask_key, data_key = jax.random.split(key, 3)
    params, model_state = models.init_params(init_key, recipe.model, recipe.input_shape)
    runs = {
        "dense": masks.dense_mask(params),
        "random 95%": random_mask(mask_key, params, 0.95),
    }
    results = []
    for name, mask in runs.items():
        print(f"training {name} ({config.train.num_epochs} epochs)")
        tic = time.perf_counter()
        _, history = common.train_masked(
            recipe,
            data_key,
            params,
            model_state,
            mask,
            train_data,
            test_data,
            progress=False if args.no_progress else None,
        )
        results.append(
            {
                "method": name,
                "sparsity": float(masks.sparsity(mask)),
                "final_test_accuracy": history[-1]["test_accuracy"],
                "best_test_accuracy (selected on test)": max(
                    r["test_accuracy"] for r in history
                ),
                "seconds": time.perf_counter() - tic,
                "sparsity_by_layer": masks.sparsity_by_layer(mask),
                "history": history,
            }
        )

    print(f"\n{'method':<12} {'sparsity':>8} {'final test acc':>15} {'time':>7}")
    for r in results:
        print(
            f"{r['method']:<12} {r['sparsity']:>8.3f} "
            f"{100 * r['final_test_accuracy']:>14.2f}% {r['seconds']:>6.1f}s"
        )
    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, "results.json")
    with open(path, "w") as f:
        json.dump({"config": config.to_dict(), "results": results}, f, indent=2)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
