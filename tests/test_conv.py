"""Tests for autosparse_jax.conv: same values and gradients as lax, any stride."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from autosparse_jax import conv

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = [
    # (input shape, kernel shape, strides, padding)
    ((2, 9, 9, 2), (5, 5, 2, 3), (1, 1), "SAME"),
    ((2, 9, 9, 2), (3, 3, 2, 3), (1, 1), "VALID"),
    ((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), "SAME"),
    ((2, 9, 7, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 3), (1, 1, 3, 4), (2, 2), "VALID"),
    ((1, 7, 7, 1), (4, 4, 1, 2), (1, 1), "SAME"),
    ((2, 10, 10, 2), (3, 3, 2, 2), (3, 2), ((2, 0), (0, 1))),
]


def _inputs(x_shape, k_shape):
    rng = np.random.default_rng(sum(x_shape) + sum(k_shape))
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
    return x, k


def _reference(x, k, strides, padding):
    return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC)


def _ours(x, k, strides, padding):
    return conv.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC)


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_match_lax(case):
    x_shape, k_shape, strides, padding = case
    x, k = _inputs(x_shape, k_shape)
    np.testing.assert_allclose(
        _ours(x, k, strides, padding), _reference(x, k, strides, padding), rtol=1e-5
    )

    def loss(fn):
        return lambda x, k: (fn(x, k, strides, padding) ** 3).sum()

    expected = jax.grad(loss(_reference), argnums=(0, 1))(x, k)
    got = jax.jit(jax.grad(loss(_ours), argnums=(0, 1)))(x, k)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-3)


@pytest.mark.parametrize("case", CASES[2:4])
def test_second_order_reverse_mode_matches_lax(case):
    x_shape, k_shape, strides, padding = case
    x, k = _inputs(x_shape, k_shape)
    v = jnp.ones_like(k)

    def hvp(fn):
        grad = jax.grad(lambda k: (fn(x, k, strides, padding) ** 3).sum())
        return jax.grad(lambda k: jnp.vdot(grad(k), v))(k)

    np.testing.assert_allclose(hvp(_ours), hvp(_reference), rtol=2e-4, atol=2e-2)


def test_unsupported_configurations_fall_back_to_lax():
    x, k = _inputs((2, 9, 9, 4), (3, 3, 2, 4))
    grouped = conv.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=2
    )
    expected = lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=2
    )
    np.testing.assert_allclose(grouped, expected, rtol=1e-6)
    x, k = _inputs((2, 9, 9, 2), (3, 3, 2, 4))
    dilated = jax.jvp(  # the fallback keeps forward mode
        lambda k: conv.conv_general_dilated(
            x, k, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=NHWC
        ),
        (k,),
        (k,),
    )[1]
    assert dilated.shape == (2, 9, 9, 4)


def test_forward_mode_is_not_supported_on_the_fast_path():
    x, k = _inputs((2, 6, 6, 2), (3, 3, 2, 3))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda k: _ours(x, k, (1, 1), "SAME"), (k,), (k,))


def test_drop_in_for_flax_conv():
    x, _ = _inputs((2, 8, 8, 3), (1, 1, 1, 1))
    plain = nn.Conv(4, (3, 3), strides=2, padding=1)
    fast = nn.Conv(
        4, (3, 3), strides=2, padding=1, conv_general_dilated=conv.conv_general_dilated
    )
    params = plain.init(jax.random.key(0), x)
    assert jax.tree.structure(fast.init(jax.random.key(0), x)) == jax.tree.structure(
        params
    )
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-5)
    g_fast = jax.grad(lambda p: (fast.apply(p, x) ** 2).sum())(params)
    g_plain = jax.grad(lambda p: (plain.apply(p, x) ** 2).sum())(params)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
