"""IRP on LeNet-5 with BatchNorm / Fashion-MNIST (20,000 images): the BN source.

``irp_fmnist_lenet5`` (magnitude, global scope, 20 geometric rounds to 99 %,
full reset to initialisation: weights, BatchNorm params and running
statistics; each round one run of the ``fmnist_lenet300`` recipe) on
``lenet5_bn`` (BatchNorm after each convolution), trained on the first
20,000 training images so that the BatchNorm study (``benchmark_fmnist_lenet5_bn``)
fits about two hours on 2 CPU cores; tested on the full test set. Seed 0.

Command (from the repository root; resumable):

    .venv/bin/python -m experiments.run_irp \\
        --config experiments/configs/irp_fmnist_lenet5_bn.py \\
        --workdir experiments/results/irp_fmnist_lenet5_bn

Hardware: 2 CPU cores, no GPU. Runtime and results:
``experiments/results/irp_fmnist_lenet5_bn/summary.md``.
"""

import ml_collections

from experiments.configs import irp_fmnist_lenet5

TRAIN_SPLIT = "train[:20000]"


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = irp_fmnist_lenet5.get_config(quick)
    config.model = "lenet5_bn"
    if not quick:
        config.train_split = TRAIN_SPLIT
    return config
