"""Study 1 of the benchmark: LeNet-300-100 / Fashion-MNIST, fresh seeds.

The same architecture and dataset as the one IRP run AutoS learns from
(``experiments/results/irp_fmnist_lenet300/labels``, seed 0), on networks
that never saw IRP: seeds 2, 3 and 4 (seed 1 is the held-out IRP run the
scorers are evaluated on). Sparsity grid 50 / 70 / 90 / 95 / 98 / 99 / 99.5 %;
every method of ``run_benchmark`` plus the AutoS sanity checks (at 90 % and
above, where masks differ most; below that every method is within noise of
dense) with the ``fmnist_lenet300`` recipe (10 epochs, SGD momentum 0.9, lr
0.05 cosine, batch 128). IRP of each target seed: 23 geometric rounds of that
recipe to 99.5 % (each round keeps 79.45 % of the remaining weights, so rounds
3, 5, 10, 13, 17, 20 and 23 sit at 49.9, 68.4, 90.0, 95.0, 98.0, 99.0 and
99.5 %).

Command (resumable; needs ``python -m experiments.run_irp`` and
``python -m experiments.run_irp --seed 1`` first):

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/benchmark_fmnist_lenet300.py

Hardware: 2 CPU cores. Runtime and results: ``experiments/RESULTS.md``.
"""

import ml_collections

from experiments.configs import allocation_fmnist_lenet300


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = allocation_fmnist_lenet300.get_config()
    del config.oracle_tolerance
    config.seeds = (2, 3, 4)
    config.sparsities = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99, 0.995)
    config.methods = (
        "dense", "random", "magnitude", "snip", "grasp", "synflow",
        "autos_global", "autos_learned", "irp",
        "autos_global_shuffled", "autos_global_reinit",
        "autos_learned_shuffled", "autos_learned_reinit",
    )  # fmt: skip
    config.sanity_min_sparsity = 0.9
    config.density_plot_sparsity = 0.98

    # Maps 1:1 to autosparse_jax.irp.IRPConfig: the IRP run of every target seed.
    config.irp = ml_collections.ConfigDict()
    config.irp.num_rounds = 23
    config.irp.final_sparsity = 0.995
    config.irp.schedule = "geometric"
    config.irp.epochs_per_round = config.train.get_ref("num_epochs")
    config.irp.criterion = "magnitude"
    config.irp.rewind_step = 0
    config.irp.reset = "full"
    config.irp.scope = "global"
    config.irp.batch_size = config.train.get_ref("batch_size")
    config.irp.eval_batch_size = config.train.get_ref("eval_batch_size")
    config.irp.num_score_batches = 1

    if quick:  # a smoke test of the same study, not a result
        allocation_fmnist_lenet300.shrink(config)
        config.methods = (
            "dense", "random", "synflow", "autos_global", "autos_learned", "irp",
            "autos_learned_shuffled",
        )  # fmt: skip
        config.irp.num_rounds = 3
        config.irp.final_sparsity = 0.99
    return config
