"""``variants_mnist1d_lenet300`` learned from SNIP-IRP labels (the paper's main labels).

The same validation seeds (5, 6), grid and recipe; the learners come from
the SNIP-IRP run of LeNet-300-100 / Fashion-MNIST (seed 0; seed 1 held out)
instead of the magnitude-IRP run: the paper's global AutoS, AutoS + learned
allocation and AutoS on SynFlow's paths.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_snip_mnist1d_lenet300.py \\
        --workdir experiments/results/variants_snip_mnist1d_lenet300
"""

import ml_collections

from experiments.configs import variants_mnist1d_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_mnist1d_lenet300.get_config(quick)
    config.source = "experiments/results/irp_snip_fmnist_lenet300/labels"
    config.held_out = "experiments/results/irp_snip_fmnist_lenet300_seed1/labels"
    config.source_config = "experiments/configs/irp_snip_fmnist_lenet300.py"
    config.methods = ("autos_global", "autos_learned", "autos_paths")
    return config
