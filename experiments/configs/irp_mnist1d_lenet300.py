"""IRP on LeNet-300-100 / MNIST-1D to 99 %: a third AutoS source.

The settings of ``irp_fmnist_lenet300`` (magnitude, global scope, 20
geometric rounds to 99 %, full reset to initialisation; dense and random
baselines at 98 / 99 %) with study 3's own recipe: each round is one run of
the ``benchmark_mnist1d_lenet300`` recipe (100 epochs, SGD momentum 0.9, lr
0.05 cosine, batch 128, 4,000 training examples), seed 0 (never a test or
validation seed). Its labels are a source for leave-one-target-out learners
(``experiments.variants_allocation``): the learners of study 3's target
never see this run.

Command (from the repository root; resumable):

    .venv/bin/python -m experiments.run_irp \\
        --config experiments/configs/irp_mnist1d_lenet300.py \\
        --workdir experiments/results/irp_mnist1d_lenet300

Hardware: 2 CPU cores, no GPU. Runtime and results:
``experiments/results/irp_mnist1d_lenet300/summary.md``.
"""

import ml_collections

from experiments.configs import irp_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = irp_fmnist_lenet300.get_config(quick)
    config.dataset = "mnist1d"
    config.train.eval_batch_size = 1_000
    if not quick:  # the target's recipe: 100 epochs (see benchmark_mnist1d_lenet300)
        config.irp.epochs_per_round = 100  # and so train.num_epochs
    else:  # a smoke test of the same study, not a result
        config.train_split, config.test_split = "train[:1000]", "test[:500]"
    return config
