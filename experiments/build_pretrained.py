"""Builds the pretrained AutoS artifacts shipped in ``autosparse_jax/pretrained``.

Command (about a minute on 2 CPU cores; rewrites the artifacts):

    .venv/bin/python -m experiments.build_pretrained

Each artifact is ``autosparse.fit`` on one committed labelled IRP run with the
settings of the allocation and benchmark studies
(``experiments/configs/allocation_fmnist_lenet300.py``: scorer seed 0, 4
batches of 256 training images, a random 10 % of the weights held out for
checkpoint selection, 2,000 scorer steps), so the magnitude artifact is the
AutoS those studies prune with.
"""

import shutil

from autosparse_jax import autosparse, pretrained
from experiments import common

SOURCES = {
    "lenet300_fmnist_magnitude": "experiments/results/irp_fmnist_lenet300/labels",
    "lenet300_fmnist_snip": "experiments/results/irp_snip_fmnist_lenet300/labels",
}
CONFIG = "experiments/configs/allocation_fmnist_lenet300.py"


def main() -> None:
    config = common.load_config(CONFIG)
    for name, source in SOURCES.items():
        autos = common.fit_autosparse(config, source)
        out = pretrained.path(name)
        shutil.rmtree(out, ignore_errors=True)
        autosparse.save(out, autos)
        print(f"{name}: {autos.provenance['held_out_spearman']} -> {out}")


if __name__ == "__main__":
    main()
