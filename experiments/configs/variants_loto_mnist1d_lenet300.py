"""Leave-one-target-out AutoS on validation seeds (5, 6) of study 3's target.

LeNet-300-100 / MNIST-1D with the grid and methods of
``variants_loto_fmnist_lenet300``: the allocation is fitted on the IRP runs
of LeNet-300-100 and ``mlp300_200_100_50`` on Fashion-MNIST, the within-layer
scorers on the first (the study's usual source), never on an MNIST-1D run.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_loto_mnist1d_lenet300.py \\
        --workdir experiments/results/variants_loto_mnist1d_lenet300
"""

import ml_collections

from experiments.configs import (
    benchmark_mnist1d_lenet300,
    variants_loto_fmnist_lenet300,
)


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_mnist1d_lenet300.get_config(quick)
    variants_loto_fmnist_lenet300.add_loto(config)
    if quick:
        config.seeds, config.sparsities = config.seeds[:1], (0.99,)
    return config
