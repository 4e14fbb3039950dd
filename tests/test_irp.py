"""Tests for autosparse_jax.irp: schedules, survival counts, rewinding, one
compilation, checkpoints and exact resumption (tiny MLP, generated data)."""

import dataclasses
import json
import os
import re
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyMLP, assert_trees_all_equal

from autosparse_jax import checkpoint, criteria, data, irp, masks, train

PREPROCESS = data.PreprocessConfig(mean=(0.5,), std=(0.25,))


def _setup(num=64):
    rng = np.random.default_rng(0)
    dataset = {
        "image": rng.integers(0, 256, (num, 4, 4, 1), dtype=np.uint8),
        "label": rng.integers(0, 3, (num,)).astype(np.int32),
    }
    model = TinyMLP(hidden=16)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
    return model, params, train.to_device(dataset)


def _run(config, checkpoint_dir=None, optimizer=None, **kwargs):
    model, params, dataset = _setup()
    optimizer = optimizer or train.sgd(0.1, momentum=0.9)
    return irp.irp(
        jax.random.key(1),
        params,
        dataset,
        model=model,
        optimizer=optimizer,
        config=config,
        eval_data=dataset,
        preprocess=PREPROCESS,
        checkpoint_dir=checkpoint_dir,
        progress=False,
        **kwargs,
    )


CONFIG = irp.IRPConfig(
    num_rounds=3,
    final_sparsity=0.9,
    epochs_per_round=2,
    batch_size=16,
    eval_batch_size=32,
)


def _deterministic(history):
    drop = ("seconds", "checkpoint_seconds")
    return [{k: v for k, v in row.items() if k not in drop} for row in history]


def test_schedules_end_at_final_sparsity():
    geo = irp.IRPConfig(num_rounds=2, final_sparsity=0.99)
    np.testing.assert_allclose(
        [irp.round_sparsity(geo, r) for r in (0, 1)], [0.9, 0.99]
    )
    lin = irp.IRPConfig(num_rounds=4, final_sparsity=0.8, schedule="linear")
    np.testing.assert_allclose(
        [irp.round_sparsity(lin, r) for r in range(4)], [0.2, 0.4, 0.6, 0.8]
    )
    # The paper's per-round keep fraction of the remaining weights, linear.
    d, e = 0.2, 4
    remaining = 1.0
    for i in range(e):
        remaining *= 1 - (1 - d) / (e - (1 - d) * i)
        np.testing.assert_allclose(
            1 - remaining, irp.round_sparsity(lin, i), atol=1e-12
        )


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="final_sparsity must be in"):
        irp.IRPConfig(final_sparsity=1.0)
    with pytest.raises(ValueError, match="criterion must be one of"):
        irp.IRPConfig(criterion="grasp")


def test_survival_scores_hand_case():
    dense = {"w": jnp.ones((1, 3), bool), "b": jnp.ones(2, bool)}
    m1 = {"w": jnp.array([[True, True, False]]), "b": jnp.ones(2, bool)}
    m2 = {"w": jnp.array([[True, False, False]]), "b": jnp.ones(2, bool)}
    scores = irp.survival_scores([dense, m1, m2])
    np.testing.assert_allclose(scores["w"], [[1.0, 0.5, 0.0]])
    np.testing.assert_allclose(scores["b"], [1.0, 1.0])
    with pytest.raises(ValueError):
        irp.survival_scores([dense])


@pytest.mark.parametrize("criterion", ["magnitude", "snip"])
def test_run_masks_counts_and_history(criterion):
    config = dataclasses.replace(CONFIG, criterion=criterion)
    result = _run(config)
    assert len(result.masks) == 4 and len(result.history) == 3
    for r, (before, after) in enumerate(
        zip(result.masks[:-1], result.masks[1:], strict=True)
    ):
        for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            assert not np.any(np.asarray(a) & ~np.asarray(b))  # masks only shrink
        expected = float(irp.round_sparsity(config, r))
        assert abs(float(masks.sparsity(after)) - expected) < 1e-2
        assert result.history[r]["sparsity"] == pytest.approx(
            float(masks.sparsity(after))
        )
    total = jax.tree.map(
        lambda *ms: sum(m.astype(jnp.int32) for m in ms), *result.masks[1:]
    )
    assert_trees_all_equal(result.counts, total)
    assert int(result.counts["head"]["bias"].min()) == 3  # non-prunable: every round
    final = result.final_state
    for p, m in zip(
        jax.tree.leaves(final.params), jax.tree.leaves(result.masks[-1]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], 0.0)
    assert set(result.history[0]) >= {
        "round",
        "sparsity",
        "train_loss",
        "test_accuracy",
    }


def test_round_program_compiles_once(monkeypatch):
    traces = []
    original = irp._rewind

    def counting(*args):
        traces.append(1)
        return original(*args)

    monkeypatch.setattr(irp, "_rewind", counting)
    _run(CONFIG)
    assert len(traces) == 1


def test_rewind_full_and_kernels():
    rewind = {"k": {"kernel": jnp.full((2, 2), 1.0), "bias": jnp.full(2, 1.0)}}
    trained = {"k": {"kernel": jnp.full((2, 2), 5.0), "bias": jnp.full(2, 5.0)}}
    mask = {
        "k": {
            "kernel": jnp.array([[True, False], [False, True]]),
            "bias": jnp.ones(2, bool),
        }
    }
    carry = irp._Carry(trained, {"s": jnp.array(7.0)}, mask, None)
    rewind_state = {"s": jnp.array(0.0)}
    full = irp._rewind(CONFIG, carry, mask, rewind, rewind_state)
    np.testing.assert_array_equal(full[0]["k"]["kernel"], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(full[0]["k"]["bias"], [1.0, 1.0])
    assert float(full[1]["s"]) == 0.0
    kernels = irp._rewind(
        dataclasses.replace(CONFIG, reset="kernels"), carry, mask, rewind, rewind_state
    )
    np.testing.assert_array_equal(kernels[0]["k"]["kernel"], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(kernels[0]["k"]["bias"], [5.0, 5.0])
    assert float(kernels[1]["s"]) == 7.0


def test_late_rewinding_rewinds_to_trained_weights():
    model, params, _ = _setup()
    result = _run(dataclasses.replace(CONFIG, rewind_step=3, num_rounds=1))
    assert not np.allclose(
        np.asarray(result.rewind_params["head"]["kernel"]),
        np.asarray(params["head"]["kernel"]),
    )
    assert len(result.masks) == 2


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished ``CONFIG`` run with checkpoints: ``(directory, result)``."""
    directory = tmp_path_factory.mktemp("finished") / "run"
    return directory, _run(CONFIG, checkpoint_dir=directory)


def _assert_same_run(resumed, full):
    assert_trees_all_equal(list(resumed.masks), list(full.masks))
    assert_trees_all_equal(resumed.counts, full.counts)
    assert_trees_all_equal(resumed.final_state.params, full.final_state.params)
    assert _deterministic(resumed.history) == _deterministic(full.history)


def test_resume_after_lost_rounds_is_exact(finished, tmp_path):
    directory, full = finished
    assert sorted(os.listdir(directory)) == ["round_00", "round_01", "round_02"]
    shutil.copytree(directory, tmp_path / "b")
    for r in ("round_01", "round_02"):  # as if killed during round 1
        shutil.rmtree(tmp_path / "b" / r)
    os.makedirs(tmp_path / "b" / "round_01.tmp")  # a save cut short
    _assert_same_run(_run(CONFIG, checkpoint_dir=tmp_path / "b"), full)


def _truncate_arrays(round_dir):
    """Halves every data file of the round's Orbax store (under ``.../d/``)."""
    files = [p for p in (round_dir / "state").rglob("*") if p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_history(round_dir):
    """A valid ``metadata.json`` with one changed number: only the checksum tells."""
    path = round_dir / "metadata.json"
    meta = json.loads(path.read_text())
    meta["history"][0]["train_loss"] += 1.0
    path.write_text(json.dumps(meta))


def test_resume_falls_back_past_damaged_rounds_and_is_exact(finished, tmp_path):
    directory, full = finished
    copy = tmp_path / "run"
    shutil.copytree(directory, copy)
    _truncate_arrays(copy / "round_02")
    _edit_history(copy / "round_01")
    with pytest.warns(UserWarning, match="resuming from round 0") as record:
        resumed = _run(CONFIG, checkpoint_dir=copy)
    warned = " ".join(str(w.message) for w in record)
    assert f"{copy / 'round_02'} is damaged (its arrays cannot be read" in warned
    assert f"{copy / 'round_01'} is damaged (its checksum does not match" in warned
    _assert_same_run(resumed, full)
    assert sorted(os.listdir(copy)) == [
        "round_00",
        "round_01",
        "round_01.corrupt",  # moved aside, never deleted
        "round_02",
        "round_02.corrupt",
    ]


def test_resume_with_no_intact_round_starts_from_scratch(finished, tmp_path):
    directory, full = finished
    copy = tmp_path / "run"
    shutil.copytree(directory, copy)
    shutil.rmtree(copy / "round_02")
    shutil.rmtree(copy / "round_01")
    path = copy / "round_00" / "metadata.json"
    path.write_text(path.read_text()[:100])
    with pytest.warns(UserWarning, match=r"metadata.json is truncated.*from scratch"):
        _assert_same_run(_run(CONFIG, checkpoint_dir=copy), full)
    assert "round_00.corrupt" in os.listdir(copy)


_DIFFERENCES = {
    "key": "the key differs",
    "params": r"the initial params \(or model state\) differ",
    "data": "the training data differs",
    "optimizer": "the optimizer differs",
}


@pytest.mark.parametrize("change", sorted(_DIFFERENCES))
def test_resume_of_another_run_is_refused_naming_the_difference(finished, change):
    directory, _ = finished
    model, params, dataset = _setup()
    args = {
        "key": jax.random.key(1),
        "params": params,
        "train_data": dataset,
        "optimizer": train.sgd(0.1, momentum=0.9),  # _run's
    }
    args[change if change != "data" else "train_data"] = {
        "key": jax.random.key(2),
        "params": jax.tree.map(lambda x: x.at[0].add(1e-3), params),
        "data": {**dataset, "label": (dataset["label"] + 1) % 3},
        "optimizer": train.sgd(0.05, momentum=0.9),
    }[change]
    listing = sorted(os.listdir(directory))
    with pytest.raises(ValueError, match="Nothing was changed") as err:
        irp.irp(
            args.pop("key"),
            args.pop("params"),
            args.pop("train_data"),
            model=model,
            config=CONFIG,
            preprocess=PREPROCESS,
            checkpoint_dir=directory,
            progress=False,
            **args,
        )
    named = [k for k, msg in _DIFFERENCES.items() if re.search(msg, str(err.value))]
    assert named == [change]
    assert sorted(os.listdir(directory)) == listing


def test_finished_directory_returns_the_saved_result_and_warns(finished):
    directory, full = finished
    with pytest.warns(UserWarning, match="already done.*nothing was trained"):
        again = _run(CONFIG, checkpoint_dir=directory)
    _assert_same_run(again, full)


def test_directory_of_another_run_is_refused_and_kept(tmp_path):
    _run(dataclasses.replace(CONFIG, num_rounds=1), checkpoint_dir=tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="same config"):
        _run(dataclasses.replace(CONFIG, num_rounds=2), checkpoint_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == before


def test_seed_parallel_run_equals_sequential_runs():
    model, _, dataset = _setup()
    keys = jax.random.split(jax.random.key(5), 2)
    init = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 4, 4, 1)))["params"])(keys)
    config = dataclasses.replace(CONFIG, criterion="snip", rewind_step=2)
    common = dict(
        model=model,
        optimizer=train.sgd(0.1, momentum=0.9),
        config=config,
        eval_data=dataset,
        preprocess=PREPROCESS,
        progress=False,
    )
    batched = irp.irp_seeds(keys, init, dataset, **common)
    for k in range(2):

        def pick(tree, k=k):
            return jax.tree.map(lambda x: x[k], tree)

        one = irp.irp(keys[k], pick(init), dataset, **common)
        assert_trees_all_equal([pick(m) for m in batched.masks], list(one.masks))
        assert_trees_all_equal(pick(batched.counts), one.counts)
        chex.assert_trees_all_close(
            pick(batched.final_state.params),
            one.final_state.params,
            rtol=1e-4,
            atol=1e-5,
        )
        for row_b, row_1 in zip(batched.history, one.history, strict=True):
            assert row_b["test_accuracy"][k] == pytest.approx(
                row_1["test_accuracy"], abs=1e-6
            )


def test_labels_round_trip(tmp_path):
    model, params, _ = _setup()
    result = _run(CONFIG)
    irp.save_labels(
        tmp_path / "labels",
        result,
        config=CONFIG,
        init_params=params,
        metadata={"model": "tiny_mlp", "dataset": "generated", "seed": 1},
    )
    labels = irp.load_labels(tmp_path / "labels")
    assert_trees_all_equal(labels.init_params, params)
    assert_trees_all_equal(list(labels.masks), list(result.masks))
    assert_trees_all_equal(labels.counts, result.counts)
    assert labels.metadata["model"] == "tiny_mlp"
    assert labels.metadata["irp_config"] == dataclasses.asdict(CONFIG)
    assert labels.metadata["num_rounds"] == 3
    assert_trees_all_equal(
        irp.survival_scores(labels.masks), irp.survival_scores(result.masks)
    )
    with pytest.raises(ValueError, match="not a labelled IRP run"):
        irp.load_labels(_checkpoint_of_another_kind(tmp_path))


def _checkpoint_of_another_kind(tmp_path):
    checkpoint.save(tmp_path / "other", {"x": jnp.ones(2)}, metadata={"kind": "x"})
    return tmp_path / "other"


def test_directory_of_another_model_is_refused(tmp_path):
    config = dataclasses.replace(CONFIG, num_rounds=1)
    _run(config, checkpoint_dir=tmp_path)
    _, _, dataset = _setup()
    wider = TinyMLP(num_classes=4, hidden=16)
    params = wider.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
    with pytest.raises(ValueError, match="another model"):
        irp.irp(
            jax.random.key(1),
            params,
            dataset,
            model=wider,
            optimizer=train.sgd(0.1),
            config=config,
            preprocess=PREPROCESS,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    assert sorted(os.listdir(tmp_path)) == ["round_00"]


def test_resume_with_late_rewinding_is_exact(tmp_path):
    config = dataclasses.replace(CONFIG, rewind_step=3)
    full = _run(config, checkpoint_dir=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "round_02")
    resumed = _run(config, checkpoint_dir=tmp_path / "b")
    assert_trees_all_equal(resumed.rewind_params, full.rewind_params)
    assert_trees_all_equal(list(resumed.masks), list(full.masks))
    assert_trees_all_equal(resumed.final_state.params, full.final_state.params)


class _NoTrainArg(nn.Module):
    """A user classifier whose ``__call__`` takes no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3, name="head")(x)


SNIP_TWO_ROUNDS = dataclasses.replace(
    CONFIG, criterion="snip", num_rounds=2, epochs_per_round=1
)


@pytest.mark.parametrize("model", [TinyMLP(hidden=16), _NoTrainArg()])
def test_snip_on_float_images_without_preprocess(model):
    rng = np.random.default_rng(0)
    dataset = train.to_device(
        {
            "image": rng.normal(size=(64, 4, 4, 1)).astype(np.float32),
            "label": rng.integers(0, 3, (64,)).astype(np.int32),
        }
    )
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
    result = irp.irp(
        jax.random.key(1),
        params,
        dataset,
        model=model,
        optimizer=train.sgd(0.1, momentum=0.9),
        config=SNIP_TWO_ROUNDS,
        eval_data=dataset,
        progress=False,
    )  # The documented default preprocess=None.
    assert len(result.masks) == 3
    for r, (before, after) in enumerate(
        zip(result.masks[:-1], result.masks[1:], strict=True)
    ):
        kept = [np.asarray(m) for m in jax.tree.leaves(after)]
        for b, a in zip(jax.tree.leaves(before), kept, strict=True):
            assert not np.any(a & ~np.asarray(b))  # masks only shrink
        assert sum(a.sum() for a in kept) < sum(
            np.asarray(b).sum() for b in jax.tree.leaves(before)
        )
        expected = float(irp.round_sparsity(SNIP_TWO_ROUNDS, r))
        assert abs(float(masks.sparsity(after)) - expected) < 1e-2
    assert all(np.isfinite(row["test_loss"]) for row in result.history)


def test_snip_on_uint8_without_preprocess_is_trainings_error():
    model, params, dataset = _setup()
    with pytest.raises(ValueError, match="preprocess=data.preprocess_config"):
        irp.irp(
            jax.random.key(1),
            params,
            dataset,
            model=model,
            optimizer=train.sgd(0.1),
            config=SNIP_TWO_ROUNDS,
            progress=False,
        )


def test_snip_scores_with_preprocess_equal_the_hand_computed_scores():
    # What _scores computed before it shared train.prepare_images: sample,
    # data.preprocess, then criteria.snip through model.apply(train=False).
    model, params, dataset = _setup()
    config = dataclasses.replace(SNIP_TWO_ROUNDS, num_score_batches=2)
    mask = masks.dense_mask(params)
    carry = irp._Carry(params, {}, mask, None)
    key = jax.random.key(3)
    got = irp._scores(config, model, key, carry, dataset, PREPROCESS)
    idx = jax.random.choice(key, 64, (32,), replace=False)
    images = data.preprocess(None, dataset["image"][idx], PREPROCESS, train=False)
    batch = {
        "image": images.reshape(2, 16, 4, 4, 1),
        "label": dataset["label"][idx].reshape(2, 16),
    }

    def apply_fn(p, x):
        return model.apply({"params": p}, x, train=False)

    expected = criteria.compute_scores(
        key, criteria.snip, params, batch, apply_fn=apply_fn, mask=mask
    )
    assert_trees_all_equal(got, expected)


def test_diverged_round_stops_the_run_and_is_not_checkpointed(tmp_path):
    config = dataclasses.replace(CONFIG, num_rounds=2)
    healthy, huge = train.sgd(0.1, momentum=0.9), train.sgd(1e6, momentum=0.9)
    _run(optimizer=healthy, config=config, checkpoint_dir=tmp_path)
    shutil.rmtree(tmp_path / "round_01")  # resume at round 1 with a huge lr
    seen = []
    with pytest.raises(
        irp.DivergedError, match=r"round 1 diverged.*rounds 0-0 are checkpointed"
    ) as info:
        _run(
            optimizer=huge,
            config=config,
            checkpoint_dir=tmp_path,
            callback=lambda r, row: seen.append(r),
            resume_with_new_optimizer=True,
        )
    assert sorted(os.listdir(tmp_path)) == ["round_00"]
    assert seen == [1]
    assert info.value.round_index == 1
    assert [row["round"] for row in info.value.history] == [0, 1]
    last = info.value.history[-1]
    assert last["diverged"] is True and not np.isfinite(last["train_loss"])
    assert "diverged" not in info.value.history[0]
    # The directory still resumes with the optimizer its rounds were saved with.
    result = _run(optimizer=healthy, config=config, checkpoint_dir=tmp_path)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["train_loss"])
