"""Architecture transfer: allocation x ranking on a deeper MLP / Fashion-MNIST.

The target is ``mlp300_200_100_50`` (four hidden layers, five prunable
kernels, 320k weights) on Fashion-MNIST; the AutoS scorers and the
allocation model are the ones of ``allocation_fmnist_lenet300``, trained on
the LeNet-300-100 IRP run of seed 0 only (three prunable kernels). A deeper
MLP rather than LeNet-5 / Conv-2: on this 2-core CPU a LeNet-5 epoch takes
7 s (14x LeNet-300-100), so the 147 trainings of this table would take
about 3 hours; the conv targets are left to a GPU run of the same script
(set ``config.model``). There is no IRP run of the target, so no oracle
allocation.

Command (resumable):

    .venv/bin/python -m experiments.run_allocation \\
        --config experiments/configs/allocation_fmnist_mlp4.py \\
        --workdir experiments/results/allocation_fmnist_mlp4

Hardware: 2 CPU cores. Runtime and results: ``experiments/README.md`` and
``experiments/results/allocation_fmnist_mlp4/table.md``.
"""

import ml_collections

from experiments.configs import allocation_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = allocation_fmnist_lenet300.get_config(quick)
    config.model = "mlp300_200_100_50"
    config.methods = tuple(m for m in config.methods if not m.startswith("irp+"))
    return config
