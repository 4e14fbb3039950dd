"""Pretrained AutoS: fitted ``AutoSparse`` artifacts shipped with the package.

Each artifact was fitted by ``experiments/build_pretrained.py`` on one of the
project's committed IRP runs (``experiments/results/*/labels``) and is
loaded by name; ``available()`` says what each was trained on. Pruning any
Flax model at initialisation with one of them takes no IRP run::

    autos = pretrained.load("lenet300_fmnist_magnitude")
    mask = autos.prune(key, params, batch, apply_fn=apply_fn, sparsity=0.98)
"""

import importlib.resources
import pathlib
from types import MappingProxyType

from autosparse_jax import autosparse, checkpoint

NAMES = MappingProxyType(
    {
        "lenet300_fmnist_magnitude": (
            "magnitude-IRP of LeNet-300-100 on Fashion-MNIST (seed 0, 20 rounds to "
            "99 %, 10 epochs a round)"
        ),
        "lenet300_fmnist_snip": (
            "SNIP-IRP of LeNet-300-100 on Fashion-MNIST (seed 0, 20 rounds to 99 %, "
            "10 epochs a round)"
        ),
    }
)
"""Read-only: artifact name -> the IRP run it was fitted on."""


def path(name: str) -> pathlib.Path:
    """The directory of the artifact ``name`` inside the installed package.

    Raises:
      ValueError: an unknown name (the message lists the available ones).
    """
    if name not in NAMES:
        raise ValueError(
            f"No pretrained AutoS named {name!r}; available: {sorted(NAMES)} "
            "(pretrained.available() says what each was trained on)."
        )
    root = importlib.resources.files(__name__)
    return pathlib.Path(str(root)) / name


def available() -> dict[str, dict]:
    """``{name: {"description", "provenance"}}`` of every shipped artifact (host).

    ``provenance`` is read from the artifact (source model, dataset, IRP
    config, seed, held-out Spearman); ``None`` if the artifact is missing.

    Example:
      >>> sorted(available())
      ['lenet300_fmnist_magnitude', 'lenet300_fmnist_snip']
    """
    out = {}
    for name, description in NAMES.items():
        try:
            provenance = checkpoint.load_metadata(path(name))["provenance"]
        except FileNotFoundError:
            provenance = None
        out[name] = {"description": description, "provenance": provenance}
    return out


def load(name: str) -> autosparse.AutoSparse:
    """Loads the pretrained artifact ``name`` (checked as ``autosparse.load``).

    Raises:
      ValueError: an unknown name, or an artifact that fails its checks.

    Example:
      >>> autos = load("lenet300_fmnist_magnitude")
    """
    directory = path(name)
    if not directory.is_dir():
        raise ValueError(
            f"The pretrained artifact {name!r} is missing from the package at "
            f"{directory}; rebuild it with python -m experiments.build_pretrained."
        )
    return autosparse.load(directory)
