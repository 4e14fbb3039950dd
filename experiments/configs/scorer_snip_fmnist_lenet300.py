"""AutoS scorers on SNIP-based IRP labels (the paper's main labels).

``scorer_fmnist_lenet300`` with the labels of ``irp_snip_fmnist_lenet300``
(seed 0 to train, seed 1 held out), without the slow ``"paper"`` preset
(equal to the default on the magnitude labels at 45x the training time).

Command (after the two IRP runs of ``irp_snip_fmnist_lenet300``):

    .venv/bin/python -m experiments.run_scorer \\
        --config experiments/configs/scorer_snip_fmnist_lenet300.py \\
        --workdir experiments/results/scorer_snip_fmnist_lenet300

Hardware: 2 CPU cores. Results:
``experiments/results/scorer_snip_fmnist_lenet300/summary.md``.
"""

import ml_collections

from experiments.configs import scorer_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = scorer_fmnist_lenet300.get_config(quick)
    config.source = "experiments/results/irp_snip_fmnist_lenet300/labels"
    config.held_out = "experiments/results/irp_snip_fmnist_lenet300_seed1/labels"
    if "paper preset/paper" in config.scorers:  # not in the quick variant
        del config.scorers["paper preset/paper"]
    return config
