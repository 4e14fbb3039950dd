"""Tests for autosparse_jax.checkpoint: round trip, atomic save, errors, checksum."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_equal

from autosparse_jax import checkpoint


def _tree():
    return {
        "params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)},
        "mask": {"w": jnp.array([[True, False, True], [False, True, True]])},
        "counts": jnp.array([0, 3, 5], jnp.int32),
        "key": jax.random.key_data(jax.random.key(7)),
    }


def test_round_trip_keeps_values_and_dtypes(tmp_path):
    path = tmp_path / "round_00"
    checkpoint.save(path, _tree(), metadata={"round": 0, "history": [{"a": 1.5}]})
    restored = checkpoint.restore(path, _tree())
    assert_trees_all_equal(restored, _tree())
    assert restored["mask"]["w"].dtype == np.bool_
    assert checkpoint.load_metadata(path) == {"round": 0, "history": [{"a": 1.5}]}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tree())
    assert_trees_all_equal(checkpoint.restore(path, abstract), _tree())


def test_existing_checkpoint_is_never_overwritten(tmp_path):
    path = tmp_path / "ckpt"
    checkpoint.save(path, _tree(), metadata={"v": 1})
    with pytest.raises(FileExistsError, match="never overwritten"):
        checkpoint.save(path, {"x": jnp.ones(2)}, metadata={"v": 2})
    assert checkpoint.load_metadata(path) == {"v": 1}


def test_leftover_temporary_directory_is_replaced(tmp_path):
    path = tmp_path / "ckpt"
    os.makedirs(str(path) + ".tmp/state")  # as left by a process killed mid-save
    checkpoint.save(path, _tree())
    assert not os.path.exists(str(path) + ".tmp")
    assert_trees_all_equal(checkpoint.restore(path, _tree()), _tree())


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.restore(tmp_path / "nope", _tree())
    with pytest.raises(FileNotFoundError, match="metadata"):
        checkpoint.load_metadata(tmp_path / "nope")


# ------------------------------------------------------------------ checksum


def _checksum_tree():
    return {
        "b": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "a": np.array([True, False]),
    }


def test_checksum_of_a_restored_tree_equals_the_saved_one(tmp_path):
    meta = {"kind": "test", "round": 2}
    saved = checkpoint.checksum(_tree(), meta)
    assert len(saved) == 64 and int(saved, 16) >= 0  # SHA-256 hex digest
    path = tmp_path / "ckpt"
    checkpoint.save(path, _tree(), metadata=meta)
    restored = checkpoint.restore(path)  # nested dicts, no target
    assert checkpoint.checksum(restored, checkpoint.load_metadata(path)) == saved


def test_checksum_ignores_dict_insertion_order_and_metadata_key_order():
    tree = _checksum_tree()
    reordered = {"a": tree["a"], "b": tree["b"]}
    assert checkpoint.checksum(tree, {"x": 1, "y": [2, 3]}) == checkpoint.checksum(
        reordered, {"y": [2, 3], "x": 1}
    )
    assert checkpoint.checksum(tree) == checkpoint.checksum(tree, {})


def test_checksum_changes_with_one_byte_of_an_array():
    tree = _checksum_tree()
    changed = {"a": tree["a"], "b": {"w": tree["b"]["w"].copy()}}
    raw = changed["b"]["w"].reshape(-1).view(np.uint8)  # a view of its bytes
    raw[5] ^= 1  # one bit of one float
    assert checkpoint.checksum(changed) != checkpoint.checksum(tree)


@pytest.mark.parametrize(
    "other",
    [
        {"a": np.array([True, True]), "b": {"w": np.arange(6.0).reshape(2, 3)}},
        {"a": np.array([True, False]), "b": {"w": np.arange(6.0).reshape(3, 2)}},
        {"a": np.array([True, False]), "c": {"w": np.arange(6.0).reshape(2, 3)}},
    ],
    ids=["value", "shape", "path"],
)
def test_checksum_changes_with_values_shapes_and_paths(other):
    base = {"a": np.array([True, False]), "b": {"w": np.arange(6.0).reshape(2, 3)}}
    assert checkpoint.checksum(other) != checkpoint.checksum(base)


def test_checksum_changes_with_the_dtype_and_the_metadata():
    tree = _checksum_tree()
    as_float64 = {"a": tree["a"], "b": {"w": tree["b"]["w"].astype(np.float64)}}
    assert checkpoint.checksum(as_float64) != checkpoint.checksum(tree)
    meta = {"kind": "test", "round": 2}
    assert checkpoint.checksum(tree, meta) != checkpoint.checksum(
        tree, {**meta, "round": 3}
    )
