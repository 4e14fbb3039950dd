"""Dataset transfer: allocation x ranking on LeNet-300-100 / MNIST-1D.

The table of ``allocation_fmnist_lenet300`` (allocations global, learned,
ERK, SNIP's x rankings AutoS, SNIP, magnitude, random at 98 / 99 / 99.5 %,
fresh seeds 2, 3, 4) on MNIST-1D, with the recipe of
``benchmark_mnist1d_lenet300`` (100 epochs; see there why). The scorers and
the allocation model are trained on the Fashion-MNIST LeNet-300-100 IRP run
of seed 0 only. No IRP oracle: there is no IRP run of this target.

Command (resumable):

    .venv/bin/python -m experiments.run_allocation \\
        --config experiments/configs/allocation_mnist1d_lenet300.py \\
        --workdir experiments/results/allocation_mnist1d_lenet300

Hardware: 2 CPU cores. Runtime and results: ``experiments/README.md`` and
``experiments/results/allocation_mnist1d_lenet300/table.md``.
"""

import ml_collections

from experiments.configs import allocation_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = allocation_fmnist_lenet300.get_config(quick)
    config.dataset = "mnist1d"
    config.train.num_epochs = 1 if quick else 100
    config.train.eval_batch_size = 1_000
    config.methods = tuple(m for m in config.methods if not m.startswith("irp+"))
    if quick:
        config.train_split, config.test_split = "train[:1000]", "test[:500]"
    return config
