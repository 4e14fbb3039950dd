"""SNIP-based IRP on LeNet-300-100 / Fashion-MNIST (the paper's main labels).

Identical to ``irp_fmnist_lenet300`` (20 geometric rounds x 10 epochs to 99%
sparsity, global scope, full reset, the one shared recipe) except that each
round prunes by SNIP ``|w * dL/dw|`` on 4 batches of 128 training images
instead of by magnitude.

Command (resumable; ``--seed 1`` for the held-out run):

    .venv/bin/python -m experiments.run_irp \\
        --config experiments/configs/irp_snip_fmnist_lenet300.py [--seed 1]

Hardware: 2 CPU cores. Runtime: about 4 minutes per seed. Results:
``experiments/results/irp_snip_fmnist_lenet300[_seed1]/summary.md``.
"""

import ml_collections

from experiments.configs import irp_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = irp_fmnist_lenet300.get_config(quick)
    config.irp.criterion = "snip"
    config.irp.num_score_batches = 4
    return config
