"""Conformance suite: every criterion in ``criteria.CRITERIA`` honours the contract.

The optax ``_common_test.py`` pattern: one parametrised test per property, run
over every registered criterion on the tiny conftest fixtures.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_close, assert_trees_all_equal
from jax.flatten_util import ravel_pytree

from autosparse_jax import criteria, masks

NAMES = sorted(criteria.CRITERIA)
LOWEST = np.finfo(np.float32).min
N_PRUNABLE = 12 + 6  # tiny_params kernels (4, 3) and (3, 2)


def _random_mask(seed, params, sparsity=0.5):
    keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
    leaves, treedef = jax.tree.flatten(params)
    scores = [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    return masks.mask_from_scores(jax.tree.unflatten(treedef, scores), sparsity)


def _num_kept(mask):
    items, _ = jax.tree_util.tree_flatten_with_path(mask)
    return sum(int(np.sum(m)) for p, m in items if masks.is_prunable(p, m))


def test_registry_is_read_only_and_complete():
    assert NAMES == ["grasp", "magnitude", "random", "snip", "synflow"]
    with pytest.raises(TypeError):
        criteria.CRITERIA["mine"] = criteria.magnitude
    assert dict(criteria.DEFAULT_ROUNDS) == {"synflow": 100}


@pytest.mark.parametrize("name", NAMES)
def test_scores_have_params_structure_and_are_finite(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    fn = criteria.CRITERIA[name]
    mask = masks.dense_mask(tiny_params)
    scores = fn(key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn, mask=mask)
    assert jax.tree.structure(scores) == jax.tree.structure(tiny_params)
    for s, p in zip(jax.tree.leaves(scores), jax.tree.leaves(tiny_params), strict=True):
        assert s.shape == p.shape
        assert jnp.issubdtype(s.dtype, jnp.floating)
        assert bool(jnp.isfinite(s).all())
    assert float(jnp.abs(scores["Dense_0"]["kernel"]).sum()) > 0.0


@pytest.mark.parametrize("name", NAMES)
def test_already_pruned_weights_score_lowest(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = _random_mask(3, tiny_params)
    assert _num_kept(mask) == 9
    scores = criteria.compute_scores(
        key,
        criteria.CRITERIA[name],
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        mask=mask,
    )
    assert jax.tree.structure(scores) == jax.tree.structure(tiny_params)
    flat_s, flat_m = ravel_pytree(scores)[0], ravel_pytree(mask)[0]
    assert flat_s.dtype == jnp.float32 and np.isfinite(flat_s).all()
    np.testing.assert_array_equal(flat_s[~flat_m], LOWEST)
    assert float(flat_s[flat_m].min()) > LOWEST
    # Re-pruning without passing mask= still never revives a pruned weight.
    again = masks.mask_from_scores(scores, 0.7)
    for a, m in zip(jax.tree.leaves(again), jax.tree.leaves(mask), strict=True):
        assert not (np.asarray(a) & ~np.asarray(m)).any()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_key(name, key, tiny_params, tiny_batch, tiny_apply_fn):
    fn = criteria.CRITERIA[name]
    mask = _random_mask(4, tiny_params)
    first = fn(key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn, mask=mask)
    second = fn(key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn, mask=mask)
    assert_trees_all_equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name, key, tiny_params, tiny_batch, tiny_apply_fn):
    fn = criteria.CRITERIA[name]
    mask = _random_mask(5, tiny_params)
    eager = fn(key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn, mask=mask)
    jitted = jax.jit(fn, static_argnames="apply_fn")(
        key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn, mask=mask
    )
    assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_compiles_once_across_params_and_masks(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    fn = criteria.CRITERIA[name]
    traces = []

    def counted(key, params, batch, mask):
        traces.append(None)
        return fn(key, params, batch, apply_fn=tiny_apply_fn, mask=mask)

    jitted = jax.jit(counted)
    other_params = jax.tree.map(lambda p: 0.5 * p + 0.1, tiny_params)
    first = jitted(key, tiny_params, tiny_batch, _random_mask(6, tiny_params))
    second = jitted(key, other_params, tiny_batch, _random_mask(7, tiny_params, 0.3))
    jax.block_until_ready((first, second))
    assert len(traces) == 1
    assert jitted._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_prune_at_init_with_default_rounds_hits_exact_count(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    num_rounds = min(criteria.DEFAULT_ROUNDS.get(name, 1), 5)  # synflow: 5, not 100
    mask = criteria.prune_at_init(
        key,
        criteria.CRITERIA[name],
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.8,
        num_rounds=num_rounds,
    )
    keep = int(np.round((np.float32(1) - np.float32(0.8)) * np.float32(N_PRUNABLE)))
    assert keep == 4  # round(0.2 * 18) = round(3.6)
    assert _num_kept(mask) == keep
    assert float(masks.sparsity(mask)) == pytest.approx(1 - keep / N_PRUNABLE)
    assert jax.tree.structure(mask) == jax.tree.structure(tiny_params)
    assert mask["Dense_0"]["bias"].all() and mask["Dense_1"]["bias"].all()


def _head_apply(params, x):
    x = x.reshape(x.shape[0], -1)
    h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None, :]
    h = jax.nn.relu(h)
    return h @ params["head"]["kernel"] + params["head"]["bias"][None, :]


@pytest.mark.parametrize("name", NAMES)
def test_prune_at_init_honours_a_custom_predicate(name, key, tiny_params, tiny_batch):
    params = {"Dense_0": tiny_params["Dense_0"], "head": tiny_params["Dense_1"]}
    prunable = masks.is_prunable_except_output
    mask = criteria.prune_at_init(
        key,
        criteria.CRITERIA[name],
        params,
        tiny_batch,
        apply_fn=_head_apply,
        sparsity=0.5,
        prunable=prunable,
    )
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert mask["head"]["kernel"].all() and mask["head"]["bias"].all()
    assert int(mask["Dense_0"]["kernel"].sum()) == 6  # round(0.5 * 12), head excluded
    scores = criteria.compute_scores(
        key,
        criteria.CRITERIA[name],
        params,
        tiny_batch,
        apply_fn=_head_apply,
        mask=mask,
        prunable=prunable,
    )
    assert all(bool(jnp.isfinite(s).all()) for s in jax.tree.leaves(scores))
    kept = np.asarray(scores["Dense_0"]["kernel"])[
        np.asarray(mask["Dense_0"]["kernel"])
    ]
    assert kept.min() > LOWEST


@pytest.mark.parametrize("name", NAMES)
def test_a_prunable_keyword_defaults_to_is_prunable(name):
    parameter = inspect.signature(criteria.CRITERIA[name]).parameters.get("prunable")
    if name in ("grasp", "synflow"):  # their scores depend on which leaves are pruned
        assert parameter is not None
    if parameter is not None:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default is masks.is_prunable
