"""PaI baselines: LeNet-300-100 on Fashion-MNIST at 90 / 98 / 99% sparsity.

Every criterion in ``criteria.CRITERIA`` (random, magnitude, SNIP, GraSP,
SynFlow with 100 rounds) plus dense, seeds 0, 1, 2, all trained with the one
``fmnist_lenet300`` recipe (10 epochs, SGD momentum 0.9, lr 0.05 cosine,
batch 128). Global scope; exponential schedule for multi-round criteria. For
seed ``s`` every method starts from the same initial params and sees the same
data order (only the mask differs); dense is trained once per seed.

Command (from the repository root; resumable, skips runs already in
``<workdir>/runs.jsonl``):

    .venv/bin/python -m experiments.run_pai_baselines \\
        --config experiments/configs/pai_fmnist_lenet300.py \\
        --workdir experiments/results/pai_fmnist_lenet300

Smoke test (1 seed, 1 epoch, 2,000 training and 1,000 test images): add
``--quick`` (writes to ``<workdir>/quick``).

Hardware: 2 CPU cores, no GPU. Runtime: 400 s (48 trainings of ~7.5 s
each; the GraSP rows were re-run after a fix, 72 s).
Measured (final-epoch test accuracy %, mean +- sample std over seeds 0, 1, 2;
full table with per-layer densities in
``experiments/results/pai_fmnist_lenet300/table.md``): dense 89.47 +- 0.14;

    sparsity   random        magnitude     snip          grasp         synflow
    0.90       87.91 +- 0.22 88.28 +- 0.13 88.12 +- 0.32 86.96 +- 0.21 88.32 +- 0.19
    0.98       76.24 +- 8.65 85.75 +- 0.18 84.97 +- 0.62 84.42 +- 0.70 86.53 +- 0.09
    0.99       39.22 +- 3.66 83.07 +- 0.42 81.06 +- 2.10 79.16 +- 1.06 84.49 +- 0.35

No criterion empties a layer. Uniform random keeps ~1% of the 1,000-weight
output layer (7-11 weights), so only 5-6 of the 10 classes have any path from
the input at 99% (8-10 at 98%, hence its spread there).

Scoring data: SNIP and GraSP average their gradients over
``num_score_batches = 4`` batches of ``score_batch_size = 256`` training images
(1,024 images, about 100 per class; the GraSP reference uses 10 per class,
SNIP one mini-batch), drawn once per seed from the seed's score key and shared
by every criterion. SynFlow reads only the input shape; random and magnitude
ignore the data.
"""

import ml_collections

from autosparse_jax import criteria
from experiments.configs import fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = fmnist_lenet300.get_config()
    del config.sparsity  # The sweep's sparsities replace the single level.
    config.train_split = "train"
    config.test_split = "test"
    config.seeds = (0, 1, 2)
    config.sparsities = (0.9, 0.98, 0.99)  # fractions of prunable weights removed
    config.methods = ("dense", *criteria.CRITERIA)  # SynFlow: DEFAULT_ROUNDS
    config.num_score_batches = 4
    config.score_batch_size = 256
    config.density_plot_sparsity = 0.99
    if quick:  # a smoke test of the same study, not a result
        config.seeds = (0,)
        config.sparsities = (0.9, 0.99)
        config.train.num_epochs = 1
        config.train_split = "train[:2000]"
        config.test_split = "test[:1000]"
    return config
