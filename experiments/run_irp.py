"""Iterative rewind pruning (IRP) from a config, with dense and random baselines.

Command (from the repository root; resumable):

    .venv/bin/python -m experiments.run_irp \\
        [--config experiments/configs/irp_fmnist_lenet300.py] \\
        [--workdir experiments/results/irp_fmnist_lenet300] [--seed S] [--quick]

Runs ``experiments.irp_study.run`` (the study: its docstring says what it
trains, times and writes) on the config's ``get_config(quick=...)``.
``--quick`` is the config's smoke-test variant (a check that the code runs,
not a result). ``--seed S`` overrides ``config.seed``. The default work
directory is ``experiments/results/irp_<config name>`` (the prefix is not
doubled: ``irp_fmnist_lenet300.py`` writes to ``irp_fmnist_lenet300``), then
``/quick`` with ``--quick``, then ``_seed{S}`` with ``--seed S``.
"""

import argparse
import os

from experiments import common, irp_study

DEFAULT_CONFIG = "experiments/configs/irp_fmnist_lenet300.py"


def default_workdir(config_path: str, quick: bool) -> str:
    """``experiments/results/irp_<config name>[/quick]``."""
    name = os.path.splitext(os.path.basename(config_path))[0]
    name = name if name.startswith("irp_") else f"irp_{name}"
    return os.path.join("experiments/results", name, *(["quick"] if quick else []))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=None, help="overrides config.seed (new workdir)"
    )


def main(argv: list[str] | None = None) -> None:
    args, config, _ = common.parse_args(
        __doc__.splitlines()[0], DEFAULT_CONFIG, argv, add_arguments
    )
    workdir = args.workdir or default_workdir(args.config, args.quick)
    if args.seed is not None:
        config.seed = args.seed
        workdir = args.workdir or f"{workdir}_seed{args.seed}"
    study = irp_study.run(config, workdir)
    print(study.summary)
    print(f"Wrote {workdir}/summary.md and irp_curve.png")


if __name__ == "__main__":
    main()
