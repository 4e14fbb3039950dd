"""Leave-one-target-out AutoS on validation seeds (5, 6) of study 2's target.

``mlp300_200_100_50`` / Fashion-MNIST with the grid and methods of
``variants_loto_fmnist_lenet300``: the allocation is fitted on the IRP runs
of LeNet-300-100 on Fashion-MNIST and on MNIST-1D, the within-layer scorers
on the first (the study's usual source), never on an ``mlp300_200_100_50``
run. For time (2 shared CPU cores) it runs four of the six methods, chosen on
the other two targets' validation runs: the two allocations, SynFlow's
counts with AutoS inside, and the look-ahead scorer under the lean
allocation (the better look-ahead twin at 99.5 % there); SynFlow's rows for
these seeds are in ``variants_fmnist_mlp4``.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_loto_fmnist_mlp4.py \\
        --workdir experiments/results/variants_loto_fmnist_mlp4
"""

import ml_collections

from experiments.configs import benchmark_fmnist_mlp4, variants_loto_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_mlp4.get_config(quick)
    variants_loto_fmnist_lenet300.add_loto(config)
    config.methods = (
        "autos_loto", "autos_loto_lean", "synflow+autos", "autos_loto_lean_lookahead",
    )  # fmt: skip
    if quick:
        config.seeds, config.sparsities = config.seeds[:1], (0.99,)
    return config
