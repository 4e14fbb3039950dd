"""Tests for autosparse_jax.metagrad: the meta-gradient through SGD steps."""

import functools

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_close

from autosparse_jax import criteria, losses, masks, metagrad

# Jitted once per test module: eager dispatch of the unrolled steps is slow.
_metagradient = jax.jit(
    metagrad.metagradient, static_argnames=("apply_fn", "num_steps")
)
_prospr = jax.jit(metagrad.prospr, static_argnames=("apply_fn", "num_steps"))
_snip = jax.jit(criteria.snip, static_argnames=("apply_fn",))


def _linear(params, x):
    return x.reshape(x.shape[0], -1) @ params["kernel"]


def _one_input_batches(num: int):
    """``num`` batches of one example: input 1, label 0."""
    return {"image": jnp.ones((num, 1, 1)), "label": jnp.zeros((num, 1), jnp.int32)}


def test_one_step_on_a_linear_model_has_the_closed_form():
    # logits = [c, c]: p = [1/2, 1/2], g0 = [-1/2, 1/2], and the Hessian of the
    # cross-entropy in the kernel is [[1, -1], [-1, 1]] / 4. One step of size
    # lr gives logits [c + lr/2, c - lr/2]: on the held example
    # g1 = (1 - s) [-1, 1] with s = sigmoid(lr), so
    # dL/dm = c (g1 - lr H g1) = c (1 - s) (1 - lr/2) [-1, 1].
    c, lr = 2.0, 1.0
    params = {"kernel": jnp.full((1, 2), c)}
    dm = _metagradient(
        params,
        _one_input_batches(2),
        apply_fn=_linear,
        mask=masks.dense_mask(params),
        num_steps=1,
        learning_rate=lr,
    )
    expected = c * (1 - jax.nn.sigmoid(lr)) * (1 - lr / 2) * jnp.array([[-1.0, 1.0]])
    np.testing.assert_allclose(dm["kernel"], expected, rtol=1e-5)
    np.testing.assert_allclose(expected, [[-0.2689414, 0.2689414]], rtol=1e-5)


def test_one_step_matches_the_hessian_formula(tiny_params, tiny_apply_fn):
    # w1 = w0 - lr g_a(w0); dL_b(w1)/dm = w0 * (I - lr H_a(w0)) g_b(w1).
    k1, k2 = jax.random.split(jax.random.key(0))
    batches = {
        "image": jax.random.normal(k1, (2, 8, 2, 2, 1)),
        "label": jax.random.randint(k2, (2, 8), 0, 2),
    }
    lr = 0.3
    flat, unravel = jax.flatten_util.ravel_pytree(tiny_params)

    def loss(w, i):
        b = jax.tree.map(lambda x: x[i], batches)
        logits = tiny_apply_fn(unravel(w), b["image"])
        return losses.cross_entropy(logits, b["label"])

    @jax.jit
    def closed_form(w0):
        g1 = jax.grad(loss)(w0 - lr * jax.grad(loss)(w0, 0), 1)
        return w0 * (g1 - lr * jax.hessian(loss)(w0, 0) @ g1)

    expected = closed_form(flat)
    dm = _metagradient(
        tiny_params,
        batches,
        apply_fn=tiny_apply_fn,
        mask=masks.dense_mask(tiny_params),
        num_steps=1,
        learning_rate=lr,
    )
    np.testing.assert_allclose(
        jax.flatten_util.ravel_pytree(dm)[0], expected, rtol=1e-4, atol=1e-7
    )


def test_zero_steps_is_snip(tiny_params, tiny_apply_fn, tiny_batch, key):
    mask = masks.dense_mask(tiny_params)
    mask["Dense_0"]["kernel"] = mask["Dense_0"]["kernel"].at[0, :2].set(False)
    stacked = jax.tree.map(lambda x: x.reshape(2, 4, *x.shape[1:]), tiny_batch)
    for batch in (tiny_batch, stacked):
        scores = _prospr(
            key, tiny_params, batch, apply_fn=tiny_apply_fn, mask=mask, num_steps=0
        )
        expected = _snip(key, tiny_params, batch, apply_fn=tiny_apply_fn, mask=mask)
        assert_trees_all_close(scores, expected, rtol=1e-6)


def test_zero_learning_rate_is_snip_on_the_held_batches(tiny_params, tiny_apply_fn):
    k1, k2 = jax.random.split(jax.random.key(1))
    batches = {
        "image": jax.random.normal(k1, (3, 4, 2, 2, 1)),
        "label": jax.random.randint(k2, (3, 4), 0, 2),
    }
    mask = masks.dense_mask(tiny_params)
    scores = _prospr(
        None, tiny_params, batches, apply_fn=tiny_apply_fn, mask=mask,
        num_steps=2, learning_rate=0.0,
    )  # fmt: skip
    held = jax.tree.map(lambda x: x[2], batches)
    expected = _snip(None, tiny_params, held, apply_fn=tiny_apply_fn, mask=mask)
    assert_trees_all_close(scores, expected, rtol=1e-6)


def test_steps_change_the_scores_and_pruned_weights_score_zero(
    tiny_params, tiny_apply_fn
):
    k1, k2 = jax.random.split(jax.random.key(2))
    batches = {
        "image": jax.random.normal(k1, (4, 8, 2, 2, 1)),
        "label": jax.random.randint(k2, (4, 8), 0, 2),
    }
    mask = masks.dense_mask(tiny_params)
    mask["Dense_1"]["kernel"] = mask["Dense_1"]["kernel"].at[1].set(False)
    fn = functools.partial(
        _metagradient, tiny_params, batches, apply_fn=tiny_apply_fn,
        mask=mask, learning_rate=0.5,
    )  # fmt: skip
    ahead, now = fn(num_steps=3), fn(num_steps=0)
    assert np.all(np.asarray(ahead["Dense_1"]["kernel"][1]) == 0.0)
    diff = np.abs(np.asarray(ahead["Dense_0"]["kernel"] - now["Dense_0"]["kernel"]))
    assert diff.max() > 1e-4


def test_jit_compiles_once_with_a_traced_learning_rate(tiny_params, tiny_apply_fn):
    k1, k2 = jax.random.split(jax.random.key(3))
    batches = {
        "image": jax.random.normal(k1, (3, 8, 2, 2, 1)),
        "label": jax.random.randint(k2, (3, 8), 0, 2),
    }
    mask = masks.dense_mask(tiny_params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def scores(lr):
        return metagrad.prospr(
            None, tiny_params, batches, apply_fn=tiny_apply_fn, mask=mask,
            num_steps=2, learning_rate=lr,
        )  # fmt: skip

    eager = metagrad.prospr(
        None, tiny_params, batches, apply_fn=tiny_apply_fn, mask=mask,
        num_steps=2, learning_rate=0.2,
    )  # fmt: skip
    assert_trees_all_close(scores(jnp.float32(0.2)), eager, rtol=1e-5)
    scores(jnp.float32(0.1))


@pytest.mark.parametrize(
    ("num_steps", "learning_rate", "match"),
    [
        (3, 0.1, "at least 4 stacked batches"),
        (-1, 0.1, "at least 0"),
        (1.5, 0.1, "integer"),
        (1, -0.1, "learning_rate"),
    ],
)
def test_bad_arguments_raise(
    tiny_params, tiny_apply_fn, num_steps, learning_rate, match
):
    batches = {
        "image": jnp.ones((2, 1, 2, 2, 1)),
        "label": jnp.zeros((2, 1), jnp.int32),
    }
    with pytest.raises(ValueError, match=match):
        metagrad.metagradient(
            tiny_params, batches, apply_fn=tiny_apply_fn,
            mask=masks.dense_mask(tiny_params), num_steps=num_steps,
            learning_rate=learning_rate,
        )  # fmt: skip
