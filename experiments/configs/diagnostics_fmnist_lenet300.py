"""Diagnostics of IRP and the PaI masks on LeNet-300-100 / Fashion-MNIST.

The recipe, scoring and variants' settings of ``variants_fmnist_lenet300``;
the labelled IRP runs of seeds 0 and 1 (``run_irp`` and ``run_irp --seed
1``); the PaI masks' structure on seed 2 at 99 %.

    .venv/bin/python -m experiments.diagnostics \\
        --config experiments/configs/diagnostics_fmnist_lenet300.py
"""

import ml_collections

from experiments.configs import variants_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_fmnist_lenet300.get_config(quick)
    config.irp_config = "experiments/configs/irp_fmnist_lenet300.py"
    config.irp_labels = {
        "0": "experiments/results/irp_fmnist_lenet300/labels",
        "1": "experiments/results/irp_fmnist_lenet300_seed1/labels",
    }
    config.shuffle_sparsities = (0.98, 0.99)
    config.structure_seed = 2
    config.structure_sparsity = 0.99
    config.structure_methods = (
        "synflow", "magnitude", "snip", "autos_learned", "autos_lookahead_paths",
        "synflow_ahead",
    )  # fmt: skip
    config.structure_plot = (
        "IRP (seed 0)", "synflow", "autos_learned", "autos_lookahead_paths",
        "synflow_ahead",
    )  # fmt: skip
    return config
