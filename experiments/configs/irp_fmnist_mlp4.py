"""IRP on ``mlp300_200_100_50`` / Fashion-MNIST to 99 %: a second AutoS source.

The settings of ``irp_fmnist_lenet300`` (magnitude, global scope, 20
geometric rounds to 99 %, full reset to initialisation, each round one run
of the ``fmnist_lenet300`` recipe: 10 epochs, SGD momentum 0.9, lr 0.05
cosine, batch 128; dense and random baselines at 98 / 99 %) on study 2's
model, seed 0 (never a test or validation seed). Its labels are a source for
leave-one-target-out learners (``experiments.variants_allocation``): the
learners of study 2's target never see this run.

Command (from the repository root; resumable):

    .venv/bin/python -m experiments.run_irp \\
        --config experiments/configs/irp_fmnist_mlp4.py \\
        --workdir experiments/results/irp_fmnist_mlp4

Hardware: 2 CPU cores, no GPU. Runtime and results:
``experiments/results/irp_fmnist_mlp4/summary.md``.
"""

import ml_collections

from experiments.configs import irp_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = irp_fmnist_lenet300.get_config(quick)
    config.model = "mlp300_200_100_50"
    return config
