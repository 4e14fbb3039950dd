"""Tests for autosparse_jax.unit_stats: per-unit statistics of a kernel.

Expected values are computed by hand on a 3 x 2 kernel (inputs j = 0..2,
output units i = 0..1) and two known input examples.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyMLP

from autosparse_jax import models, unit_stats

W = jnp.array([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])  # (J=3, I=2)
X = jnp.array([[1.0, 2.0, 0.0], [3.0, -2.0, 0.0]])  # two examples, 3 inputs


class OneDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(x.reshape(x.shape[0], -1))


class OneConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (2, 2), padding="VALID")(x)
        return nn.Dense(2, name="head")(x.reshape(x.shape[0], -1))


def test_row_and_column_rms_by_hand():
    rows = unit_stats.input_row_rms(W)
    cols = unit_stats.unit_column_rms(W)
    expected_rows = np.array([np.sqrt(12.5), 0.0, 1.0])
    expected_cols = np.array([np.sqrt(10 / 3), np.sqrt(17 / 3)])
    assert rows.shape == cols.shape == W.shape
    np.testing.assert_allclose(rows, np.repeat(expected_rows[:, None], 2, 1), 1e-6)
    np.testing.assert_allclose(cols, np.repeat(expected_cols[None, :], 3, 0), 1e-6)


def test_conv_rows_are_input_channels_and_columns_output_channels():
    w = jnp.arange(2 * 2 * 3 * 4, dtype=jnp.float32).reshape(2, 2, 3, 4)
    w_np = np.asarray(w)
    rows, cols = unit_stats.input_row_rms(w), unit_stats.unit_column_rms(w)
    for j in range(3):
        np.testing.assert_allclose(
            rows[..., j, :], np.sqrt(np.mean(w_np[..., j, :] ** 2)), 1e-6
        )
    for i in range(4):
        np.testing.assert_allclose(
            cols[..., i], np.sqrt(np.mean(w_np[..., i] ** 2)), 1e-6
        )


def test_input_rms_of_a_dense_kernel_by_hand():
    model = OneDense()
    params = {"head": {"kernel": W, "bias": jnp.zeros(2)}}
    batches = {"image": X[None]}  # K = 1 batch of 2 examples
    rms = unit_stats.input_rms(params, batches, apply_fn=models.make_apply_fn(model))
    expected = np.array([np.sqrt(5.0), 2.0, 0.0])  # sqrt((1+9)/2), sqrt((4+4)/2), 0
    np.testing.assert_allclose(
        rms["head"]["kernel"], np.repeat(expected[:, None], 2, 1), 1e-6
    )
    np.testing.assert_array_equal(rms["head"]["bias"], np.zeros(2))


def test_input_rms_averages_mean_squares_over_batches_under_jit():
    model = OneDense()
    params = {"head": {"kernel": W, "bias": jnp.zeros(2)}}
    batches = {"image": jnp.stack([X[:1], X[1:]])}  # K = 2 batches of 1 example
    fn = jax.jit(
        lambda p, b: unit_stats.input_rms(p, b, apply_fn=models.make_apply_fn(model))
    )
    rms = fn(params, batches)
    np.testing.assert_allclose(
        rms["head"]["kernel"][:, 0], [np.sqrt(5.0), 2.0, 0.0], 1e-6
    )


def test_input_rms_of_the_second_layer_is_its_post_activation_input():
    model = TinyMLP()
    x = jax.random.normal(jax.random.key(3), (2, 4, 2, 2, 1))
    params = model.init(jax.random.key(1), x[0])["params"]
    rms = unit_stats.input_rms(
        params, {"image": x}, apply_fn=models.make_apply_fn(model)
    )
    flat = x.reshape(8, 4)
    hidden = jax.nn.relu(
        flat @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None]
    )
    np.testing.assert_allclose(
        rms["Dense_0"]["kernel"][:, 0], np.sqrt(np.mean(flat**2, 0)), 1e-5
    )
    np.testing.assert_allclose(
        rms["head"]["kernel"][:, 0], np.sqrt(np.mean(hidden**2, 0)), 1e-5
    )


def test_input_rms_of_a_conv_kernel_is_per_input_channel():
    model = OneConv()
    x = jax.random.normal(jax.random.key(4), (1, 3, 3, 3, 2))
    params = model.init(jax.random.key(1), x[0])["params"]
    rms = unit_stats.input_rms(
        params, {"image": x}, apply_fn=models.make_apply_fn(model)
    )
    k = rms["Conv_0"]["kernel"]
    assert k.shape == (2, 2, 2, 4)
    per_channel = np.sqrt(np.mean(np.asarray(x) ** 2, (0, 1, 2, 3)))
    np.testing.assert_allclose(k[0, 1, :, 2], per_channel, 1e-5)


def test_input_rms_needs_linen_modules(tiny_params, tiny_batch, tiny_apply_fn):
    with pytest.raises(ValueError, match="must run flax.linen modules"):
        unit_stats.input_rms(
            tiny_params, {"image": tiny_batch["image"][None]}, apply_fn=tiny_apply_fn
        )
