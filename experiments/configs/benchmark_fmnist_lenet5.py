"""Study 4 of the benchmark: LeNet-5 / Fashion-MNIST, the first conv net.

Every method of ``benchmark_fmnist_lenet300`` on LeNet-5 (61.7k weights:
two 5x5 convolutions and three dense layers), fresh seeds 2, 3 and 4, at 90 /
95 / 98 / 99 / 99.5 % sparsity, with the one ``fmnist_lenet300`` recipe (10
epochs, SGD momentum 0.9, lr 0.05 cosine, batch 128; final-epoch accuracy).
AutoS learns from ONE IRP run of the same architecture: LeNet-5 seed 0
(``irp_fmnist_lenet5``), never from a target seed. No second LeNet-5 IRP run
was made, so the learners have no held-out Spearman here.

Methods: dense; random, magnitude, SNIP, GraSP, SynFlow (100 rounds) under
one global threshold; ``autos_global`` (the paper's scorer, one global
threshold), ``autos_learned`` (the within-layer scorer under the learned
allocation) and the best variant chosen on the MLP validation seeds,
``autos_lookahead30_paths`` (a within-layer scorer on look-ahead features
dealt onto SynFlow's paths), with its unlearned reference
``synflow_ahead30``; IRP of each target seed (23 geometric rounds of the
recipe to 99.5 %: rounds 10, 13, 17, 20 and 23 sit at the grid points); the
sanity checks (shuffled within layers, re-initialised) of ``autos_learned``
and ``autos_lookahead30_paths``. The transfer row (the same AutoS learned
from the LeNet-300-100 run) is ``benchmark_fmnist_lenet5_from_lenet300``.

On CPU every training runs LeNet-5's ``batch_minor`` twin (same params and
gradients); the criteria score the plain model.

Command (resumable; needs ``run_irp --config
experiments/configs/irp_fmnist_lenet5.py`` first):

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/benchmark_fmnist_lenet5.py

Hardware: 2 CPU cores. Runtime and results: ``experiments/RESULTS.md``.
"""

import ml_collections

from experiments.configs import allocation_fmnist_lenet300, benchmark_fmnist_lenet300

METHODS = (
    "dense", "random", "magnitude", "snip", "grasp", "synflow",
    "autos_global", "autos_learned", "autos_lookahead30_paths", "synflow_ahead30",
    "irp",
    "autos_learned_shuffled", "autos_learned_reinit",
    "autos_lookahead30_paths_shuffled", "autos_lookahead30_paths_reinit",
)  # fmt: skip


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet300.get_config()
    config.model = "lenet5"
    config.title = "LeNet-5 on fashion_mnist (AutoS from LeNet-5 seed 0)"
    config.source = "experiments/results/irp_fmnist_lenet5/labels"
    config.source_config = "experiments/configs/irp_fmnist_lenet5.py"
    config.held_out = ""  # no second LeNet-5 IRP run
    config.lookahead_fraction = 0.3  # read by the look-ahead variants' views
    config.sparsities = (0.9, 0.95, 0.98, 0.99, 0.995)
    config.methods = METHODS
    config.density_plot_sparsity = 0.99
    if quick:  # a smoke test of the same study, not a result
        allocation_fmnist_lenet300.shrink(config)
        config.methods = (
            "dense", "synflow", "autos_learned", "autos_lookahead30_paths", "irp",
        )  # fmt: skip
        config.irp.num_rounds = 3
        config.irp.final_sparsity = 0.99
    return config
