"""Allocation x ranking on LeNet-300-100 / Fashion-MNIST, fresh seeds.

How many weights each layer keeps (the allocation: AutoS's own global
threshold, the allocation model fitted on the seed-0 IRP run, ERK, SNIP's
layer densities, or IRP's own densities as an oracle) against which weights
it keeps (the ranking within each layer: AutoS, SNIP, magnitude, random), at
98, 99 and 99.5% sparsity. The networks are fresh initialisations (seeds 2, 3
and 4; IRP used 0 and 1), every mask is trained with the one
``fmnist_lenet300`` recipe, and seed ``s`` derives its keys as
``run_pai_baselines`` does, so the global-SNIP/magnitude/random rows repeat
that study's numbers for the same seed.

AutoS rankings (both trained here on the seed-0 labels, checkpoint selected on
a random 10% of its weights): with ``allocation = "global"`` the paper's
scorer (MSE on raw (w0, g0), one global threshold); with every other
allocation the within-layer scorer (MSE on the label's quantile within its
layer, layer-normalised (w0, g0)). The IRP oracle uses the seed-0 round
nearest each sparsity (none exists at 99.5%: that cell is empty).

Needs ``python -m experiments.run_irp`` (seed 0) and ``--seed 1`` (for the
within-layer Spearman comparison). Command (resumable):

    .venv/bin/python -m experiments.run_allocation \\
        [--config experiments/configs/allocation_fmnist_lenet300.py] [--quick]

Hardware: 2 CPU cores. Runtime and results: ``experiments/README.md`` and
``experiments/results/allocation_fmnist_lenet300/table.md``.
"""

import ml_collections

from experiments.configs import fmnist_lenet300

ALLOCATIONS = ("global", "learned", "erk", "snip", "irp")
RANKINGS = ("autos", "snip", "magnitude", "random")


def grid_methods(allocations, rankings) -> tuple[str, ...]:
    """Dense, then every ``<allocation>+<ranking>`` (allocation-major)."""
    return ("dense", *(f"{a}+{r}" for a in allocations for r in rankings))


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = fmnist_lenet300.get_config()
    del config.sparsity
    config.train_split = "train"
    config.test_split = "test"
    config.seeds = (2, 3, 4)
    config.sparsities = (0.98, 0.99, 0.995)
    config.methods = grid_methods(ALLOCATIONS, RANKINGS)
    config.source = "experiments/results/irp_fmnist_lenet300/labels"
    config.held_out = "experiments/results/irp_fmnist_lenet300_seed1/labels"
    config.oracle_tolerance = 0.002  # max |IRP round sparsity - target|
    config.num_score_batches = 4  # as the PaI study
    config.score_batch_size = 256
    config.scorer_seed = 0
    config.validation_fraction = 0.1
    config.scorer_num_steps = 2_000  # scorer.PRESETS["default"]
    config.density_plot_sparsity = 0.99
    if quick:  # a smoke test of the same study, not a result
        shrink(config)
        config.methods = ("dense", "global+autos", "learned+random", "irp+autos")
    return config


def shrink(config: ml_collections.ConfigDict) -> None:
    """The smoke-test size of a grid study: one seed, one epoch, small splits."""
    config.seeds = config.seeds[:1]
    config.sparsities = (0.99,)
    config.density_plot_sparsity = 0.99
    config.train.num_epochs = 1
    config.train_split = "train[:2000]"
    config.test_split = "test[:1000]"
    config.scorer_num_steps = 250  # a multiple of the scorer's eval_every
