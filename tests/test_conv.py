"""Tests for autosparse_jax.conv: same values and gradients as lax, any stride."""

import functools

import chex
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


# ------------------------------------------------------------- batch-minor layers


def _to_cm(x):
    """NHWC -> batch-minor [C, H, W, B], a plain transpose (test reference)."""
    return x.transpose(3, 1, 2, 0)


@pytest.mark.parametrize("case", CASES)
def test_batch_minor_conv_values_and_gradients_match_lax(case):
    x_shape, k_shape, strides, padding = case
    x, k = _inputs(x_shape, k_shape)

    def ours(x, k):  # NHWC in and out, batch-minor inside
        return conv.batch_minor_conv(_to_cm(x), k, strides, padding).transpose(
            3, 1, 2, 0
        )

    np.testing.assert_allclose(
        ours(x, k), _reference(x, k, strides, padding), rtol=1e-5, atol=1e-5
    )

    def loss(fn):
        return lambda x, k: (fn(x, k) ** 3).sum()

    reference = functools.partial(_reference, strides=strides, padding=padding)
    expected = jax.grad(loss(reference), argnums=(0, 1))(x, k)
    got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, k)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-3)
    # Plain JAX ops: forward mode works (unlike the custom-VJP path).
    tangent = jnp.ones_like(k)
    np.testing.assert_allclose(
        jax.jvp(lambda k: ours(x, k), (k,), (tangent,))[1],
        jax.jvp(lambda k: reference(x, k), (k,), (tangent,))[1],
        rtol=1e-4,
        atol=1e-4,
    )


TILED_CASES = [
    # (input shape, kernel shape, strides, padding, output tile)
    ((2, 28, 28, 1), (5, 5, 1, 6), (1, 1), "SAME", (2, 2)),  # LeNet-5's convs
    ((2, 14, 14, 6), (5, 5, 6, 16), (1, 1), "VALID", (2, 2)),
    ((2, 14, 14, 6), (5, 5, 6, 16), (1, 1), "VALID", (5, 10)),
    ((2, 9, 9, 2), (3, 3, 2, 3), (1, 1), "SAME", (3, 1)),
    ((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), "SAME", (2, 4)),
    ((2, 10, 10, 2), (3, 3, 2, 2), (3, 2), ((2, 0), (0, 1)), (2, 5)),
    ((2, 8, 6, 3), (1, 3, 3, 4), (1, 1), "SAME", (4, 3)),
]


@pytest.mark.parametrize("case", TILED_CASES)
def test_tiled_batch_minor_conv_matches_lax(case):
    x_shape, k_shape, strides, padding, tile = case
    x, k = _inputs(x_shape, k_shape)

    def ours(x, k):
        y = conv.batch_minor_conv(_to_cm(x), k, strides, padding, tile=tile)
        return y.transpose(3, 1, 2, 0)

    reference = functools.partial(_reference, strides=strides, padding=padding)
    np.testing.assert_allclose(ours(x, k), reference(x, k), rtol=1e-5, atol=1e-5)

    def loss(fn):
        return lambda x, k: (fn(x, k) ** 3).sum()

    expected = jax.grad(loss(reference), argnums=(0, 1))(x, k)
    got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, k)
    for g, e in zip(got, expected, strict=True):  # float32 sums of ~150 terms
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=1e-5 * np.abs(e).max())


def test_tile_matrix_hand_computed():
    # A 1x2 tile of a 1x2 kernel [p, q] (one channel in and out, stride 1)
    # reads a 1x3 window [x0, x1, x2]: outputs p*x0 + q*x1 and p*x1 + q*x2.
    x = jnp.array([[1.0, 10.0, 100.0, 1000.0]])[None, :, :, None]  # [C, H, W, B]
    k = jnp.array([[2.0, 3.0]])[:, :, None, None]
    index = conv._tile_kernel_index((1, 2, 1, 1), (1, 1), (1, 2))
    flat = np.append(np.asarray(k).ravel(), 0.0)
    np.testing.assert_array_equal(flat[index], [[2.0, 3.0, 0.0], [0.0, 2.0, 3.0]])
    y = conv.batch_minor_conv(x, k, (1, 1), "VALID", tile=(1, 3))
    assert y.ravel().tolist() == [32.0, 320.0, 3200.0]


def test_default_tile():
    # LeNet-5: both convs 2x2; a first layer with more filters than its
    # contraction (Conv-2's 1 -> 64 at 3x3) and 1x1 kernels stay untiled, as
    # does an axis of odd output length.
    assert conv.default_tile((5, 5, 1, 6), (28, 28)) == (2, 2)
    assert conv.default_tile((5, 5, 6, 16), (10, 10)) == (2, 2)
    assert conv.default_tile((3, 3, 1, 64), (28, 28)) == (1, 1)
    assert conv.default_tile((1, 1, 16, 32), (8, 8)) == (1, 1)
    assert conv.default_tile((3, 3, 16, 16), (7, 8)) == (1, 2)


def test_batch_minor_conv_rejects_a_tile_that_does_not_divide_the_output():
    with pytest.raises(ValueError, match=r"tile \(3, 3\) does not divide.*\(8, 8\)"):
        conv.batch_minor_conv(
            jnp.zeros((1, 8, 8, 2)), jnp.zeros((3, 3, 1, 4)), tile=(3, 3)
        )


def test_batch_minor_conv_hand_computed():
    # One 2x2 image, one channel, 2x2 kernel of ones, 'VALID': the sum of the
    # four pixels; 'SAME' pads one row and column at the end (lax's rule).
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]  # [C, H, W, B]
    k = jnp.ones((2, 2, 1, 1))
    assert conv.batch_minor_conv(x, k, (1, 1), "VALID").ravel().tolist() == [10.0]
    same = conv.batch_minor_conv(x, k, (1, 1), "SAME")[0, :, :, 0]
    assert same.tolist() == [[10.0, 6.0], [7.0, 4.0]]


def test_batch_minor_conv_rejects_a_channel_mismatch():
    with pytest.raises(ValueError, match="expects 3 input channels.*has 2"):
        conv.batch_minor_conv(jnp.zeros((2, 5, 5, 4)), jnp.zeros((3, 3, 3, 8)))


def test_max_pool_matches_flax_values_and_gradients():
    x = jax.random.normal(jax.random.key(0), (3, 7, 9, 2))  # NHWC, odd edges
    expected = nn.max_pool(x, (2, 2), strides=(2, 2))
    got = conv.max_pool(_to_cm(x)).transpose(3, 1, 2, 0)
    np.testing.assert_array_equal(got, expected)
    # No ties in normal samples: the gradients are equal too.
    g_expected = jax.grad(
        lambda x: (nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2).sum()
    )(x)
    g_got = jax.grad(lambda x: (conv.max_pool(_to_cm(x)) ** 2).sum())(x)
    np.testing.assert_array_equal(g_got, g_expected)


def test_max_pool_hand_computed():
    x = jnp.array([[1.0, 5.0, 0.0, 2.0], [3.0, -1.0, 7.0, 6.0]])[None, :, :, None]
    assert conv.max_pool(x).ravel().tolist() == [5.0, 7.0]


def _materialize_flops(x):
    cost = jax.jit(conv.materialize).lower(x).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list | tuple) else cost)["flops"]


def test_materialize_costs_a_narrow_identity_whatever_the_batch():
    for shape in [(3, 5, 4, 6), (2, 3, 3, 2000), (1, 2, 2, 130)]:
        x = jax.random.normal(jax.random.key(0), shape)
        np.testing.assert_array_equal(conv.materialize(x), x)
        # at most a 128-wide identity per row: linear in the batch, where an
        # identity as wide as the batch would cost 2 * x.size * 2000 at 2000
        assert _materialize_flops(x) <= 2 * 128 * x.size
    # rows span examples: a batch of 125 still gets the full 128-wide identity
    x = jnp.ones((1, 32, 32, 125))
    assert _materialize_flops(x) == pytest.approx(2 * 128 * x.size, rel=0.01)


def test_materialize_is_exact_and_keeps_gradients():
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 6))
    np.testing.assert_array_equal(conv.materialize(x), x)
    np.testing.assert_array_equal(jax.grad(lambda x: conv.materialize(x).sum())(x), 1.0)
    x, k = _inputs((2, 9, 9, 1), (5, 5, 1, 3))
    plain = conv.batch_minor_conv(_to_cm(x), k, (1, 1), "SAME")
    first = conv.batch_minor_conv(_to_cm(x), k, (1, 1), "SAME", materialize_input=True)
    np.testing.assert_array_equal(first, plain)


def test_layout_round_trip_is_exact_and_checks_rank():
    x = jax.random.normal(jax.random.key(0), (5, 4, 3, 2))
    y = conv.to_batch_minor(x)
    assert y.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(y, _to_cm(x))
    np.testing.assert_array_equal(conv.from_batch_minor(y), x)
    with pytest.raises(ValueError, match=r"images \[B, H, W, C\]"):
        conv.to_batch_minor(jnp.zeros((4, 3, 2)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": "SAME"},
        {"padding": 1, "strides": (2, 2)},
        {"padding": "VALID", "use_bias": False},
        {"padding": ((2, 0), (0, 1)), "kernel_init": nn.initializers.normal(1.0)},
    ],
)
@pytest.mark.parametrize("materialize_input", [False, True])
def test_conv_module_has_flax_params_and_outputs(kwargs, materialize_input):
    x, _ = _inputs((2, 9, 9, 3), (1, 1, 1, 1))
    plain = nn.Conv(4, (3, 3), **kwargs)
    ours = conv.Conv(4, (3, 3), **kwargs, materialize_input=materialize_input)
    params = plain.init(jax.random.key(0), x)
    chex.assert_trees_all_equal(ours.init(jax.random.key(0), _to_cm(x)), params)
    np.testing.assert_allclose(
        ours.apply(params, _to_cm(x)).transpose(3, 1, 2, 0),
        plain.apply(params, x),
        rtol=1e-5,
        atol=1e-5,
    )
