"""``autos_lookahead30_paths`` and its sanity checks on the test seeds of
``benchmark_fmnist_mlp4``: ``variants_test_fmnist_mlp4``'s grid and recipe.

A look-ahead of 30 % of the recipe's epochs beat 10 % for
``autos_lookahead_paths`` in 8 of the 9 validation cells of the three
targets and tied the ninth (``variants_ahead3_*``, seeds 5 and 6). SynFlow
and the other rows of the same seeds are in ``variants_test_fmnist_mlp4``
and ``benchmark_fmnist_mlp4``.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_test30_fmnist_mlp4.py \\
        --workdir experiments/results/variants_test30_fmnist_mlp4
"""

import ml_collections

from experiments.configs import variants_test_fmnist_mlp4

METHODS = (
    "autos_lookahead30_paths", "autos_lookahead30_paths_shuffled",
    "autos_lookahead30_paths_reinit",
)  # fmt: skip


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_test_fmnist_mlp4.get_config(quick)
    config.methods = METHODS
    return config
