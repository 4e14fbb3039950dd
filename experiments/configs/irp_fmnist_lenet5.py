"""IRP on LeNet-5 / Fashion-MNIST to 99 %: the AutoS source of the conv study.

The settings of ``irp_fmnist_lenet300`` (magnitude, global scope, 20
geometric rounds to 99 %, full reset to initialisation, each round one run
of the ``fmnist_lenet300`` recipe: 10 epochs, SGD momentum 0.9, lr 0.05
cosine, batch 128; dense and random baselines at 98 / 99 %) on LeNet-5
(conv 6 5x5 SAME, max pool, conv 16 5x5 VALID, max pool, dense 120, 84, 10;
61.7k weights), seed 0 (never a test or validation seed). Its labels are the
same-architecture source of ``benchmark_fmnist_lenet5``. On CPU the rounds
train the ``batch_minor`` twin of LeNet-5 (same params and gradients).

Command (from the repository root; resumable):

    .venv/bin/python -m experiments.run_irp \\
        --config experiments/configs/irp_fmnist_lenet5.py \\
        --workdir experiments/results/irp_fmnist_lenet5

Hardware: 2 CPU cores, no GPU. Runtime and results:
``experiments/results/irp_fmnist_lenet5/summary.md``.
"""

import ml_collections

from experiments.configs import irp_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = irp_fmnist_lenet300.get_config(quick)
    config.model = "lenet5"
    return config
