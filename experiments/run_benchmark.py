"""The fair benchmark: every pruning method x sparsity x seed on one target.

Command (see ``experiments/configs/benchmark_fmnist_lenet300.py``; resumable):

    .venv/bin/python -m experiments.run_benchmark \\
        [--config experiments/configs/benchmark_fmnist_lenet300.py] \\
        [--workdir experiments/results/benchmark_fmnist_lenet300] [--quick]

A grid of ``experiments.runner`` on a target (model, dataset): every seed's
network is initialised once and every method prunes that same network; every
mask is then trained with the config's one recipe and the seed's one data key
(only the mask differs). Methods (``experiments.methods``): dense; random,
magnitude, SNIP, GraSP, SynFlow (100 rounds) under one global threshold;
AutoS with the paper's single global threshold (``autos_global``) and with
the learned layer allocation and the within-layer scorer (``autos_learned``),
both fitted on ONE labelled IRP run (``config.source``), never on the target;
IRP of the target seed (checkpointed, resumable), its round nearest each
sparsity rewound to the seed's initialisation and retrained like every other
mask; the sanity checks ``*_shuffled`` (the mask permuted within every layer)
and ``*_reinit`` (the mask on freshly initialised weights).

Writes ``runs.jsonl``, ``irp_seed<S>.jsonl``, ``learners/``, ``table.md``,
``accuracy.png`` and ``layer_density.png`` to the work directory.
"""

from experiments import runner

DEFAULT_CONFIG = "experiments/configs/benchmark_fmnist_lenet300.py"


def main(argv: list[str] | None = None) -> None:
    runner.main(argv, default_config=DEFAULT_CONFIG, description=__doc__)


if __name__ == "__main__":
    main()
