"""AutoS variants on validation seeds (5, 6) of the MNIST-1D study's target.

The same grid, methods and settings as ``variants_fmnist_lenet300`` on this
study's target and recipe; AutoS learns from the LeNet-300-100 /
Fashion-MNIST IRP run of seed 0, never from this target.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_mnist1d_lenet300.py \\
        --workdir experiments/results/variants_mnist1d_lenet300
"""

import ml_collections

from experiments.configs import benchmark_mnist1d_lenet300, variants_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_mnist1d_lenet300.get_config(quick)
    variants_fmnist_lenet300.add_variants(config)
    if quick:
        config.seeds, config.sparsities = config.seeds[:1], (0.99,)
    return config
