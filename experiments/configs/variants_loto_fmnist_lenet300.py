"""Leave-one-target-out AutoS on validation seeds (5, 6) of study 1's target.

LeNet-300-100 / Fashion-MNIST, seeds 5 and 6, 98 / 99 / 99.5 %, the
``fmnist_lenet300`` recipe. The learners never see a LeNet-300-100 /
Fashion-MNIST IRP run: the allocation is fitted on the IRP runs (seed 0) of
``mlp300_200_100_50`` / Fashion-MNIST and LeNet-300-100 / MNIST-1D at once,
in scale-free layer terms; the within-layer scorers on the first of them
(``experiments.variants_allocation``). SynFlow runs beside them (its rows
repeat ``variants_fmnist_lenet300``'s).

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_loto_fmnist_lenet300.py \\
        --workdir experiments/results/variants_loto_fmnist_lenet300

Needs the three source runs (``python -m experiments.run_irp --config
experiments/configs/irp_<target>.py`` for ``fmnist_lenet300``,
``fmnist_mlp4`` and ``mnist1d_lenet300``). Hardware: 2 CPU cores.
"""

import ml_collections

from experiments.configs import allocation_fmnist_lenet300, benchmark_fmnist_lenet300

LOTO_METHODS = (
    "synflow", "autos_loto", "autos_loto_lean", "synflow+autos",
    "autos_loto_lookahead", "autos_loto_lean_lookahead",
)  # fmt: skip
LOTO_SOURCES = tuple(
    (f"experiments/results/irp_{name}/labels", f"experiments/configs/irp_{name}.py")
    for name in ("fmnist_lenet300", "fmnist_mlp4", "mnist1d_lenet300")
)
"""Every source run; a study uses those of the other two targets."""


def add_loto(config: ml_collections.ConfigDict) -> None:
    """The leave-one-target-out settings and the validation grid."""
    config.seeds = (5, 6)
    config.sparsities = (0.98, 0.99, 0.995)
    config.methods = LOTO_METHODS
    config.loto_sources = LOTO_SOURCES
    config.source_config = "experiments/configs/irp_fmnist_lenet300.py"
    config.lookahead_fraction = 0.3  # of the recipe's epochs, as the chosen variant
    config.density_plot_sparsity = 0.99


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet300.get_config()
    add_loto(config)
    if quick:  # a smoke test of the same study, not a result
        allocation_fmnist_lenet300.shrink(config)
    return config
