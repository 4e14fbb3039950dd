"""Tests for autosparse_jax.layers: static per-layer context of prunable leaves.

Every expected context is written out by hand from the shapes: ``fan_in`` is
``prod(shape[:-1])``, ``fan_out`` is ``shape[-1] * prod(shape[:-2])`` and depth
is the order in which the forward pass first reads each kernel.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from autosparse_jax import layers, masks

INPUT_SHAPE = (2, 2, 1)


class DeepMLP(nn.Module):
    """Twelve Dense layers with default names ``Dense_0`` ... ``Dense_11``."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for _ in range(12):
            x = nn.relu(nn.Dense(2)(x))
        return x


class NamedAgainstUse(nn.Module):
    """``a_last`` sorts first in the tree but is applied after ``z_first``."""

    def setup(self):
        self.a_last = nn.Dense(2)
        self.z_first = nn.Dense(3)

    def __call__(self, x):
        return self.a_last(nn.relu(self.z_first(x.reshape(x.shape[0], -1))))


def _flax(model, key):
    params = model.init(key, jnp.zeros((1, *INPUT_SHAPE)))["params"]
    return params, lambda p, x: model.apply({"params": p}, x)


def _contexts_by_name(params, apply_fn, input_shape=INPUT_SHAPE):
    ctxs = layers.layer_contexts(params, apply_fn=apply_fn, input_shape=input_shape)
    items = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        jax.tree_util.keystr(path): c
        for (path, _), c in zip(items, ctxs, strict=True)
        if c is not None
    }


def test_depth_follows_the_forward_pass_not_tree_order(key):
    params, apply_fn = _flax(DeepMLP(), key)
    by_name = _contexts_by_name(params, apply_fn)
    tree_order = list(by_name)
    assert tree_order.index("['Dense_10']['kernel']") < tree_order.index(
        "['Dense_2']['kernel']"
    )
    assert len(by_name) == 12
    for i in range(12):
        ctx = by_name[f"['Dense_{i}']['kernel']"]
        assert ctx.layer_index == i
        assert ctx.num_layers == 12
    assert by_name["['Dense_0']['kernel']"][2:] == (4, 2, 8)  # fan_in, fan_out, size


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["plain", "jitted"])
def test_depth_follows_use_not_name(wrap, key):
    params, apply_fn = _flax(NamedAgainstUse(), key)
    by_name = _contexts_by_name(params, wrap(apply_fn))
    assert list(by_name) == ["['a_last']['kernel']", "['z_first']['kernel']"]
    assert by_name["['z_first']['kernel']"] == (0, 2, 4, 3, 12)
    assert by_name["['a_last']['kernel']"] == (1, 2, 3, 2, 6)


def test_conv_kernel_fans_and_unused_leaf_goes_last():
    params = {
        "a_unused": {"kernel": jnp.zeros((4, 3))},
        "conv": {"kernel": jnp.zeros((3, 3, 4, 8)), "bias": jnp.zeros((8,))},
    }

    def apply_fn(p, x):
        y = jax.lax.conv_general_dilated(
            x,
            p["conv"]["kernel"],
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return (y + p["conv"]["bias"][None, None, None, :]).reshape(x.shape[0], -1)

    ctxs = layers.layer_contexts(params, apply_fn=apply_fn, input_shape=(5, 5, 4))
    assert ctxs == [
        layers.LeafContext(1, 2, 4, 3, 12),
        None,
        layers.LeafContext(
            layer_index=0, num_layers=2, fan_in=36, fan_out=72, size=288
        ),
    ]


def test_prunable_predicate_decides_which_leaves_get_a_context(
    tiny_params, tiny_apply_fn
):
    def only_dense_1(path, leaf):
        return masks.is_prunable(path, leaf) and "Dense_1" in jax.tree_util.keystr(path)

    ctxs = layers.layer_contexts(
        tiny_params,
        apply_fn=tiny_apply_fn,
        input_shape=INPUT_SHAPE,
        prunable=only_dense_1,
    )
    # Leaves in tree order: Dense_0 bias, kernel; Dense_1 bias, kernel.
    assert ctxs == [None, None, None, layers.LeafContext(0, 1, 3, 2, 6)]


def test_default_contexts_of_the_tiny_network(tiny_params, tiny_apply_fn):
    ctxs = layers.layer_contexts(
        tiny_params, apply_fn=tiny_apply_fn, input_shape=INPUT_SHAPE
    )
    assert ctxs == [
        None,
        layers.LeafContext(0, 2, 4, 3, 12),
        None,
        layers.LeafContext(1, 2, 3, 2, 6),
    ]


def test_tree_order_contexts_use_tree_order_without_a_forward_pass(key):
    params, apply_fn = _flax(NamedAgainstUse(), key)
    # Tree order: a_last (bias, kernel), z_first (bias, kernel).
    assert layers.tree_order_contexts(params) == [
        None,
        layers.LeafContext(0, 2, 3, 2, 6),
        None,
        layers.LeafContext(1, 2, 4, 3, 12),
    ]
    by_use = layers.layer_contexts(params, apply_fn=apply_fn, input_shape=INPUT_SHAPE)
    assert [c.layer_index for c in by_use if c is not None] == [1, 0]


def test_no_prunable_leaf_is_a_clear_error(tiny_params, tiny_apply_fn):
    def nothing(path, leaf):
        return False

    with pytest.raises(ValueError, match="no prunable weights"):
        layers.tree_order_contexts(tiny_params, prunable=nothing)
    with pytest.raises(ValueError, match="no prunable weights"):
        layers.layer_contexts(
            tiny_params,
            apply_fn=tiny_apply_fn,
            input_shape=INPUT_SHAPE,
            prunable=nothing,
        )
