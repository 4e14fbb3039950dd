"""Study 2 of the benchmark: architecture transfer to a deeper MLP.

The target is ``mlp300_200_100_50`` (four hidden layers, five prunable
kernels, 321k weights) on Fashion-MNIST, seeds 2, 3 and 4, with everything
else as in ``benchmark_fmnist_lenet300``: the same grid, methods, recipe and
IRP (of the target seed, for the IRP rows), and AutoS trained on the
LeNet-300-100 IRP run of seed 0 only. A deeper MLP rather than LeNet-5 /
Conv-2: on this 2-core CPU a LeNet-5 epoch takes 7 s (14x LeNet-300-100, see
``make bench``), so the ~300 trainings and three 23-round IRP runs of a study
would take about 10 hours; the conv targets need only ``config.model`` set to
``lenet5`` or ``conv2`` on a GPU.

Command (resumable):

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/benchmark_fmnist_mlp4.py

Hardware: 2 CPU cores. Runtime and results: ``experiments/RESULTS.md``.
"""

import ml_collections

from experiments.configs import benchmark_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet300.get_config(quick)
    config.model = "mlp300_200_100_50"
    return config
