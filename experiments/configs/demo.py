"""The main job (``make demo``): AutoSparse end to end on Fashion-MNIST.

Two parts, both with the ``fmnist_lenet300`` model and data:

* ``irp``: a short IRP run of LeNet-300-100, seed 0 (12 geometric rounds of 4
  epochs each to 99 %, magnitude, full reset to initialisation), whose
  survival counts are the AutoS training labels;
* ``benchmark``: a fresh LeNet-300-100 (seed 1) pruned at 90 and 99 % by
  AutoS (the paper's global threshold, and the learned layer allocation with
  the within-layer scorer), SynFlow (the strongest baseline of the committed
  studies), SNIP, magnitude and random, each mask trained with the shared
  10-epoch recipe, plus dense.

Command: ``make demo`` (or ``.venv/bin/python -m experiments.demo``).
Hardware: 2 CPU cores; runtime about 4 minutes (see ``experiments/README.md``).
``quick``: 2 IRP rounds of 1 epoch, and the benchmark at its smoke-test size
(one epoch on small splits).
"""

import ml_collections

from experiments.configs import benchmark_fmnist_lenet300, irp_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    irp = irp_fmnist_lenet300.get_config(quick)
    del irp.baselines
    irp.irp.num_rounds = 2 if quick else 12
    irp.irp.epochs_per_round = 1 if quick else 4

    bench = benchmark_fmnist_lenet300.get_config(quick)
    del bench.irp, bench.sanity_min_sparsity
    bench.seeds = (1,)
    bench.sparsities = (0.9, 0.99)
    bench.methods = (
        "dense", "autos_global", "autos_learned", "synflow", "snip", "magnitude",
        "random",
    )  # fmt: skip
    bench.density_plot_sparsity = 0.99
    bench.held_out = ""  # one IRP run only: no held-out evaluation of the scorers
    bench.source = ""  # set by the demo to <workdir>/irp/labels

    config = ml_collections.ConfigDict()
    config.irp = irp
    config.benchmark = bench
    return config
