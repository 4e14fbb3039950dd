"""LeNet-300-100 on Fashion-MNIST: the CPU-sized shared training recipe.

Command (trains dense and with a 95% random mask, 10 epochs each):

    .venv/bin/python -m experiments.demo

Hardware: 2 CPU cores. Runtime: about 30 s per 10-epoch training run.
Expected: dense final-epoch test accuracy about 89% (see experiments/README.md).
Every method trained on this config gets exactly this recipe and these seeds.
"""

import ml_collections


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    del quick  # the recipe has no small variant: each study shrinks its own
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dataset = "fashion_mnist"
    config.model = "lenet300_100"

    config.train = ml_collections.ConfigDict()
    config.train.num_epochs = 10
    config.train.batch_size = 128
    config.train.eval_batch_size = 2_000
    config.train.learning_rate = 0.05
    config.train.momentum = 0.9
    config.train.nesterov = False
    config.train.weight_decay = 0.0
    config.train.schedule = "cosine"  # "cosine", "multistep" or "constant"
    config.train.milestones = ()  # epochs, for "multistep"
    config.train.decay_factor = 0.2

    config.sparsity = 0.0  # fraction of prunable weights removed
    return config
