"""Study 3 of the benchmark: dataset transfer to MNIST-1D.

The target is LeNet-300-100 (an MLP: 40 -> 300 -> 100 -> 10, 43k weights) on
MNIST-1D (Greydanus 2020: 40-sample 1-D signals of the ten digits, 4,000
training and 1,000 test examples, generated offline by the ``mnist1d``
package), seeds 2, 3 and 4, with the grid, methods and sanity checks of
``benchmark_fmnist_lenet300``. AutoS (scorers and allocation model) is the one
trained on the Fashion-MNIST LeNet-300-100 IRP run of seed 0: it has never
seen this dataset nor this input size. IRP (for the IRP rows) runs on each
target seed.

Recipe: the Fashion-MNIST one (SGD momentum 0.9, lr 0.05 cosine, batch 128)
for 100 epochs (3,100 steps; 10 epochs are only 310 steps on 4,000 examples).
Chosen on dense accuracy alone, before any pruned run: 50 / 100 / 200 epochs
gave 63.2 / 64.8 / 63.9 % (seeds 2 and 3); the MNIST-1D paper reports 68 %
for its MLP.

Command (resumable):

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/benchmark_mnist1d_lenet300.py

Hardware: 2 CPU cores. Runtime and results: ``experiments/RESULTS.md``.
"""

import ml_collections

from experiments.configs import benchmark_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet300.get_config(quick)
    config.dataset = "mnist1d"
    config.train.num_epochs = 1 if quick else 100
    config.train.eval_batch_size = 1_000
    if quick:
        config.train_split, config.test_split = "train[:2000]", "test[:500]"
    return config
