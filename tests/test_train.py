"""Tests for autosparse_jax.train: masked steps, compiled-once epochs, evaluation."""

import functools
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TinyMLP, assert_trees_all_close, assert_trees_all_equal

from autosparse_jax import data, masks, models, train

PREPROCESS = data.PreprocessConfig(mean=(0.5,), std=(0.25,))


class TinyBN(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


def _dataset(num, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (num, 4, 4, 1), dtype=np.uint8),
        "label": rng.integers(0, 3, (num,)).astype(np.int32),
    }


def _init(model, seed=0):
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 4, 4, 1)))
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return params, model_state


def _dense_tiny_mlp():
    """A TinyMLP, plain SGD and its dense initial train state."""
    model, optimizer = TinyMLP(), optax.sgd(0.1)
    params, _ = _init(model)
    return (
        model,
        optimizer,
        train.init_train_state(params, masks.dense_mask(params), optimizer),
    )


def _random_mask(key, params, keep=0.5):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            jax.random.bernoulli(k, keep, p.shape)
            if p.ndim >= 2
            else jnp.ones_like(p, bool)
            for k, p in zip(keys, leaves, strict=True)
        ],
    )


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),
    "momentum": lambda: train.sgd(0.1, momentum=0.9),
    "nesterov_wd": lambda: train.sgd(
        0.1, momentum=0.9, nesterov=True, weight_decay=0.1
    ),
    "adam": lambda: optax.adam(0.05),
    "adamw": lambda: optax.adamw(0.05, weight_decay=0.5),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero(name, key):
    model, optimizer = TinyMLP(), OPTIMIZERS[name]()
    params, _ = _init(model)
    mask = _random_mask(key, params)
    state = train.init_train_state(params, mask, optimizer)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=8, preprocess=PREPROCESS
    )
    state, _ = train_epoch(state, train.to_device(_dataset(32)), key, 0)
    for p, m, p0 in zip(
        jax.tree.leaves(state.params),
        jax.tree.leaves(mask),
        jax.tree.leaves(params),
        strict=True,
    ):
        assert p.dtype == p0.dtype
        np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], 0.0)
        kept = np.asarray(m)
        assert not np.allclose(np.asarray(p)[kept], np.asarray(p0)[kept])


def test_init_train_state_masks_and_copies(key):
    params, _ = _init(TinyMLP())
    mask = _random_mask(key, params)
    state = train.init_train_state(params, mask, optax.sgd(0.1))
    assert_trees_all_equal(state.params, masks.apply_mask(params, mask))
    assert int(state.step) == 0 and state.model_state == {}
    step = train.make_train_step(TinyMLP(), optax.sgd(0.1), preprocess=PREPROCESS)
    batch = jax.tree.map(jnp.asarray, _dataset(8))
    step(state, batch)  # donates ``state``; the caller's trees must survive
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    assert jax.tree.leaves(mask)[0].sum() >= 0


def test_epoch_compiles_once_across_masks_params_and_epochs(key):
    model, optimizer = TinyMLP(), optax.sgd(0.1)
    params, _ = _init(model)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=8, preprocess=PREPROCESS
    )
    evaluate = train.make_evaluate(model, batch_size=8, preprocess=PREPROCESS)
    dataset = train.to_device(_dataset(32))
    for epoch, seed in enumerate([1, 2, 3]):
        new_params, _ = _init(model, seed)
        mask = _random_mask(jax.random.key(seed), new_params, keep=0.3 * seed)
        state = train.init_train_state(new_params, mask, optimizer)
        state, _ = train_epoch(state, dataset, key, epoch)
        evaluate(state, dataset)
    assert train_epoch._cache_size() == 1
    assert evaluate._cache_size() == 1
    del params


def test_train_step_compiles_once(key):
    model, optimizer = TinyMLP(), optax.adam(0.01)
    params, _ = _init(model)
    step = train.make_train_step(model, optimizer, preprocess=PREPROCESS)
    batch = jax.tree.map(jnp.asarray, _dataset(8))
    state = train.init_train_state(params, masks.dense_mask(params), optimizer)
    for seed in range(3):
        state = state._replace(mask=_random_mask(jax.random.key(seed), params))
        state, metrics = step(state, batch)
    assert step._cache_size() == 1
    assert set(metrics) == {"loss", "accuracy"}


def test_one_step_epoch_matches_train_step(key):
    model, optimizer = TinyMLP(), optax.sgd(0.5)
    params, _ = _init(model)
    mask = _random_mask(key, params)
    dataset = _dataset(16)
    step = train.make_train_step(model, optimizer, preprocess=PREPROCESS)
    by_step, _ = step(
        train.init_train_state(params, mask, optimizer),
        jax.tree.map(jnp.asarray, dataset),
    )
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=16, preprocess=PREPROCESS
    )
    by_epoch, _ = train_epoch(
        train.init_train_state(params, mask, optimizer),
        train.to_device(dataset),
        key,
        0,
    )
    # One batch holding every example: only the summation order differs.
    assert_trees_all_close(by_epoch.params, by_step.params, rtol=1e-5, atol=1e-6)


def test_same_key_and_epoch_reproduce_and_epochs_differ(key):
    model, optimizer = TinyMLP(), optax.sgd(0.1)
    params, _ = _init(model)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=4, preprocess=PREPROCESS
    )
    dataset = train.to_device(_dataset(16))

    def run(epoch):
        state = train.init_train_state(params, masks.dense_mask(params), optimizer)
        return train_epoch(state, dataset, key, epoch)[0].params

    assert_trees_all_equal(run(3), run(3))
    assert not np.allclose(
        np.asarray(run(0)["head"]["kernel"]), np.asarray(run(1)["head"]["kernel"])
    )


def test_resumed_run_equals_uninterrupted_run(key):
    model, optimizer = TinyMLP(), train.sgd(0.1, momentum=0.9)
    params, _ = _init(model)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=4, preprocess=PREPROCESS
    )
    dataset = train.to_device(_dataset(16))
    fresh = lambda: train.init_train_state(params, masks.dense_mask(params), optimizer)  # noqa: E731
    full, history = train.train(
        key, fresh(), dataset, train_epoch=train_epoch, num_epochs=3, progress=False
    )
    half, _ = train.train(
        key, fresh(), dataset, train_epoch=train_epoch, num_epochs=1, progress=False
    )
    resumed, rest = train.train(
        key,
        half,
        dataset,
        train_epoch=train_epoch,
        num_epochs=3,
        start_epoch=1,
        progress=False,
    )
    assert_trees_all_equal(resumed.params, full.params)
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert [r["epoch"] for r in rest] == [1, 2]
    assert rest[-1]["train_loss"] == history[-1]["train_loss"]


def test_evaluate_counts_every_example_once():
    model = TinyMLP()
    params, _ = _init(model)
    state = train.init_train_state(params, masks.dense_mask(params), optax.sgd(0.1))
    dataset = _dataset(10)
    evaluate = train.make_evaluate(model, batch_size=4, preprocess=PREPROCESS)
    got = evaluate(state, train.to_device(dataset))
    images = data.normalize(jnp.asarray(dataset["image"]), (0.5,), (0.25,))
    logits = model.apply({"params": params}, images)
    labels = jnp.asarray(dataset["label"])
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(got["loss"], expected_loss.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        got["accuracy"], (jnp.argmax(logits, -1) == labels).mean(), rtol=1e-6
    )
    eval_step = train.make_eval_step(model, preprocess=PREPROCESS)
    one = eval_step(state, jax.tree.map(jnp.asarray, dataset))
    np.testing.assert_allclose(one["loss"], got["loss"], rtol=1e-5)


def test_batchnorm_statistics_update_and_are_never_masked(key):
    model, optimizer = TinyBN(), optax.sgd(0.1)
    params, model_state = _init(model)
    assert "batch_stats" in model_state and "batch_stats" not in params
    mask = _random_mask(key, params)
    state = train.init_train_state(params, mask, optimizer, model_state)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=8, preprocess=PREPROCESS
    )
    new, metrics = train_epoch(state, train.to_device(_dataset(16)), key, 0)
    mean = new.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(np.asarray(mean), 0.0)
    assert np.isfinite(float(metrics["loss"]))
    conv = np.asarray(new.params["Conv_0"]["kernel"])
    np.testing.assert_array_equal(conv[~np.asarray(mask["Conv_0"]["kernel"])], 0.0)


def test_uint8_without_preprocess_is_a_clear_error(key):
    model, optimizer, state = _dense_tiny_mlp()
    train_epoch = train.make_train_epoch(model, optimizer, batch_size=4)
    with pytest.raises(ValueError, match="preprocess_config"):
        train_epoch(state, train.to_device(_dataset(8)), key, 0)


def test_bad_batch_size_is_a_clear_error(key):
    model, optimizer, state = _dense_tiny_mlp()
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=64, preprocess=PREPROCESS
    )
    with pytest.raises(ValueError, match="batch_size=64"):
        train_epoch(state, train.to_device(_dataset(8)), key, 0)


def test_train_host_loop_history_and_callback(key):
    model, optimizer, state = _dense_tiny_mlp()
    dataset = train.to_device(_dataset(16))
    seen = []
    _, history = train.train(
        key,
        state,
        dataset,
        train_epoch=train.make_train_epoch(
            model, optimizer, batch_size=8, preprocess=PREPROCESS
        ),
        num_epochs=2,
        eval_data=dataset,
        evaluate=train.make_evaluate(model, batch_size=8, preprocess=PREPROCESS),
        progress=False,
        callback=lambda epoch, row: seen.append(epoch),
    )
    assert seen == [0, 1]
    assert set(history[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "seconds",
    }
    assert all(isinstance(v, float) for k, v in history[0].items() if k != "epoch")
    with pytest.raises(ValueError, match="make_evaluate"):
        train.train(
            key, state, dataset, train_epoch=None, num_epochs=1, eval_data=dataset
        )


def test_schedules():
    multi = train.multistep_schedule(
        0.01, milestones=(60, 120), factor=0.2, steps_per_epoch=10
    )
    np.testing.assert_allclose(
        [multi(0), multi(599), multi(600), multi(1199), multi(1200)],
        [0.01, 0.01, 0.002, 0.002, 0.0004],
        rtol=1e-6,
    )
    cosine = train.cosine_schedule(0.1, num_epochs=2, steps_per_epoch=5)
    np.testing.assert_allclose(
        [cosine(0), cosine(5), cosine(10)], [0.1, 0.05, 0.0], atol=1e-7
    )


_DATA_PARALLEL = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np, optax
    sys.path.insert(0, sys.argv[1])
    import test_train as t
    from autosparse_jax import masks, train
    assert jax.device_count() == 4, jax.devices()
    model, optimizer = t.TinyBN(), train.sgd(0.1, momentum=0.9)
    params, model_state = t._init(model)
    key = jax.random.key(0)
    mask = t._random_mask(key, params)
    dataset = t._dataset(64)
    results = []
    for mesh in (None, train.data_parallel_mesh()):
        state = train.to_device(
            train.init_train_state(params, mask, optimizer, model_state), mesh)
        epoch = train.make_train_epoch(
            model, optimizer, batch_size=16, preprocess=t.PREPROCESS, mesh=mesh)
        evaluate = train.make_evaluate(
            model, batch_size=16, preprocess=t.PREPROCESS, mesh=mesh)
        device_data = train.to_device(dataset, mesh)
        for e in range(2):
            state, _ = epoch(state, device_data, key, e)
        results.append((state, evaluate(state, device_data)))
    (one, ev1), (four, ev4) = results
    for a, b in zip(jax.tree.leaves((one.params, one.model_state)),
                    jax.tree.leaves((four.params, four.model_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ev1["loss"], ev4["loss"], rtol=1e-4)
    print("OK", len(four.params["Conv_0"]["kernel"].sharding.device_set))
    """
)


def test_data_parallel_on_four_cpu_devices_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    tests_dir = os.path.dirname(__file__)
    out = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL, tests_dir],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK 4"


class NoTrainMLP(nn.Module):
    """A user classifier whose ``__call__`` takes no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3, name="head")(x)


def _float_dataset(num, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(num, 4, 4, 1)).astype(np.float32),
        "label": rng.integers(0, 3, (num,)).astype(np.int32),
    }


def test_model_without_train_argument_trains_and_evaluates(key):
    model, optimizer = NoTrainMLP(), optax.sgd(0.1)
    params, model_state = _init(model)
    mask = _random_mask(key, params)
    state = train.init_train_state(params, mask, optimizer, model_state)
    dataset = train.to_device(_float_dataset(16))
    train_epoch = train.make_train_epoch(model, optimizer, batch_size=4)
    evaluate = train.make_evaluate(model, batch_size=8)
    new, metrics = train_epoch(state, dataset, key, 0)
    assert int(new.step) == 4 and np.isfinite(float(metrics["loss"]))
    kernel = np.asarray(new.params["Dense_0"]["kernel"])
    np.testing.assert_array_equal(kernel[~np.asarray(mask["Dense_0"]["kernel"])], 0)
    assert not np.allclose(kernel, np.asarray(params["Dense_0"]["kernel"]))
    got = evaluate(new, dataset)
    logits = model.apply({"params": new.params}, dataset["image"])
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, dataset["label"])
    np.testing.assert_allclose(got["loss"], expected.mean(), rtol=1e-5)


def test_prepare_images():
    floats = jnp.arange(4.0, dtype=jnp.float16).reshape(1, 2, 2, 1)
    got = train.prepare_images(None, floats, None, train=True)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, floats.astype(jnp.float32))
    pixels = jnp.asarray(_dataset(2)["image"])
    np.testing.assert_array_equal(
        train.prepare_images(None, pixels, PREPROCESS, train=False),
        data.preprocess(None, pixels, PREPROCESS, train=False),
    )
    with pytest.raises(ValueError, match="preprocess_config"):
        train.prepare_images(None, pixels, None, train=False)


def _run_tiny(key, learning_rate, num_epochs=6, **kwargs):
    model, optimizer = TinyMLP(), optax.sgd(learning_rate)
    params, _ = _init(model)
    state = train.init_train_state(params, masks.dense_mask(params), optimizer)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=4, preprocess=PREPROCESS
    )
    _, history = train.train(
        key,
        state,
        train.to_device(_dataset(16)),
        train_epoch=train_epoch,
        num_epochs=num_epochs,
        progress=False,
        **kwargs,
    )
    return history, train_epoch


def test_diverged_run_stops_after_the_first_non_finite_epoch(key):
    seen = []
    history, train_epoch = _run_tiny(
        key, 1e6, callback=lambda epoch, row: seen.append(dict(row))
    )
    assert len(history) < 6
    assert seen == history  # the callback still saw the diverged epoch
    last = history[-1]
    assert last["diverged"] is True and not np.isfinite(last["train_loss"])
    assert all(
        "diverged" not in r and np.isfinite(r["train_loss"]) for r in history[:-1]
    )
    got = train.divergence(history)
    assert got["epoch"] == last["epoch"] == len(history) - 1
    expected = history[-2]["train_loss"] if len(history) > 1 else None
    assert got["last_finite_loss"] == expected
    assert train_epoch._cache_size() == 1


def test_healthy_run_runs_every_epoch_and_has_no_divergence(key):
    history, _ = _run_tiny(key, 0.1, num_epochs=3)
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert not any("diverged" in r for r in history)
    assert train.divergence(history) is None


def test_divergence_on_hand_made_histories():
    def rows(*losses, start=0):
        return [
            {"epoch": start + i, "train_loss": loss} for i, loss in enumerate(losses)
        ]

    nan, inf = float("nan"), float("inf")
    assert train.divergence([]) is None
    assert train.divergence(rows(2.0, 1.5, 1.0)) is None
    assert train.divergence(rows(nan)) == {"epoch": 0, "last_finite_loss": None}
    assert train.divergence(rows(2.0, 1.5, inf, nan)) == {
        "epoch": 2,
        "last_finite_loss": 1.5,
    }
    assert train.divergence(rows(3.0, -inf, start=4)) == {
        "epoch": 5,
        "last_finite_loss": 3.0,
    }


@pytest.mark.gpu
def test_masked_conv_epoch_on_the_accelerator_matches_the_cpu(key):
    """LeNet-5 (XLA's native convolution on the accelerator), one masked epoch:
    pruned weights stay exactly zero there and the params agree with the CPU's
    to TF32-level tolerance."""
    model = models.get_model("lenet5", num_classes=10)
    params, model_state = models.init_params(jax.random.key(0), model, (28, 28, 1))
    mask = _random_mask(key, params)
    host = data.generated_like("fashion_mnist", 64)
    preprocess = data.preprocess_config("fashion_mnist")
    optimizer = optax.sgd(0.05, momentum=0.9)
    epoch = train.make_train_epoch(
        model, optimizer, batch_size=16, preprocess=preprocess
    )
    trained = {}
    for device in (jax.devices()[0], jax.devices("cpu")[0]):
        put = functools.partial(jax.device_put, device=device)
        state = train.init_train_state(
            put(params), put(mask), optimizer, put(model_state)
        )
        state, _ = epoch(state, put(host), put(key), 0)
        assert jax.tree.leaves(state.params)[0].devices() == {device}
        trained[device.platform] = jax.device_get(state.params)
    accelerator, cpu = trained[jax.default_backend()], trained["cpu"]
    for p, m in zip(jax.tree.leaves(accelerator), jax.tree.leaves(mask), strict=True):
        np.testing.assert_array_equal(p[~np.asarray(m)], 0.0)
    assert_trees_all_close(accelerator, cpu, rtol=2e-2, atol=2e-3)
