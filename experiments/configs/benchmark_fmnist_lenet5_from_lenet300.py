"""Study 4's transfer row: LeNet-5 pruned by AutoS learned on LeNet-300-100.

``benchmark_fmnist_lenet5``'s seeds, grid and recipe, with the AutoS rows
(``autos_global``, ``autos_learned``, ``autos_lookahead30_paths``) learned
from the LeNet-300-100 / Fashion-MNIST IRP run of seed 0 (the MLP studies'
source, ``irp_fmnist_lenet300``) instead of LeNet-5's: an architecture
transfer from an MLP to a conv net. Every other row of the same seeds is in
``experiments/results/benchmark_fmnist_lenet5``.

Command (resumable):

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/benchmark_fmnist_lenet5_from_lenet300.py \\
        --workdir experiments/results/benchmark_fmnist_lenet5_from_lenet300

Hardware: 2 CPU cores. Runtime and results: ``experiments/RESULTS.md``.
"""

import ml_collections

from experiments.configs import benchmark_fmnist_lenet5

METHODS = ("autos_global", "autos_learned", "autos_lookahead30_paths")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet5.get_config(quick)
    config.title = "LeNet-5 on fashion_mnist (AutoS from LeNet-300-100 seed 0)"
    config.source = "experiments/results/irp_fmnist_lenet300/labels"
    config.source_config = "experiments/configs/irp_fmnist_lenet300.py"
    config.held_out = "experiments/results/irp_fmnist_lenet300_seed1/labels"
    config.methods = METHODS
    return config
