"""Checkpoints of pytrees with JSON metadata (the only module that imports Orbax).

A checkpoint is a directory holding ``state/`` (Orbax) and ``metadata.json``.
It is written under a temporary name and renamed into place at the end, so a
process killed at any moment leaves either the complete checkpoint or none at
its final path (a leftover ``*.tmp`` directory is ignored and replaced).
"""

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

_STATE = "state"
_METADATA = "metadata.json"
_TMP_SUFFIX = ".tmp"


def save(
    directory: str | os.PathLike,
    tree: Any,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Saves ``tree`` (arrays; bool masks stay bool) and JSON ``metadata`` (host).

    Typed PRNG keys cannot be stored: save ``jax.random.key_data(key)``.

    Args:
      directory: the checkpoint's path; must not exist yet.
      tree: a pytree of arrays.
      metadata: JSON-serialisable mapping (configs, history, names).

    Raises:
      FileExistsError: ``directory`` already exists (nothing is overwritten).

    Example:
      >>> save("run/round_03", {"params": params, "mask": mask}, metadata={"round": 3})
    """
    directory = os.fspath(directory)
    if os.path.exists(directory):
        raise FileExistsError(
            f"Checkpoint {directory} already exists; checkpoints are never "
            "overwritten. Choose another path or delete it."
        )
    tmp = directory + _TMP_SUFFIX
    shutil.rmtree(tmp, ignore_errors=True)  # Left by a process killed mid-save.
    os.makedirs(tmp)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(os.path.abspath(tmp), _STATE), tree)
    checkpointer.wait_until_finished()
    with open(os.path.join(tmp, _METADATA), "w") as f:
        json.dump(dict(metadata or {}), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, directory)


def restore(directory: str | os.PathLike, target: Any = None) -> Any:
    """Restores the arrays saved in ``directory``, against ``target`` if given (host).

    Args:
      directory: a path written by ``save``.
      target: a pytree of arrays or ``jax.ShapeDtypeStruct`` with the saved
        structure, shapes and dtypes (checked); ``None`` restores the saved
        structure as nested dicts and lists.

    Returns:
      The restored pytree.

    Raises:
      FileNotFoundError: no complete checkpoint at ``directory``.
    """
    path = os.path.join(os.path.abspath(os.fspath(directory)), _STATE)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No checkpoint at {directory} (missing {path}).")
    if target is None:
        return ocp.StandardCheckpointer().restore(path)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return ocp.StandardCheckpointer().restore(path, abstract)


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata saved with the checkpoint in ``directory`` (host)."""
    path = os.path.join(os.fspath(directory), _METADATA)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint metadata at {path}.")
    with open(path) as f:
        return json.load(f)


def checksum(tree: Any, metadata: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of a tree's arrays (paths, dtypes, shapes, bytes) and ``metadata``.

    Leaves are taken in the order of their ``/``-joined key paths, so a tree
    restored as nested dicts (``restore`` without a target) hashes like the
    tree that was saved; ``metadata`` enters as canonical JSON.

    Example:
      >>> meta["checksum"] = checksum(tree, meta)   # before save
      >>> assert checksum(restore(path), meta) == saved   # after restore
    """
    items = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    named = sorted(
        (jax.tree_util.keystr(p, simple=True, separator="/"), np.asarray(x))
        for p, x in items
    )
    digest = hashlib.sha256()
    for name, x in named:
        digest.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(json.dumps(dict(metadata or {}), sort_keys=True).encode())
    return digest.hexdigest()
