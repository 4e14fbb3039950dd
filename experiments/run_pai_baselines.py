"""Pruning-at-initialisation baselines: every criterion x sparsity x seed, one recipe.

Command (from the repository root; resumable):

    .venv/bin/python -m experiments.run_pai_baselines \\
        [--config experiments/configs/pai_fmnist_lenet300.py] \\
        [--workdir experiments/results/pai_fmnist_lenet300] [--quick]

A grid of ``experiments.runner``: for each seed ``s``, ``jax.random.key(s)``
is split into init, score and data keys; every criterion prunes the same
initial params under one global threshold (``criteria.prune_at_init``,
jitted once per criterion with the sparsity traced) and every mask trains
with the same recipe and data key (only the mask differs); dense is trained
once per seed. Writes ``runs.jsonl``, ``table.md`` and ``accuracy.png`` to
the work directory (see ``runner``).
"""

from experiments import runner

DEFAULT_CONFIG = "experiments/configs/pai_fmnist_lenet300.py"


def main(argv: list[str] | None = None) -> None:
    runner.main(argv, default_config=DEFAULT_CONFIG, description=__doc__)


if __name__ == "__main__":
    main()
