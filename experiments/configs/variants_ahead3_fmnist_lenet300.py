"""``variants_fmnist_lenet300`` with a longer look-ahead: 30 % of the recipe's epochs.

The same validation seeds (5, 6), grid and recipe; the look-ahead methods
``autos_lookahead30_paths`` and ``synflow_ahead30`` train 30 % of the
recipe's epochs ahead instead of 10 % (``variants.with_lookahead``), the
scorer learning from the same length on the source.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_ahead3_fmnist_lenet300.py \\
        --workdir experiments/results/variants_ahead3_fmnist_lenet300
"""

import ml_collections

from experiments.configs import variants_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_fmnist_lenet300.get_config(quick)
    config.methods = ("autos_lookahead30_paths", "synflow_ahead30")
    return config
