"""Allocation x ranking study: which layers keep how many weights, and which.

Command (see ``experiments/configs/allocation_fmnist_lenet300.py``; resumable):

    .venv/bin/python -m experiments.run_allocation \\
        [--config experiments/configs/allocation_fmnist_lenet300.py] \\
        [--workdir experiments/results/allocation_fmnist_lenet300] [--quick]

A grid of ``experiments.runner`` whose methods are ``<allocation>+<ranking>``
(``experiments.methods.allocated``): the counts per layer from an allocation
(AutoS's global threshold, the allocation model fitted on the source IRP run,
ERK, SNIP's densities, or the source run's own densities as an oracle) and
the top weights inside each layer by a ranking (AutoS, SNIP, magnitude,
random). The AutoS learners are fitted once on the source run and evaluated
on the held-out run (``learners.json``). Writes ``runs.jsonl``, ``table.md``,
``accuracy.png`` and ``layer_density.png`` to the work directory.
"""

from experiments import runner

DEFAULT_CONFIG = "experiments/configs/allocation_fmnist_lenet300.py"


def main(argv: list[str] | None = None) -> None:
    runner.main(argv, default_config=DEFAULT_CONFIG, description=__doc__)


if __name__ == "__main__":
    main()
