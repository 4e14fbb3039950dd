"""AutoS scorers trained on one IRP run, evaluated on held-out weights and runs.

Command (from the repository root; see the config's docstring for the IRP
runs it reads; resumable):

    .venv/bin/python -m experiments.run_scorer \\
        [--config experiments/configs/scorer_fmnist_lenet300.py] \\
        [--workdir experiments/results/scorer_fmnist_lenet300] [--quick] \\
        [--source LABELS_DIR] [--held-out LABELS_DIR]

Runs ``experiments.scorer_study.run`` (the study: its docstring says what it
trains, evaluates and writes) on the config's ``get_config(quick=...)``;
``--source`` / ``--held-out`` override the labelled IRP runs the config
names. The default work directory is ``experiments/results/<config
name>[/quick]``.
"""

import argparse

from experiments import common, scorer_study

DEFAULT_CONFIG = "experiments/configs/scorer_fmnist_lenet300.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None, help="overrides config.source")
    parser.add_argument("--held-out", default=None, help="overrides config.held_out")


def main(argv: list[str] | None = None) -> None:
    args, config, workdir = common.parse_args(
        __doc__.splitlines()[0], DEFAULT_CONFIG, argv, add_arguments
    )
    for name, value in (("source", args.source), ("held_out", args.held_out)):
        if value is not None:
            setattr(config, name, value)
    print(scorer_study.run(config, workdir).summary)


if __name__ == "__main__":
    main()
