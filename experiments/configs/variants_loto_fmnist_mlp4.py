"""Leave-one-target-out AutoS on validation seeds (5, 6) of study 2's target.

``mlp300_200_100_50`` / Fashion-MNIST with the grid and methods of
``variants_loto_fmnist_lenet300``: the allocation is fitted on the IRP runs
of LeNet-300-100 on Fashion-MNIST and on MNIST-1D, the within-layer scorers
on the first (the study's usual source), never on an ``mlp300_200_100_50``
run.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_loto_fmnist_mlp4.py \\
        --workdir experiments/results/variants_loto_fmnist_mlp4
"""

import ml_collections

from experiments.configs import benchmark_fmnist_mlp4, variants_loto_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_mlp4.get_config(quick)
    variants_loto_fmnist_lenet300.add_loto(config)
    if quick:
        config.seeds, config.sparsities = config.seeds[:1], (0.99,)
    return config
