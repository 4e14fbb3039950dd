"""Tests for autosparse_jax.masks: exact top-k masks, statistics, schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_equal
from hypothesis import given, settings
from hypothesis import strategies as st

from autosparse_jax import masks

T, F = True, False
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)


def _style_scores():
    return {"w": jnp.array([[0.1, 0.9], [0.2, 0.5]]), "b": jnp.array([3.0, 4.0])}


def _wiggle(*shape):
    """Deterministic, distinct float32 scores of the given shape (no PRNG)."""
    return jnp.asarray(np.sin(np.arange(math.prod(shape)) + 1.0).reshape(shape))


def _expected_keep(sparsity, n):
    """The documented count: ``round((1 - s) * n)`` in float32, half to even."""
    return int(np.round((np.float32(1) - np.float32(sparsity)) * np.float32(n)))


def _num_kept(tree, prunable=masks.is_prunable):
    items, _ = jax.tree_util.tree_flatten_with_path(tree)
    return sum(int(np.sum(m)) for p, m in items if prunable(p, m))


# ---- predicates, dense_mask, apply_mask -------------------------------------


def test_is_prunable_selects_kernels():
    assert masks.is_prunable((), jnp.zeros((4, 3)))
    assert masks.is_prunable((), jnp.zeros((3, 3, 2, 8)))
    assert not masks.is_prunable((), jnp.zeros((3,)))


def test_is_prunable_except_output_leaves_head_dense(tiny_params):
    params = {"Dense_0": tiny_params["Dense_0"], "head": tiny_params["Dense_1"]}
    scores = jax.tree.map(jnp.abs, params)
    prunable = masks.is_prunable_except_output
    mask = masks.mask_from_scores(scores, 0.5, prunable=prunable)
    assert masks.OUTPUT_LAYER_NAME == "head"
    assert mask["head"]["kernel"].all() and mask["head"]["bias"].all()
    assert int(mask["Dense_0"]["kernel"].sum()) == 6  # round(0.5 * 12)
    assert float(masks.sparsity(mask, prunable=prunable)) == 0.5
    assert masks.sparsity_by_layer(mask, prunable=prunable) == {"Dense_0/kernel": 0.5}


def test_dense_mask_is_all_true_bool(tiny_params):
    mask = masks.dense_mask(tiny_params)
    assert jax.tree.structure(mask) == jax.tree.structure(tiny_params)
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(tiny_params), strict=True):
        assert m.dtype == jnp.bool_ and m.shape == p.shape and m.all()


def test_apply_mask_zeroes_pruned_entries_and_is_idempotent(tiny_params):
    mask = masks.mask_from_scores(jax.tree.map(jnp.abs, tiny_params), 0.5)
    once = masks.apply_mask(tiny_params, mask)
    assert_trees_all_equal(masks.apply_mask(once, mask), once)
    for p, m, q in zip(*map(jax.tree.leaves, (tiny_params, mask, once)), strict=True):
        np.testing.assert_array_equal(q, np.where(m, p, 0.0))
        assert q.dtype == p.dtype


def test_apply_mask_keeps_dtype():
    params = {"w": jnp.ones((2, 2), jnp.bfloat16)}
    out = masks.apply_mask(params, {"w": jnp.array([[T, F], [F, T]])})
    assert out["w"].dtype == jnp.bfloat16
    assert out["w"].tolist() == [[1, 0], [0, 1]]


# ---- mask_from_scores: hand cases --------------------------------------------


def test_style_hand_case():
    mask = masks.mask_from_scores(_style_scores(), 0.5)
    assert mask["w"].tolist() == [[F, T], [F, T]]
    assert mask["b"].all()  # 1-D leaf: not prunable


@pytest.mark.parametrize(
    ("sparsity", "expected"),
    [
        (0.0, [[T, T], [T, T]]),
        (0.25, [[F, T], [T, T]]),  # keep |-0.9|, 0.5, 0.2
        (0.5, [[F, T], [F, T]]),  # keep |-0.9|, 0.5
        (0.75, [[F, T], [F, F]]),  # keep |-0.9|
    ],
)
def test_magnitude_hand_values(sparsity, expected):
    scores = {"w": jnp.abs(jnp.array([[0.1, -0.9], [0.2, 0.5]]))}
    assert masks.mask_from_scores(scores, sparsity)["w"].tolist() == expected


def test_ties_are_broken_by_flat_index():
    scores = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 3))}  # leaves order: a, b
    glob = masks.mask_from_scores(scores, 0.5)  # keep 5 of 10: all of a, b[0, 0]
    assert glob["a"].tolist() == [[T, T], [T, T]]
    assert glob["b"].tolist() == [[T, F, F], [F, F, F]]
    layer = masks.mask_from_scores(scores, 0.5, scope="layerwise")  # 2 of 4, 3 of 6
    assert layer["a"].tolist() == [[T, T], [F, F]]
    assert layer["b"].tolist() == [[T, T, T], [F, F, F]]
    signed_zeros = {"w": jnp.array([[-0.0, 0.0], [0.0, -0.0]])}
    assert masks.mask_from_scores(signed_zeros, 0.5)["w"].tolist() == [[T, T], [F, F]]


def test_layerwise_exact_counts(tiny_params):
    scores = jax.tree.map(jnp.abs, tiny_params)
    mask = masks.mask_from_scores(scores, 0.3, scope="layerwise")
    assert int(mask["Dense_0"]["kernel"].sum()) == 8  # round(0.7 * 12) = round(8.4)
    assert int(mask["Dense_1"]["kernel"].sum()) == 4  # round(0.7 * 6) = round(4.2)
    assert mask["Dense_0"]["bias"].all() and mask["Dense_1"]["bias"].all()


def test_global_count_is_round_of_kept_fraction(tiny_params):
    scores = jax.tree.map(jnp.abs, tiny_params)  # N = 12 + 6 = 18
    for s in (0.0, 0.1, 0.25, 0.5, 0.9, 0.99):
        mask = masks.mask_from_scores(scores, s)
        assert _num_kept(mask) == _expected_keep(s, 18) == round((1 - s) * 18)
        assert mask["Dense_0"]["bias"].all() and mask["Dense_1"]["bias"].all()


def test_global_and_layerwise_agree_with_one_prunable_leaf():
    scores = {"kernel": _wiggle(5, 4), "bias": jnp.arange(4.0)}
    for s in (0.0, 0.2, 0.5, 0.95):
        assert_trees_all_equal(
            masks.mask_from_scores(scores, s),
            masks.mask_from_scores(scores, s, scope="layerwise"),
        )


def test_already_pruned_weights_stay_pruned():
    scores = {"w": jnp.array([[4.0, 3.0], [2.0, 1.0]])}
    prior = {"w": jnp.array([[F, T], [T, T]])}  # the best weight is already pruned
    mask = masks.mask_from_scores(scores, 0.5, mask=prior)
    assert mask["w"].tolist() == [[F, T], [T, F]]  # keep 2: the alive 3.0 and 2.0
    assert masks.mask_from_scores(scores, 0.0, mask=prior)["w"].tolist() == [
        [F, T],
        [T, T],
    ]
    one_alive = {"w": jnp.array([[F, F], [F, T]])}  # 2 requested, 1 alive
    for scope in ("global", "layerwise"):
        out = masks.mask_from_scores(scores, 0.5, scope=scope, mask=one_alive)
        assert out["w"].tolist() == [[F, F], [F, T]]


def test_mask_invariants(tiny_params):
    scores = jax.tree.map(jnp.abs, tiny_params)
    for scope in ("global", "layerwise"):
        mask = masks.mask_from_scores(scores, 0.7, scope=scope)
        assert jax.tree.structure(mask) == jax.tree.structure(tiny_params)
        for m, p in zip(
            jax.tree.leaves(mask), jax.tree.leaves(tiny_params), strict=True
        ):
            assert m.dtype == jnp.bool_ and m.shape == p.shape


def test_integer_scores_are_accepted():
    mask = masks.mask_from_scores({"w": jnp.array([[1, 4], [3, 2]])}, 0.5)
    assert mask["w"].tolist() == [[F, T], [T, F]]


# ---- jit and vmap over sparsity -----------------------------------------------


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_jit_with_traced_sparsity_matches_eager_without_retracing(tiny_params, scope):
    scores = jax.tree.map(jnp.abs, tiny_params)
    traces = []

    def fn(scores, sparsity):
        traces.append(None)
        return masks.mask_from_scores(scores, sparsity, scope=scope)

    jitted = jax.jit(fn)
    for s in (0.0, 0.3, 0.5, 0.9):
        assert_trees_all_equal(jitted(scores, s), fn(scores, s))
    assert len(traces) == 1 + 4  # one trace, plus the four eager calls


def test_jit_with_static_scope_and_prunable(tiny_params):
    scores = jax.tree.map(jnp.abs, tiny_params)
    jitted = jax.jit(masks.mask_from_scores, static_argnames=("scope", "prunable"))
    out = jitted(
        scores, jnp.float32(0.5), scope="layerwise", prunable=masks.is_prunable
    )
    assert_trees_all_equal(out, masks.mask_from_scores(scores, 0.5, scope="layerwise"))


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_vmap_over_sparsities_matches_python_loop(tiny_params, scope):
    scores = jax.tree.map(jnp.abs, tiny_params)
    levels = [0.0, 0.2, 0.5, 0.8, 0.95]
    swept = jax.vmap(lambda s: masks.mask_from_scores(scores, s, scope=scope))(
        jnp.array(levels)
    )
    for i, s in enumerate(levels):
        expected = masks.mask_from_scores(scores, s, scope=scope)
        assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], swept), expected)


def test_loop_and_vmap_agree_where_float64_rounds_differently():
    # (1 - 0.9) * 5 is 0.4999... in float64 but 0.5000001 in float32: the count
    # must not depend on whether the sparsity is a Python float or traced.
    scores = {"w": _wiggle(5, 1)}
    looped = masks.mask_from_scores(scores, 0.9)
    swept = jax.vmap(lambda s: masks.mask_from_scores(scores, s))(jnp.array([0.9]))
    jitted = jax.jit(masks.mask_from_scores)(scores, 0.9)
    assert_trees_all_equal(jax.tree.map(lambda x: x[0], swept), looped)
    assert_trees_all_equal(jitted, looped)
    assert _num_kept(looped) == _expected_keep(0.9, 5) == 1


# ---- statistics ---------------------------------------------------------------


def _stats_mask():
    return {
        "Dense_0": {"kernel": jnp.array([[T, F], [F, F]]), "bias": jnp.ones(2, bool)},
        "Dense_1": {"kernel": jnp.array([[T, T, F], [F, T, F]])},
    }


def test_sparsity_hand_case():
    mask = _stats_mask()  # kept 1 of 4 and 3 of 6: 1 - 4 / 10
    value = masks.sparsity(mask)
    assert value.dtype == jnp.float32 and value.shape == ()
    np.testing.assert_allclose(value, 0.6, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(masks.sparsity)(mask), 0.6, rtol=1e-6)
    assert masks.mask_sparsity is masks.sparsity
    assert float(masks.sparsity(masks.dense_mask(mask))) == 0.0


def test_sparsity_by_layer_hand_case():
    assert masks.sparsity_by_layer(_stats_mask()) == {
        "Dense_0/kernel": 0.75,
        "Dense_1/kernel": 0.5,
    }


# ---- schedules ----------------------------------------------------------------


def test_schedule_sparsity_hand_values():
    assert masks.SCHEDULES == ("geometric", "linear")
    rounds = jnp.arange(2)
    geo = masks.schedule_sparsity(0.99, rounds, 2, "geometric")
    np.testing.assert_allclose(geo, [0.9, 0.99], rtol=1e-6)  # 1 - 0.01 ** 0.5
    lin = masks.schedule_sparsity(0.9, jnp.arange(3), 3, "linear")
    np.testing.assert_allclose(lin, [0.3, 0.6, 0.9], rtol=1e-6)
    geo3 = masks.schedule_sparsity(0.875, jnp.arange(3), 3, "geometric")
    np.testing.assert_allclose(geo3, [0.5, 0.75, 0.875], rtol=1e-6)  # 1 - 0.125**(r/3)
    assert masks.schedule_sparsity(0.99, 0, 2, "geometric") == pytest.approx(0.9)
    assert masks.schedule_sparsity(0.9, 1, 3, "linear") == pytest.approx(0.6)


def test_schedule_sparsity_exponential_is_geometric():
    rounds = jnp.arange(4)
    assert_trees_all_equal(
        masks.schedule_sparsity(0.95, rounds, 4, "exponential"),
        masks.schedule_sparsity(0.95, rounds, 4, "geometric"),
    )
    # Not the linear schedule: 1 - 0.05 ** 0.25 = 0.527 after round 0, not 0.2375.
    first = masks.schedule_sparsity(0.95, 0, 4, "exponential")
    assert first == pytest.approx(1 - 0.05**0.25)
    assert first != pytest.approx(masks.schedule_sparsity(0.95, 0, 4, "linear"))


@pytest.mark.parametrize("schedule", ["geometric", "exponential", "linear"])
def test_schedule_sparsity_ends_at_the_target_and_increases(schedule):
    for s in (0.0, 0.3, 0.9, 0.99, 0.995):
        for num_rounds in (1, 2, 7, 100):
            steps = np.asarray(
                masks.schedule_sparsity(s, jnp.arange(num_rounds), num_rounds, schedule)
            )
            assert float(steps[-1]) == pytest.approx(s, rel=1e-6, abs=1e-7)
            assert np.all(np.diff(steps) >= 0)


def test_schedule_sparsity_traced_matches_python():
    fn = jax.jit(lambda s, r: masks.schedule_sparsity(s, r, 5, "geometric"))
    for r in range(5):
        expected = masks.schedule_sparsity(0.99, r, 5, "geometric")
        np.testing.assert_allclose(fn(0.99, r), expected, rtol=1e-6)


def test_schedule_sparsity_unknown_name_raises():
    with pytest.raises(ValueError, match=r"schedule must be one of.*'cosine'"):
        masks.schedule_sparsity(0.5, 0, 2, "cosine")


# ---- errors -------------------------------------------------------------------


def test_unknown_scope_raises():
    with pytest.raises(ValueError, match=r"scope must be one of.*global.*layerwise"):
        masks.mask_from_scores(_style_scores(), 0.5, scope="per_layer")


def test_mismatched_trees_raise():
    scores = _style_scores()
    bad_mask = {"w": jnp.ones((2, 2), bool)}
    with pytest.raises(ValueError, match=r"same tree structure[\s\S]*PyTreeDef"):
        masks.mask_from_scores(scores, 0.5, mask=bad_mask)
    with pytest.raises(ValueError, match="mask and params must have the same tree"):
        masks.apply_mask(scores, bad_mask)
    wrong_shape = {"w": jnp.ones((2, 3), bool), "b": jnp.ones(2, bool)}
    with pytest.raises(ValueError, match=r"'w' has shape \(2, 3\)"):
        masks.apply_mask(scores, wrong_shape)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_sparsity_out_of_range_raises(bad, scope):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\).*got"):
        masks.mask_from_scores(_style_scores(), bad, scope=scope)


@pytest.mark.parametrize("bad", ["0.9", b"0.9", np.str_("0.9"), False, None])
def test_non_numeric_sparsity_raises(bad):
    # float() would accept "0.9" (prune 90%) and False (prune nothing).
    match = r"sparsity must be a number in \[0, 1\).*of type"
    with pytest.raises(ValueError, match=match):
        masks.mask_from_scores(_style_scores(), bad)


def test_non_scalar_sparsity_raises():
    with pytest.raises(ValueError, match=r"must be a scalar, got shape \(2,\)"):
        masks.mask_from_scores(_style_scores(), jnp.array([0.5, 0.9]))


def test_per_leaf_sparsity_tree_raises_a_clear_error(tiny_params):
    # Per-leaf sparsities were removed (allocation.uniform and allocation.erk
    # give per-layer counts); an old-style tree must get an actionable ValueError.
    scores = jax.tree.map(jnp.abs, tiny_params)
    per_leaf = jax.tree.map(lambda _: 0.5, tiny_params)
    with pytest.raises(ValueError, match="sparsity"):
        masks.mask_from_scores(scores, per_leaf, scope="layerwise")


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_non_finite_scores_raise(bad):
    scores = {"layer": {"kernel": jnp.array([[0.1, bad], [0.2, 0.5]])}}
    with pytest.raises(ValueError, match=r"finite.*'layer/kernel'"):
        masks.mask_from_scores(scores, 0.5)


def test_non_finite_non_prunable_scores_are_ignored():
    scores = {"w": jnp.array([[0.1, 0.9], [0.2, 0.5]]), "b": jnp.array([jnp.nan, 1.0])}
    assert masks.mask_from_scores(scores, 0.5)["b"].all()


def test_traced_nan_scores_rank_lowest():
    scores = {"w": jnp.array([[jnp.nan, 1.0], [2.0, 3.0]])}
    jitted = jax.jit(masks.mask_from_scores)  # tracers: no finiteness check
    assert jitted(scores, 0.5)["w"].tolist() == [[F, F], [T, T]]
    assert jitted(scores, 0.0)["w"].tolist() == [[T, T], [T, T]]


def test_non_bool_mask_raises():
    scores = _style_scores()
    float_mask = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    match = r"dtype float32, expected bool.*dense_mask.*astype\(bool\)"
    with pytest.raises(ValueError, match=match):
        masks.mask_from_scores(scores, 0.5, mask=float_mask)
    with pytest.raises(ValueError, match=match):
        masks.apply_mask(scores, float_mask)
    with pytest.raises(ValueError, match=match):
        masks.sparsity(float_mask)
    with pytest.raises(ValueError, match=match):
        masks.sparsity_by_layer(float_mask)


def test_no_prunable_leaves_raises():
    biases = {"b": jnp.ones(3), "c": jnp.ones(2)}
    with pytest.raises(ValueError, match="no prunable weights.*prunable="):
        masks.mask_from_scores(biases, 0.5)
    with pytest.raises(ValueError, match="no prunable weights"):
        masks.sparsity(masks.dense_mask(biases))
    only_head = {"head": {"kernel": jnp.ones((3, 2))}}
    with pytest.raises(ValueError, match="no prunable weights"):
        masks.mask_from_scores(only_head, 0.5, prunable=masks.is_prunable_except_output)


# ---- properties -----------------------------------------------------------------

SCORE_VALUES = (0.0, 0.5, 1.0, 2.0)  # few values, so ties are frequent


@st.composite
def score_trees(draw):
    """1-4 kernels of shape (1..4, 1..3) plus a 1-D bias; scores with many ties."""
    tree = {}
    for i in range(draw(st.integers(1, 4))):
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 3)))
        n = math.prod(shape)
        values = draw(st.lists(st.sampled_from(SCORE_VALUES), min_size=n, max_size=n))
        tree[f"Dense_{i}"] = {"kernel": jnp.asarray(np.reshape(values, shape))}
    bias = draw(st.lists(st.sampled_from(SCORE_VALUES), min_size=1, max_size=3))
    tree["bias"] = jnp.asarray(np.array(bias))
    return tree


sparsities = st.floats(0.0, 1.0, exclude_max=True)


def _kernels(tree):
    return [tree[k]["kernel"] for k in sorted(tree) if k != "bias"]


def _reference_global(scores, sparsity):
    """numpy oracle: stable argsort of -scores over the concatenated kernels."""
    kernels = [np.asarray(k) for k in jax.tree.leaves(scores) if k.ndim >= 2]
    flat = np.concatenate([k.ravel() for k in kernels])
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[: _expected_keep(sparsity, flat.size)]] = True
    return keep


@PROPERTY_SETTINGS
@given(score_trees(), sparsities)
def test_property_global_exact_count_and_oracle(scores, sparsity):
    mask = masks.mask_from_scores(scores, sparsity)
    num_prunable = sum(k.size for k in _kernels(scores))
    assert _num_kept(mask) == _expected_keep(sparsity, num_prunable)
    assert np.all(mask["bias"])
    flat = np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask) if m.ndim >= 2])
    np.testing.assert_array_equal(flat, _reference_global(scores, sparsity))


@PROPERTY_SETTINGS
@given(score_trees(), sparsities)
def test_property_layerwise_exact_counts(scores, sparsity):
    mask = masks.mask_from_scores(scores, sparsity, scope="layerwise")
    for m in _kernels(mask):
        assert int(np.sum(m)) == _expected_keep(sparsity, m.size)
    assert np.all(mask["bias"])


@PROPERTY_SETTINGS
@given(score_trees(), sparsities, sparsities, st.sampled_from(["global", "layerwise"]))
def test_property_monotone_in_sparsity(scores, s1, s2, scope):
    low, high = sorted((s1, s2))
    dense = masks.mask_from_scores(scores, low, scope=scope)
    sparse = masks.mask_from_scores(scores, high, scope=scope)
    for d, s in zip(jax.tree.leaves(dense), jax.tree.leaves(sparse), strict=True):
        assert not np.any(np.asarray(s) & ~np.asarray(d))


@PROPERTY_SETTINGS
@given(score_trees(), sparsities, sparsities)
def test_property_prior_mask_only_shrinks(scores, s1, s2):
    prior = masks.mask_from_scores(jax.tree.map(lambda x: -x, scores), s1)
    mask = masks.mask_from_scores(scores, s2, mask=prior)
    num_prunable = sum(k.size for k in _kernels(scores))
    expected = min(_expected_keep(s2, num_prunable), _num_kept(prior))
    assert _num_kept(mask) == expected
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(prior), strict=True):
        assert not np.any(np.asarray(m) & ~np.asarray(p))
