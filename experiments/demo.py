"""The main job: AutoSparse end to end on Fashion-MNIST, in a few minutes.

Command (from the repository root; ``make demo`` installs everything first):

    .venv/bin/python -m experiments.demo [--workdir runs/demo-<time>] [--quick]

Steps: prepare Fashion-MNIST; run a short IRP on LeNet-300-100 (seed 0) and
save its survival labels; train the AutoS scorers and the layer-allocation
model on them; prune a fresh LeNet-300-100 (seed 1) at 90 / 98 / 99 % with
AutoS (global threshold and learned allocation), SNIP, magnitude and random;
train each mask with the one shared recipe; print the table and write
``runs.csv``, ``table.md``, ``accuracy.png`` and ``layer_density.png`` to the
work directory it names. Rerunning with the same ``--workdir`` resumes.

Hardware: 2 CPU cores. Runtime and expected table: ``experiments/README.md``
(config: ``experiments/configs/demo.py``).
"""

import argparse
import os
import time

from autosparse_jax import data
from experiments import common, run_benchmark, run_irp

DEFAULT_CONFIG = "experiments/configs/demo.py"


def load_config(path: str, quick: bool):
    """The demo's two configs (IRP run, benchmark), shrunk by ``--quick``."""
    config = common.load_config(path)
    if quick:
        q = config.quick
        config.irp.irp.num_rounds = q.num_rounds
        config.irp.irp.epochs_per_round = q.num_epochs  # the round recipe follows
        config.benchmark.train.num_epochs = q.num_epochs
        config.irp.train_split = config.benchmark.train_split = q.train_split
        config.benchmark.scorer_num_steps = q.scorer_num_steps
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--workdir", default=None, help="default runs/demo-<time>")
    parser.add_argument("--quick", action="store_true", help="smoke test")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.quick)
    workdir = args.workdir or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    tic = time.perf_counter()

    print(f"[1/3] Fashion-MNIST ({data.DATASETS['fashion_mnist'].input_shape})")
    data.load_dataset("fashion_mnist", "test")  # prepares the dataset once
    irp_dir = os.path.join(workdir, "irp")
    irp_config = config.irp
    common.prepare_workdir(irp_dir, irp_config)
    print(
        f"[2/3] IRP on {irp_config.model}, seed {irp_config.seed}: "
        f"{irp_config.irp.num_rounds} rounds x {irp_config.irp.epochs_per_round} "
        f"epochs to {irp_config.irp.final_sparsity:.0%} sparsity"
    )
    setup = run_irp.make_setup(irp_config)
    result, _, _ = run_irp.run_rounds(irp_config, setup, irp_dir)
    labels = os.path.join(irp_dir, "labels")
    run_irp.save_labels(irp_config, setup, result, labels)

    bench = config.benchmark
    bench.source = labels
    print(
        f"[3/3] AutoS trained on those labels; a fresh {bench.model} (seed "
        f"{bench.seeds[0]}) pruned by {', '.join(bench.methods)} at "
        f"{', '.join(f'{s:.0%}' for s in bench.sparsities)}, each trained "
        f"{bench.train.num_epochs} epochs"
    )
    text = run_benchmark.run_study(bench, os.path.join(workdir, "benchmark"))
    print(text)
    print(
        f"Done in {(time.perf_counter() - tic) / 60:.1f} min. Results: "
        f"{workdir}/benchmark/ (runs.csv, table.md, accuracy.png, "
        "layer_density.png); IRP labels: " + labels
    )


if __name__ == "__main__":
    main()
