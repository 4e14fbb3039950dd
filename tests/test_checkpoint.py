"""Tests for autosparse_jax.checkpoint: round trip, atomic save, errors, checksum."""

import glob
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_equal

from autosparse_jax import checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]


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


# ------------------------------------------------- integrity checks on restore


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ckpt"
    checkpoint.save(path, _tree(), metadata={"round": 1})
    return path


def _edit_metadata(path, edit):
    meta = json.loads((path / "metadata.json").read_text())
    edit(meta)
    (path / "metadata.json").write_text(json.dumps(meta))


def test_save_stores_a_checksum_that_load_metadata_leaves_out(saved):
    raw = json.loads((saved / "metadata.json").read_text())
    assert raw["checksum"] == checkpoint.checksum(_tree(), {"round": 1})
    assert checkpoint.load_metadata(saved) == {"round": 1}
    with pytest.raises(ValueError, match="'checksum' is reserved"):
        checkpoint.save(saved.parent / "other", _tree(), metadata={"checksum": 1})


def test_edited_metadata_fails_the_checksum(saved):
    _edit_metadata(saved, lambda meta: meta.update(round=2))
    with pytest.raises(
        checkpoint.CorruptCheckpointError,
        match=rf"Checkpoint {saved} is damaged: its checksum does not match",
    ):
        checkpoint.restore(saved, _tree())


def test_other_arrays_in_a_readable_store_fail_the_checksum(saved, tmp_path):
    other = {**_tree(), "counts": jnp.array([0, 3, 4], jnp.int32)}
    checkpoint.save(tmp_path / "other", other, metadata={"round": 1})
    shutil.rmtree(saved / "state")
    shutil.copytree(tmp_path / "other" / "state", saved / "state")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum does not"):
        checkpoint.restore(saved)  # without a target too
    assert_trees_all_equal(checkpoint.restore(tmp_path / "other", other), other)


def test_flipped_bytes_in_an_array_file_are_refused(tmp_path):
    # Random floats: Orbax compresses arange-like arrays beyond recognition.
    tree = {"w": np.random.default_rng(0).standard_normal(64).astype(np.float32)}
    path = tmp_path / "ckpt"
    checkpoint.save(path, tree)
    needle = tree["w"].tobytes()
    files = [
        p
        for p in (path / "state").rglob("*")
        if p.is_file() and needle in p.read_bytes()
    ]
    assert files, "the array's bytes are in no file under state/"
    for file in files:
        data = bytearray(file.read_bytes())
        data[data.index(needle) + 5] ^= 0x01  # one bit of one float
        file.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CorruptCheckpointError, match=str(path)) as err:
        checkpoint.restore(path, tree)
    # Orbax's OCDBT store checks a CRC-32C of each file: its error, chained.
    assert "its arrays cannot be read" in err.value.problem
    assert err.value.__cause__ is not None


def test_truncated_metadata_is_refused_naming_the_file(saved):
    path = saved / "metadata.json"
    path.write_text(path.read_text()[:20])
    for load in (checkpoint.load_metadata, checkpoint.restore):
        with pytest.raises(
            checkpoint.CorruptCheckpointError,
            match=rf"{path} is damaged: metadata.json is truncated",
        ):
            load(saved)


def test_missing_arrays_are_a_damaged_checkpoint(saved):
    shutil.rmtree(saved / "state")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="arrays .* missing"):
        checkpoint.restore(saved, _tree())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t["counts"].astype(jnp.float32), r"saved int32\[3\], target float"),
        (lambda t: jnp.zeros(4, jnp.int32), r"saved int32\[3\], target int32\[4\]"),
        (lambda t: {"c": t["counts"]}, "counts/c: not in the checkpoint"),
    ],
    ids=["dtype", "shape", "structure"],
)
def test_a_target_with_another_layout_is_refused_not_cast(saved, change, problem):
    target = {**_tree(), "counts": change(_tree())}
    with pytest.raises(ValueError, match=rf"does not match the target.*{problem}"):
        checkpoint.restore(saved, target)


def test_checkpoint_without_checksum_loads_with_a_warning(saved):
    _edit_metadata(saved, lambda meta: meta.pop("checksum"))
    with pytest.warns(UserWarning, match=rf"{saved} has no checksum"):
        assert_trees_all_equal(checkpoint.restore(saved, _tree()), _tree())
    with pytest.raises(checkpoint.CorruptCheckpointError, match="has no checksum"):
        checkpoint.restore(saved, require_checksum=True)


def test_every_committed_checkpoint_verifies_its_checksum():
    paths = sorted(
        os.path.dirname(f)
        for f in glob.glob(
            f"{REPO}/experiments/results/**/metadata.json", recursive=True
        )
    )
    assert len(paths) >= 30
    for path in paths:
        tree = checkpoint.restore(path, require_checksum=True)
        assert jax.tree.leaves(tree), path
