"""Tests for autosparse_jax.checkpoint: round trip, atomic save, clear errors."""

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
