"""Checkpoints of pytrees with JSON metadata (the only module that imports Orbax).

A checkpoint is a directory holding ``state/`` (Orbax) and ``metadata.json``.
It is written under a temporary name and renamed into place at the end, so a
process killed at any moment leaves either the complete checkpoint or none at
its final path (a leftover ``*.tmp`` directory is ignored and replaced).
``metadata.json`` also holds a SHA-256 ``checksum`` of the arrays and the
metadata, which ``restore`` verifies: a damaged checkpoint raises
``CorruptCheckpointError`` instead of loading. Checkpoints saved before
checksums existed still load, with a warning that they are unverified.
"""

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

_STATE = "state"
_METADATA = "metadata.json"
_TMP_SUFFIX = ".tmp"
_CHECKSUM = "checksum"  # the metadata key save reserves
_MAX_LISTED = 5  # layout differences named in one error
_MAX_BRIEF = 400  # characters of a storage error quoted in ours


class CorruptCheckpointError(ValueError):
    """A checkpoint whose files cannot be read or do not match their checksum.

    Attributes:
      path: the checkpoint directory (or its ``metadata.json``).
      problem: what is wrong, e.g. ``"its checksum does not match ..."``.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(
            f"Checkpoint {self.path} is damaged: {problem} It cannot be used; "
            "restore it from a copy or write it again."
        )


def _name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _host_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as it reads back from JSON (keys str, tuples lists)."""
    return json.loads(json.dumps(dict(metadata or {})))


def save(
    directory: str | os.PathLike,
    tree: Any,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Saves ``tree`` (arrays; bool masks stay bool) and JSON ``metadata`` (host).

    ``metadata.json`` gets a ``checksum`` of the tree and the metadata
    (``checksum``), which ``restore`` verifies. Typed PRNG keys cannot be
    stored: save ``jax.random.key_data(key)``.

    Args:
      directory: the checkpoint's path; must not exist yet.
      tree: a pytree of arrays.
      metadata: JSON-serialisable mapping (configs, history, names); the key
        ``"checksum"`` is reserved.

    Raises:
      FileExistsError: ``directory`` already exists (nothing is overwritten).
      ValueError: ``metadata`` has a ``"checksum"`` key.

    Example:
      >>> save("run/round_03", {"params": params, "mask": mask}, metadata={"round": 3})
    """
    directory = os.fspath(directory)
    if os.path.exists(directory):
        raise FileExistsError(
            f"Checkpoint {directory} already exists; checkpoints are never "
            "overwritten. Choose another path or delete it."
        )
    meta = _host_metadata(metadata)
    if _CHECKSUM in meta:
        raise ValueError(
            f"The metadata key {_CHECKSUM!r} is reserved for the checksum that "
            "save computes; rename that key."
        )
    meta[_CHECKSUM] = checksum(tree, meta)
    tmp = directory + _TMP_SUFFIX
    shutil.rmtree(tmp, ignore_errors=True)  # Left by a process killed mid-save.
    os.makedirs(tmp)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(os.path.abspath(tmp), _STATE), tree)
    checkpointer.wait_until_finished()
    with open(os.path.join(tmp, _METADATA), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, directory)


def _read_metadata(directory: str) -> dict[str, Any]:
    """``metadata.json`` with its checksum; a bad file is a corrupt checkpoint."""
    path = os.path.join(directory, _METADATA)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint metadata at {path}.")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(
            path, f"metadata.json is truncated or corrupt (not valid JSON: {err})."
        ) from err
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(
            path, f"metadata.json holds a {type(meta).__name__}, not a JSON object."
        )
    return meta


def _layout_problems(saved: Any, abstract: Any) -> list[str]:
    """How the saved arrays' paths, shapes and dtypes differ from ``abstract``."""
    have = {
        _name(p): (tuple(x.shape), np.dtype(x.dtype))
        for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]
    }
    want = {
        _name(p): (tuple(x.shape), np.dtype(x.dtype))
        for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]
    }
    problems = [f"{n}: not in the checkpoint" for n in sorted(set(want) - set(have))]
    problems += [
        f"{n}: saved, not in the target" for n in sorted(set(have) - set(want))
    ]
    for n in sorted(set(have) & set(want)):
        if have[n] != want[n]:
            (s_shape, s_dtype), (t_shape, t_dtype) = have[n], want[n]
            problems.append(
                f"{n}: saved {s_dtype}{list(s_shape)}, target {t_dtype}{list(t_shape)}"
            )
    return problems


def _check_layout(directory: str, checkpointer, path: str, target: Any) -> Any:
    """The abstract ``target``, after checking it against the saved layout."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        item = checkpointer.metadata(path).item_metadata
        saved = None if item is None else item.tree
        if saved is None:  # Orbax logs why; reading the arrays raises it.
            saved = checkpointer.restore(path)
    except Exception as err:  # Orbax/TensorStore errors of a damaged file.
        raise CorruptCheckpointError(
            directory, f"its arrays cannot be read ({_brief(err)})."
        ) from err
    problems = _layout_problems(saved, abstract)
    if problems:
        more = len(problems) - _MAX_LISTED
        listed = "; ".join(problems[:_MAX_LISTED]) + (
            f"; {more} more" if more > 0 else ""
        )
        raise ValueError(
            f"Checkpoint {directory} does not match the target's structure, shapes "
            f"or dtypes ({listed}); nothing is cast. Restore against a target "
            "with the saved layout, or with target=None to get what was saved."
        )
    return abstract


def _brief(err: BaseException) -> str:
    """The first line of ``err`` without TensorStore's spec (it stays chained)."""
    lines = str(err).strip().splitlines()
    text = (lines[0] if lines else "").split(" [tensorstore_spec=")[0]
    if len(text) > _MAX_BRIEF:
        text = text[: _MAX_BRIEF - 3] + "..."
    return f"{type(err).__name__}: {text}"


def restore(
    directory: str | os.PathLike,
    target: Any = None,
    *,
    require_checksum: bool = False,
) -> Any:
    """Restores the arrays saved in ``directory``, against ``target`` if given (host).

    The arrays and metadata are checked against the checksum ``save`` stored.
    A checkpoint saved before checksums existed loads with a warning, or is
    refused with ``require_checksum``.

    Args:
      directory: a path written by ``save``.
      target: a pytree of arrays or ``jax.ShapeDtypeStruct`` with the saved
        structure, shapes and dtypes (checked: nothing is cast); ``None``
        restores the saved structure as nested dicts and lists.
      require_checksum: refuse a checkpoint without a checksum.

    Returns:
      The restored pytree.

    Raises:
      FileNotFoundError: no checkpoint at ``directory``.
      CorruptCheckpointError: files missing, unreadable or truncated, or
        contents that do not match the checksum.
      ValueError: ``target`` has another structure, shapes or dtypes.

    Example:
      >>> tree = restore("run/round_03", {"params": params, "mask": mask})
    """
    directory = os.fspath(directory)
    path = os.path.join(os.path.abspath(directory), _STATE)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint at {directory} (missing {path}).")
    if not os.path.isdir(path):
        raise CorruptCheckpointError(directory, f"its arrays ({path}) are missing.")
    try:
        meta = _read_metadata(directory)
    except FileNotFoundError as err:
        raise CorruptCheckpointError(
            directory, "its metadata.json is missing."
        ) from err
    expected = meta.pop(_CHECKSUM, None)
    if expected is None:
        if require_checksum:
            raise CorruptCheckpointError(
                directory, "it has no checksum, so its contents cannot be verified."
            )
        warnings.warn(
            f"Checkpoint {directory} has no checksum (it was saved before "
            "checkpoints carried one); its contents are loaded unverified.",
            stacklevel=2,
        )
    checkpointer = ocp.StandardCheckpointer()
    abstract = None
    if target is not None:
        abstract = _check_layout(directory, checkpointer, path, target)
    try:
        if abstract is None:
            tree = checkpointer.restore(path)
        else:
            tree = checkpointer.restore(path, abstract)
    except Exception as err:  # Orbax/TensorStore errors of a damaged file.
        raise CorruptCheckpointError(
            directory, f"its arrays cannot be read ({_brief(err)})."
        ) from err
    if expected is not None and checksum(tree, meta) != expected:
        raise CorruptCheckpointError(
            directory,
            "its checksum does not match its contents (the files were changed "
            "or truncated after it was saved).",
        )
    return tree


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata saved with the checkpoint in ``directory`` (host).

    Returns the mapping given to ``save`` (as JSON reads it back), without the
    checksum.

    Raises:
      FileNotFoundError: no ``metadata.json`` in ``directory``.
      CorruptCheckpointError: ``metadata.json`` is truncated or not JSON.
    """
    meta = _read_metadata(os.fspath(directory))
    meta.pop(_CHECKSUM, None)
    return meta


def checksum(tree: Any, metadata: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of a tree's arrays (paths, dtypes, shapes, bytes) and ``metadata``.

    Leaves are taken in the order of their ``/``-joined key paths, so a tree
    restored as nested dicts (``restore`` without a target) hashes like the
    tree that was saved; ``metadata`` enters as canonical JSON. ``save``
    stores it and ``restore`` checks it.

    Example:
      >>> assert checksum(restore(path), load_metadata(path)) == checksum(tree, meta)
    """
    items = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    named = sorted((_name(p), np.asarray(x)) for p, x in items)
    digest = hashlib.sha256()
    for name, x in named:
        digest.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(json.dumps(dict(metadata or {}), sort_keys=True).encode())
    return digest.hexdigest()
