"""The best AutoS variant on the test seeds of the ``benchmark_fmnist_mlp4`` study.

Seeds 2 / 3 / 4 and the study's grid (50 to 99.5 %), the variant chosen on
the validation seeds (``variants_fmnist_mlp4``, seeds 5 and 6), SynFlow in the
same run, the unlearned reference ``synflow_ahead`` and the variant's
sanity checks; every other row of the study (SNIP, IRP, ...) is in
``experiments/results/benchmark_fmnist_mlp4`` (same seeds, same recipe).

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_test_fmnist_mlp4.py \\
        --workdir experiments/results/variants_test_fmnist_mlp4
"""

import ml_collections

from experiments.configs import variants_fmnist_lenet300, variants_fmnist_mlp4


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_fmnist_mlp4.get_config(quick)
    if not quick:
        variants_fmnist_lenet300.test_grid(config)
    return config
