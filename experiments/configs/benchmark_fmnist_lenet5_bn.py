"""Study 5 of the benchmark: LeNet-5 with BatchNorm / Fashion-MNIST.

``benchmark_fmnist_lenet5``'s grid (90 / 95 / 98 / 99 / 99.5 %), seeds 2,
3 and 4, recipe and methods on ``lenet5_bn`` (BatchNorm after each of the
two convolutions), trained on the first 20,000 training images so that the
study fits about two hours on 2 CPU cores (tested on the full test set).
AutoS learns from the IRP run of ``lenet5_bn`` seed 0 on the same images
(``irp_fmnist_lenet5_bn``). Every criterion scores the network with
BatchNorm in inference mode (its initial running statistics: mean 0,
variance 1), as SynFlow prescribes and the AutoS features use; training
uses batch statistics. Every run's BatchNorm params and running statistics
start at their initial values (scale 1, offset 0, mean 0, variance 1),
IRP's rewound rounds included. To save time the sanity
checks are those of the best variant only (``autos_learned``'s are in
``benchmark_fmnist_lenet5``).

Command (resumable; needs ``run_irp --config
experiments/configs/irp_fmnist_lenet5_bn.py`` first):

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/benchmark_fmnist_lenet5_bn.py

Hardware: 2 CPU cores. Runtime and results: ``experiments/RESULTS.md``.
"""

import ml_collections

from experiments.configs import benchmark_fmnist_lenet5, irp_fmnist_lenet5_bn

METHODS = tuple(
    m for m in benchmark_fmnist_lenet5.METHODS if not m.startswith("autos_learned_")
)


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet5.get_config(quick)
    config.model = "lenet5_bn"
    config.title = "LeNet-5-BN on fashion_mnist[:20000] (AutoS from LeNet-5-BN seed 0)"
    config.source = "experiments/results/irp_fmnist_lenet5_bn/labels"
    config.source_config = "experiments/configs/irp_fmnist_lenet5_bn.py"
    if not quick:
        config.train_split = irp_fmnist_lenet5_bn.TRAIN_SPLIT
        config.methods = METHODS
    return config
