"""AutoS variants on validation seeds of study 1's target (never 2, 3, 4).

LeNet-300-100 / Fashion-MNIST, seeds 5 and 6, 98 / 99 / 99.5 % sparsity, the
``fmnist_lenet300`` recipe; the variants of ``experiments.variants`` beside
SynFlow, magnitude and ``autos_learned``. Variants are chosen here and on the
other validation target (``variants_fmnist_mlp4``), never on the test seeds;
every variant tried is a row of the table.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_fmnist_lenet300.py \\
        --workdir experiments/results/variants_fmnist_lenet300
"""

import ml_collections

from experiments.configs import allocation_fmnist_lenet300, benchmark_fmnist_lenet300

VARIANT_METHODS = (
    "autos_paths", "autos_lookahead", "autos_lookahead_paths",
    "synflow_ahead", "magnitude_ahead",
)  # fmt: skip


def add_variants(config: ml_collections.ConfigDict) -> None:
    """The variants' settings and the validation grid, on a benchmark config."""
    config.seeds = (5, 6)
    config.sparsities = (0.98, 0.99, 0.995)
    config.methods = ("synflow", "magnitude", "autos_learned", *VARIANT_METHODS)
    config.source_config = "experiments/configs/irp_fmnist_lenet300.py"
    config.lookahead_fraction = 0.1  # of the recipe's epochs, at least one
    config.density_plot_sparsity = 0.99


BEST_VARIANT = "autos_lookahead_paths"  # chosen on the validation seeds above
TEST_METHODS = (
    "synflow", BEST_VARIANT, "synflow_ahead",
    f"{BEST_VARIANT}_shuffled", f"{BEST_VARIANT}_reinit",
)  # fmt: skip


def test_grid(config: ml_collections.ConfigDict) -> None:
    """The final grid of a variants config: the study's seeds and sparsities
    (kept from its benchmark config), SynFlow, the best variant, its unlearned
    reference and the best variant's sanity checks."""
    config.seeds = (2, 3, 4)
    config.sparsities = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99, 0.995)
    config.methods = TEST_METHODS


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = benchmark_fmnist_lenet300.get_config()
    add_variants(config)
    if quick:  # a smoke test of the same study, not a result
        allocation_fmnist_lenet300.shrink(config)
    return config
