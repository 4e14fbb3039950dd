"""Tests for allocation.py: per-layer counts, exact totals, no empty layer."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_equal

from autosparse_jax import allocation, criteria, layers, masks, models

# A fixed AllocationModel with 7 weights (no fit), for tests that need any model.
FIXED = allocation.AllocationModel(
    weights=(0.3, -0.2, 0.1, 0.5, -0.4, 0.2, 0.1),
    slopes=(0.05, -0.05, 0.0, 0.1, 0.0, -0.05, 0.05),
    feature_mean=(0.0,) * 7,
    feature_std=(1.0,) * 7,
)
# Generating rule of the synthetic IRP densities (7 features).
W_TRUE = np.array([-0.4, 0.3, 0.0, -0.3, 0.2, -0.1, 0.4])
V_TRUE = np.array([0.05, -0.05, 0.0, -0.1, 0.05, 0.0, 0.1])
ROUND_DENSITIES = np.array([0.8, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01])
N_TINY = 18  # tiny_params: (4, 3) + (3, 2) kernels


def _total(sparsity, n):
    """``round((1 - s) * N)`` in float32, half to even (the library's count)."""
    return int(np.round((np.float32(1.0) - np.float32(sparsity)) * np.float32(n)))


def _kept(mask, prunable=masks.is_prunable):
    """``[L]`` number of kept weights per prunable leaf (host)."""
    leaves = masks._prunable_mask_leaves(mask, prunable)
    return np.array([int(jnp.sum(m, dtype=jnp.int32)) for _, m in leaves])


def _ic(kept, sizes, total):
    out = allocation.integer_counts(
        jnp.asarray(kept, jnp.float32), np.asarray(sizes), jnp.int32(total)
    )
    return np.asarray(out).tolist()


def _ctx(params, batch=None, apply_fn=None, **kwargs):
    """The context of ``params`` (tree-order depth without a batch)."""
    return allocation.make_context(
        jax.random.key(0), params, batch, apply_fn=apply_fn, **kwargs
    )


def _column_ctx(sizes):
    """A context whose prunable layers are ``(n, 1)`` kernels of the given sizes."""
    return _ctx({f"l{i}": jnp.zeros((int(n), 1)) for i, n in enumerate(sizes)})


def _returns(scores):
    """A criterion that gives ``scores`` whatever network it is asked about."""

    def criterion(key, params, batch, *, apply_fn, mask):
        del key, params, batch, apply_fn, mask
        return scores

    return criterion


def _synthetic_densities(phi, sizes, w, v, global_densities, pooled=None):
    """``[E, L]`` ``sigmoid(w.x + z v.x + t_e)``, ``t_e`` hitting each ``D_e``;
    ``x`` is ``phi`` standardised over its rows (or over ``pooled``'s)."""
    pooled = phi if pooled is None else pooled
    std = np.where(pooled.std(0) > 0, pooled.std(0), 1.0)
    x = (phi - pooled.mean(0)) / std
    a, b = x @ w, x @ v
    rows = []
    for d in global_densities:
        z = -math.log(d / (1 - d))
        lo, hi = -100.0, 100.0
        for _ in range(200):  # bisection on the shift t_e
            t = 0.5 * (lo + hi)
            kept = np.sum(sizes / (1 + np.exp(-(a + z * b + t))))
            lo, hi = (lo, t) if kept > d * np.sum(sizes) else (t, hi)
        rows.append(1 / (1 + np.exp(-(a + z * b + t))))
    return np.array(rows)


def _predicted_densities(model, phi, sizes, global_density):
    s = 1.0 - global_density
    logits = allocation.predict_logits(model, phi, s)
    counts = allocation.counts_from_logits(logits, s, _column_ctx(sizes))
    return np.asarray(counts) / sizes


def _abstract_model(name):
    """``(params, apply_fn, input_shape)`` with ShapeDtypeStruct params (no init)."""
    shape = (28, 28, 1) if name.startswith(("lenet", "mlp")) else (32, 32, 3)
    model = models.get_model(name, num_classes=10)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    )
    state = {
        k: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), col)
        for k, col in variables.items()
        if k != "params"
    }
    return variables["params"], models.make_apply_fn(model, state), shape


@pytest.fixture(scope="module")
def lenet_model():
    """An AllocationModel fitted on LeNet-300-100 synthetic IRP densities."""
    params, apply_fn, shape = _abstract_model("lenet300_100")
    phi = allocation.layer_features(params, apply_fn=apply_fn, input_shape=shape)
    sizes = allocation.layer_sizes(params)
    dens = _synthetic_densities(phi, sizes, W_TRUE, V_TRUE, ROUND_DENSITIES)
    return allocation.fit_allocation(
        phi, dens, sizes, metadata=(("model", "lenet300_100"),)
    )


# ----------------------------------------------------------------- contexts


def test_context_sizes_shapes_alive_and_layers(tiny_params, tiny_batch, tiny_apply_fn):
    mask = masks.dense_mask(tiny_params)
    mask["Dense_1"]["kernel"] = mask["Dense_1"]["kernel"].at[0].set(False)
    ctx = _ctx(tiny_params, tiny_batch, tiny_apply_fn, mask=mask)
    np.testing.assert_array_equal(ctx.sizes, [12, 6])
    assert ctx.shapes == [(4, 3), (3, 2)]
    np.testing.assert_array_equal(ctx.alive, [12, 4])  # row 0 of (3, 2) pruned
    assert ctx.layers == (
        layers.LeafContext(layer_index=0, num_layers=2, fan_in=4, fan_out=3, size=12),
        layers.LeafContext(layer_index=1, num_layers=2, fan_in=3, fan_out=2, size=6),
    )
    assert allocation.num_keep(0.5, ctx) == 9
    np.testing.assert_array_equal(_ctx(tiny_params).alive, [12, 6])  # dense default


def test_context_honours_the_prunable_predicate(tiny_params):
    params = {"Dense_0": tiny_params["Dense_0"], "head": tiny_params["Dense_1"]}
    ctx = _ctx(params, prunable=masks.is_prunable_except_output)
    np.testing.assert_array_equal(ctx.sizes, [12])
    assert ctx.shapes == [(4, 3)] and len(ctx.layers) == 1
    assert allocation.num_keep(0.5, ctx) == 6  # of the 12 kernel weights only
    np.testing.assert_array_equal(allocation.layer_sizes(params), [12, 6])
    np.testing.assert_array_equal(
        allocation.layer_sizes(params, prunable=masks.is_prunable_except_output), [12]
    )


def test_context_depth_follows_the_forward_pass_like_layer_features():
    params, apply_fn, shape = _abstract_model("conv2")
    batch = {"image": jnp.zeros((2, *shape)), "label": jnp.zeros((2,), jnp.int32)}
    expected = allocation.layer_features(params, apply_fn=apply_fn, input_shape=shape)
    ctx = _ctx(params, batch, apply_fn)
    np.testing.assert_array_equal(allocation.context_features(ctx.layers), expected)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), batch)  # [K, B, ...]
    assert _ctx(params, stacked, apply_fn).layers == ctx.layers
    assert allocation.input_shape_of(stacked) == shape


def test_context_without_a_batch_uses_tree_order():
    params = {"b": {"kernel": jnp.zeros((3, 2))}, "a": {"kernel": jnp.zeros((5, 3))}}
    ctx = _ctx(params)  # no forward pass: "a" (first in tree order) is layer 0
    assert [c.layer_index for c in ctx.layers] == [0, 1]
    assert ctx.shapes == [(5, 3), (3, 2)]


def test_context_and_input_shape_errors():
    biases = {"Dense_0": {"bias": jnp.zeros(3)}, "head": {"bias": jnp.zeros(2)}}
    with pytest.raises(ValueError, match="no prunable weights.*prunable="):
        _ctx(biases)
    deep = {"image": jnp.zeros((1, 1, 2, 4)), "label": jnp.zeros((1, 1, 2))}
    with pytest.raises(ValueError, match=r"\[B\].*\[K, B\].*\(1, 1, 2\)"):
        allocation.input_shape_of(deep)


def test_criterion_kwargs_pass_the_predicate_only_to_criteria_that_take_it():
    pred = masks.is_prunable_except_output
    assert allocation.criterion_kwargs(criteria.grasp, pred) == {"prunable": pred}
    assert allocation.criterion_kwargs(criteria.synflow, pred) == {"prunable": pred}
    assert allocation.criterion_kwargs(criteria.snip, pred) == {}
    assert allocation.criterion_kwargs(criteria.magnitude, pred) == {}


# ------------------------------------------------------------ integer_counts


def test_integer_counts_clips_the_empty_layer_up_to_one():
    # floor [2, 1, 0] -> clipped [2, 1, 1], sum 4 already.
    assert _ic([2.6, 1.2, 0.2], [10, 10, 10], 4) == [2, 1, 1]


def test_integer_counts_adds_the_remainder_by_largest_fraction():
    # floor [2, 3, 1] (sum 6), rest 2: fractions .5 .7 .8 -> layers 2 and 1.
    assert _ic([2.5, 3.7, 1.8], [10, 10, 10], 8) == [2, 4, 2]


def test_integer_counts_removes_from_the_smallest_fraction_after_clipping():
    # floor [6, 3, 0, 0] -> clipped [6, 3, 1, 1] (sum 11), rest -1: of the
    # layers above one (fractions .2, .3) the smallest fraction loses one.
    assert _ic([6.2, 3.3, 0.0, 0.5], [10, 10, 10, 10], 10) == [5, 3, 1, 1]


def test_integer_counts_never_exceeds_a_layer_size():
    # Layer 0 (size 3) has the largest fraction (.8) but is full: the two extra
    # weights go to layers 1 and 2.
    assert _ic([3.8, 2.5, 1.2], [3, 5, 5], 8) == [3, 3, 2]


def test_integer_counts_breaks_ties_to_the_lower_index():
    assert _ic([1.5, 1.5, 1.5], [10, 10, 10], 5) == [2, 2, 1]  # adds
    assert _ic([3.0, 3.0, 0.0], [10, 10, 10], 6) == [2, 3, 1]  # removes


def test_integer_counts_removes_several_from_one_layer():
    # Three empty layers clipped up to one: the only layer above one must give
    # back all three (a global top-k that put every weight in layer 0).
    assert _ic([10.0, 0.0, 0.0, 0.0], [20, 10, 10, 10], 10) == [7, 1, 1, 1]


# ---------------------------------------------------------------------- erk

ERK_SHAPES = {
    "dense": [(784, 300), (300, 100), (100, 10)],
    "conv": [(3, 3, 3, 16), (3, 3, 16, 32), (5, 5, 32, 32), (512, 10)],
}


def _erk_reference(shapes, sparsity):
    """RigL's ERK kept counts (reals): densify layers that would exceed 1, re-solve."""
    sizes = np.array([math.prod(s) for s in shapes], np.float64)
    raw = np.array([sum(s) / math.prod(s) for s in shapes])
    target = (1.0 - sparsity) * sizes.sum()
    dense = np.zeros(len(shapes), bool)
    while True:
        eps = (target - sizes[dense].sum()) / (raw * sizes)[~dense].sum()
        over = ~dense & (eps * raw > 1.0)
        if not over.any():
            return np.where(dense, sizes, eps * raw * sizes)
        dense |= over


def _erk_counts(shapes, sparsity, **kwargs):
    params = {f"l{i}": jnp.zeros(s) for i, s in enumerate(shapes)}
    return np.asarray(allocation.erk(**kwargs)(params, sparsity, _ctx(params)))


def test_erk_hand_case(tiny_params):
    # Kernels (4, 3) and (3, 2): ERK ratios 7/12 and 5/6, sizes 12 and 6.
    # Target kept at s = 0.5: 9 = eps * (7/12 * 12 + 5/6 * 6) = 12 eps, eps = 0.75.
    # Kept 0.75 * 7 = 5.25 and 0.75 * 5 = 3.75: floors [5, 3], the missing one
    # goes to the larger fraction (.75).
    ctx = _ctx(tiny_params)
    counts = allocation.erk()(tiny_params, 0.5, ctx)
    assert counts.dtype == jnp.int32 and counts.shape == (2,)
    np.testing.assert_array_equal(counts, [5, 4])
    scores = jax.tree.map(jnp.abs, tiny_params)
    mask = allocation.mask_from_counts(scores, counts)
    np.testing.assert_array_equal(_kept(mask), [5, 4])
    assert mask["Dense_0"]["bias"].all() and mask["Dense_1"]["bias"].all()


def test_erk_redistributes_when_a_layer_would_exceed_density_one():
    # (10, 10): ratio 20/100 = 0.2, 100 weights; (2, 2): ratio 4/4 = 1, 4 weights.
    # s = 0.5, target 52: eps = 52 / (0.2 * 100 + 1 * 4) = 2.17 makes (2, 2) exceed 1,
    # so it is dense and eps = (52 - 4) / 20 = 2.4: density 0.48, 48 kept.
    params = {
        "big": {"kernel": jnp.ones((10, 10))},
        "small": {"kernel": jnp.ones((2, 2))},
    }
    counts = allocation.erk()(params, 0.5, _ctx(params))
    np.testing.assert_array_equal(counts, [48, 4])
    mask = allocation.mask_from_counts(params, counts)
    assert mask["small"]["kernel"].all()
    np.testing.assert_array_equal(_kept(mask), [48, 4])
    np.testing.assert_allclose(_erk_reference([(10, 10), (2, 2)], 0.5), [48, 4])


def test_erk_conv_ratios_by_hand():
    # Sizes 216, 1152, 640 (N = 2008): keep round(0.1 * 2008) = 201. None is
    # densified, so kept_l = 201 * sum(shape_l) / (17 + 30 + 74) = 28.24, 49.83,
    # 122.93: floors [28, 49, 122] (199), the two missing to the largest fractions.
    shapes = [(3, 3, 3, 8), (3, 3, 8, 16), (64, 10)]
    np.testing.assert_array_equal(_erk_counts(shapes, 0.9), [28, 50, 123])


@pytest.mark.parametrize("kind", sorted(ERK_SHAPES))
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_erk_matches_the_rigl_reference(kind, sparsity):
    shapes = ERK_SHAPES[kind]
    sizes = np.array([math.prod(s) for s in shapes])
    counts = _erk_counts(shapes, sparsity)
    assert counts.sum() == _total(sparsity, sizes.sum())
    np.testing.assert_allclose(counts, _erk_reference(shapes, sparsity), atol=1.01)
    assert np.all((counts >= 1) & (counts <= sizes))


def test_erk_edge_cases(tiny_params):
    ctx = _ctx(tiny_params)
    np.testing.assert_array_equal(allocation.erk()(tiny_params, 0.0, ctx), [12, 6])
    # power_scale 0 is uniform: keep round(0.3 * 18) = 5, i.e. 3.33 and 1.67.
    flat = allocation.erk(power_scale=0.0)(tiny_params, 0.7, ctx)
    np.testing.assert_array_equal(flat, [3, 2])
    np.testing.assert_array_equal(allocation.uniform()(tiny_params, 0.7, ctx), [3, 2])
    assert allocation.erk(power_scale=0.0) == allocation.uniform()
    shapes = ERK_SHAPES["conv"]
    sizes = np.array([math.prod(s) for s in shapes])
    uniform = _erk_counts(shapes, 0.9, power_scale=0.0)
    assert uniform.sum() == _total(0.9, sizes.sum())
    np.testing.assert_allclose(uniform, 0.1 * sizes, atol=1.01)


def test_erk_traced_sparsity_jit_vmap_and_loop_agree(tiny_params):
    ctx = _ctx(tiny_params)
    fn = jax.jit(lambda s: allocation.erk()(tiny_params, s, ctx))
    levels = [0.0, 0.5, 0.7, 0.9]
    looped = np.stack([allocation.erk()(tiny_params, s, ctx) for s in levels])
    np.testing.assert_array_equal(looped[:2], [[12, 6], [5, 4]])
    np.testing.assert_array_equal(np.stack([fn(s) for s in levels]), looped)
    np.testing.assert_array_equal(jax.vmap(fn)(jnp.array(levels)), looped)
    assert fn._cache_size() == 1


# ------------------------------------------------------------------ uniform


def test_uniform_hand_counts_and_layerwise_mask(tiny_params):
    # Kept totals 18, 14, 9, 4; each layer's share of it is 12/18 and 6/18, the
    # fractional remainder to the larger fraction (ties to the lower index).
    ctx = _ctx(tiny_params)
    expected = {0.0: [12, 6], 0.2: [9, 5], 0.5: [6, 3], 0.8: [3, 1]}
    for s, counts in expected.items():
        np.testing.assert_array_equal(allocation.uniform()(None, s, ctx), counts)
    scores = jax.tree.map(jnp.abs, tiny_params)  # at 0.5 as the old scope="layerwise"
    assert_trees_all_equal(
        allocation.mask_from_counts(scores, allocation.uniform()(scores, 0.5, ctx)),
        masks.mask_from_scores(scores, 0.5, scope="layerwise"),
    )


def test_uniform_under_vmap_over_sparsities_matches_a_python_loop(tiny_params):
    scores = jax.tree.map(jnp.abs, tiny_params)
    ctx = _ctx(tiny_params)

    def prune(s):
        counts = allocation.uniform()(scores, s, ctx)
        return allocation.mask_from_counts(scores, counts)

    levels = [0.0, 0.2, 0.5, 0.8, 0.9]
    swept = jax.vmap(prune)(jnp.array(levels))
    for i, s in enumerate(levels):
        assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], swept), prune(s))
    kept = [_kept(jax.tree.map(lambda x, i=i: x[i], swept)).tolist() for i in range(5)]
    assert kept == [[12, 6], [9, 5], [6, 3], [3, 1], [1, 1]]


# -------------------------------------------------------- counts_from_logits

SIZES = np.array([1000, 400, 100, 30])


def test_counts_from_logits_equal_logits_give_uniform_densities():
    counts = np.asarray(
        allocation.counts_from_logits(jnp.zeros(4), 0.8, _column_ctx(SIZES))
    )
    assert counts.sum() == _total(0.8, SIZES.sum())
    np.testing.assert_allclose(counts, 0.2 * SIZES, atol=1.01)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_counts_from_logits_exact_total(sparsity):
    logits = jnp.array([-1.0, 0.5, 2.0, -3.0])
    ctx = _column_ctx(SIZES)
    counts = np.asarray(allocation.counts_from_logits(logits, sparsity, ctx))
    assert counts.sum() == _total(sparsity, SIZES.sum())
    assert np.all((counts >= 1) & (counts <= SIZES))


def test_counts_from_logits_refuses_fewer_than_one_weight_per_layer():
    # round(0.001 * 1530) = 2 weights cannot give each of 4 layers one.
    match = r"keeps 2 weights, fewer than 1 in each of the 4 prunable layers"
    with pytest.raises(ValueError, match=match):
        allocation.counts_from_logits(jnp.zeros(4), 0.999, _column_ctx(SIZES))


def test_counts_from_logits_traced_sparsity_jit_vmap_and_loop_agree():
    logits = jnp.array([-1.0, 0.5, 2.0, -3.0])
    ctx = _column_ctx(SIZES)
    sparsities = jnp.array([0.5, 0.8, 0.9, 0.95, 0.99], jnp.float32)
    fn = jax.jit(lambda s: allocation.counts_from_logits(logits, s, ctx))
    looped = np.stack(
        [allocation.counts_from_logits(logits, float(s), ctx) for s in sparsities]
    )
    np.testing.assert_array_equal(np.stack([fn(s) for s in sparsities]), looped)
    np.testing.assert_array_equal(jax.vmap(fn)(sparsities), looped)
    totals = [_total(s, SIZES.sum()) for s in np.asarray(sparsities)]
    np.testing.assert_array_equal(looped.sum(1), totals)


def test_counts_from_logits_is_monotone_in_the_logit():
    ctx = _column_ctx([500, 500, 500, 500])
    logits = jnp.array([1.0, -1.0, 2.0, 0.0])
    counts = np.asarray(allocation.counts_from_logits(logits, 0.8, ctx))
    assert counts[1] < counts[3] < counts[0] < counts[2]


def test_counts_from_logits_ignores_a_constant_shift():
    logits = jnp.array([-1.0, 0.5, 2.0, -3.0])
    ctx = _column_ctx(SIZES)
    base = allocation.counts_from_logits(logits, 0.9, ctx)
    shifted = allocation.counts_from_logits(logits + 5.0, 0.9, ctx)
    np.testing.assert_allclose(shifted, base, atol=1)
    assert int(shifted.sum()) == int(base.sum())


def test_counts_from_logits_never_exceeds_the_alive_weights():
    # Layer 0 has the largest logit but only 3 of its 1000 weights alive.
    params = {f"l{i}": jnp.zeros((int(n), 1)) for i, n in enumerate(SIZES)}
    mask = masks.dense_mask(params)
    mask["l0"] = mask["l0"].at[3:].set(False)
    ctx = _ctx(params, mask=mask)
    logits = jnp.array([5.0, 0.0, 0.0, 0.0])
    counts = np.asarray(allocation.counts_from_logits(logits, 0.9, ctx))
    assert counts.sum() == _total(0.9, SIZES.sum()) == 153
    assert counts[0] == 3 and np.all(counts <= [3, 400, 100, 30])


# ------------------------------------------------------------ fit_allocation

PHI4 = np.array(  # 4 layers, 7 features, every column distinct across layers
    [
        [3.0, 5.0, 0.0, 0.50, 0.00, 1.0, 0.0],
        [5.0, 4.0, 2.2, 0.30, 0.33, 0.0, 0.0],
        [6.0, 3.0, 2.2, 0.15, 0.67, 0.0, 0.0],
        [4.0, 1.0, 0.0, 0.05, 1.00, 0.0, 1.0],
    ]
)
SIZES4 = np.array([4000, 2400, 1200, 400])


def test_fit_allocation_recovers_synthetic_layer_densities():
    dens = _synthetic_densities(PHI4, SIZES4, W_TRUE, V_TRUE, ROUND_DENSITIES)
    model = allocation.fit_allocation(PHI4, dens, SIZES4)
    assert len(model.weights) == len(model.slopes) == 7
    # The layers differ from uniform by far more than the tolerance.
    assert np.max(np.abs(dens / ROUND_DENSITIES[:, None] - 1)) > 0.5
    for d_e, big_d in zip(dens, ROUND_DENSITIES, strict=True):
        pred = _predicted_densities(model, PHI4, SIZES4, big_d)
        np.testing.assert_allclose(pred * SIZES4, d_e * SIZES4, atol=2.0)  # weights


def test_fit_allocation_is_invariant_to_affine_rescaling_of_features():
    dens = _synthetic_densities(PHI4, SIZES4, W_TRUE, V_TRUE, ROUND_DENSITIES)
    scale = np.array([2.0, 0.5, 3.0, 10.0, 1.0, 1.0, 4.0])
    shift = np.array([1.0, -2.0, 0.0, 5.0, 0.3, 0.0, -1.0])
    phi2 = PHI4 * scale + shift
    m1 = allocation.fit_allocation(PHI4, dens, SIZES4)
    m2 = allocation.fit_allocation(phi2, dens, SIZES4)
    np.testing.assert_allclose(m2.weights, m1.weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m2.slopes, m1.slopes, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        allocation.predict_logits(m2, phi2, 0.9),
        allocation.predict_logits(m1, PHI4, 0.9),
        rtol=1e-5,
        atol=1e-5,
    )


def test_fit_allocation_rejects_mismatched_shapes():
    dens = _synthetic_densities(PHI4, SIZES4, W_TRUE, V_TRUE, ROUND_DENSITIES)
    with pytest.raises(ValueError, match=r"\[E, L\]"):
        allocation.fit_allocation(PHI4, dens[:, :3], SIZES4)
    with pytest.raises(ValueError, match=r"\[E, L\]"):
        allocation.fit_allocation(PHI4, dens[0], SIZES4)
    with pytest.raises(ValueError):
        allocation.fit_allocation(PHI4, dens, SIZES4[:3])


def test_fitted_lenet_model_is_hashable_and_reproduces_its_densities(lenet_model):
    params, apply_fn, shape = _abstract_model("lenet300_100")
    phi = allocation.layer_features(params, apply_fn=apply_fn, input_shape=shape)
    sizes = allocation.layer_sizes(params)
    dens = _synthetic_densities(phi, sizes, W_TRUE, V_TRUE, ROUND_DENSITIES)
    hash(lenet_model)  # usable as a static argument under jax.jit
    assert dict(lenet_model.metadata) == {"model": "lenet300_100"}
    for d_e, big_d in zip(dens, ROUND_DENSITIES, strict=True):
        pred = _predicted_densities(lenet_model, phi, sizes, big_d)
        np.testing.assert_allclose(pred, d_e, rtol=0.02)


# ------------------------------------------------------------ layer_features


def test_layer_features_lenet300_100_by_hand():
    params, apply_fn, shape = _abstract_model("lenet300_100")
    phi = allocation.layer_features(params, apply_fn=apply_fn, input_shape=shape)
    n = 784 * 300 + 300 * 100 + 100 * 10  # 266200
    expected = [
        [math.log(784), math.log(300), 0.0, 235200 / n, 0.0, 1.0, 0.0],
        [math.log(300), math.log(100), 0.0, 30000 / n, 0.5, 0.0, 0.0],
        [math.log(100), math.log(10), 0.0, 1000 / n, 1.0, 0.0, 1.0],
    ]
    assert phi.shape == (3, len(allocation.LAYER_FEATURE_NAMES))
    np.testing.assert_allclose(phi, expected, rtol=1e-12)
    np.testing.assert_array_equal(allocation.layer_sizes(params), [235200, 30000, 1000])


def test_layer_features_conv2_kernel_size():
    params, apply_fn, shape = _abstract_model("conv2")
    phi = allocation.layer_features(params, apply_fn=apply_fn, input_shape=shape)
    # Conv_0 (3,3,3,64), Conv_1 (3,3,64,64), Dense_0, Dense_1, head.
    np.testing.assert_allclose(phi[:, 2], [math.log(9)] * 2 + [0.0] * 3, atol=1e-12)
    np.testing.assert_allclose(phi[0, :2], [math.log(27), math.log(576)])
    np.testing.assert_allclose(phi[:, 4], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(phi[:, 3].sum(), 1.0)


# ---------------------------------------------------------- mask_from_counts


def _two_layer_scores():
    return {
        "a": {
            "kernel": jnp.array([[0.1, 0.9, 0.5], [0.9, 0.2, 0.5]]),
            "bias": jnp.array([-5.0, -5.0, -5.0]),
        },
        "b": {"kernel": jnp.array([[0.3], [0.3], [0.3]]), "bias": jnp.array([0.0])},
    }


def test_mask_from_counts_keeps_the_highest_scores_ties_by_index():
    scores = _two_layer_scores()
    mask = allocation.mask_from_counts(scores, jnp.array([3, 1]))
    np.testing.assert_array_equal(
        mask["a"]["kernel"], [[False, True, True], [True, False, False]]
    )
    np.testing.assert_array_equal(mask["b"]["kernel"], [[True], [False], [False]])
    assert bool(mask["a"]["bias"].all() & mask["b"]["bias"].all())
    full = allocation.mask_from_counts(scores, jnp.array([6, 3]))
    assert bool(full["a"]["kernel"].all() & full["b"]["kernel"].all())
    empty = allocation.mask_from_counts(scores, jnp.array([0, 0]))
    assert not bool(empty["a"]["kernel"].any() | empty["b"]["kernel"].any())


def test_mask_from_counts_keeps_pruned_weights_pruned():
    scores = _two_layer_scores()
    prior = masks.dense_mask(scores)
    prior["a"]["kernel"] = prior["a"]["kernel"].at[0, 1].set(False)  # a 0.9
    mask = allocation.mask_from_counts(scores, jnp.array([3, 3]), mask=prior)
    # The alive 0.9, then the two 0.5s; all of b.
    np.testing.assert_array_equal(
        mask["a"]["kernel"], [[False, False, True], [True, False, True]]
    )
    assert bool(mask["b"]["kernel"].all())


def test_mask_from_counts_honours_the_prunable_predicate():
    scores = {"Dense_0": _two_layer_scores()["a"], "head": _two_layer_scores()["b"]}
    pred = masks.is_prunable_except_output
    mask = allocation.mask_from_counts(scores, jnp.array([2]), prunable=pred)
    np.testing.assert_array_equal(
        mask["Dense_0"]["kernel"], [[False, True, False], [True, False, False]]
    )
    assert bool(mask["head"]["kernel"].all())


# --------------------------------------------------------------- check_counts


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        (
            jnp.array([1, 1]),
            r"counts \[1, 1\] sum to 2, but the sparsity keeps exactly 9",
        ),
        (
            jnp.array([10, -1]),
            r"outside 0 \.\. alive weights \[12, 6\] in layers \[1\]",
        ),
        (jnp.array([2, 7]), r"outside 0 \.\. alive weights \[12, 6\] in layers \[1\]"),
        (jnp.array([5, 2, 2]), r"\[L\] = \[2\] integer counts.*shape \(3,\)"),
        (jnp.array([6.0, 3.0]), r"\[L\] = \[2\] integer counts.*dtype float32"),
    ],
    ids=["total", "negative", "above_alive", "shape", "dtype"],
)
def test_check_counts_rejects_bad_counts(counts, match, tiny_params):
    ctx = _ctx(tiny_params)
    with pytest.raises(ValueError, match=match):
        allocation.check_counts(counts, ctx, 0.5)
    np.testing.assert_array_equal(allocation.check_counts([6, 3], ctx, 0.5), [6, 3])


def test_check_counts_bounds_counts_by_the_alive_weights(tiny_params):
    mask = masks.dense_mask(tiny_params)
    mask["Dense_1"]["kernel"] = jnp.zeros((3, 2), bool)  # no weight alive
    ctx = _ctx(tiny_params, mask=mask)
    with pytest.raises(ValueError, match=r"alive weights \[12, 0\] in layers \[1\]"):
        allocation.check_counts(jnp.array([8, 1]), ctx, 0.5)
    allocation.check_counts(jnp.array([9, 0]), ctx, 0.5)


# --------------------------------------------- allocations on a 3-layer net

SHAPES3 = [(20, 10), (10, 5), (5, 3)]  # N = 265
N3 = 265
PHI3 = np.array(
    [
        [math.log(20), math.log(10), 0.0, 200 / N3, 0.0, 1.0, 0.0],
        [math.log(10), math.log(5), 0.0, 50 / N3, 0.5, 0.0, 0.0],
        [math.log(5), math.log(3), 0.0, 15 / N3, 1.0, 0.0, 1.0],
    ]
)


def _tree3(seed, offsets=(0.0, 0.0, 0.0)):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        f"l{i}": {
            "kernel": jax.random.uniform(k, s) + off,
            "bias": jnp.zeros(s[-1:]),
        }
        for i, (k, s, off) in enumerate(zip(keys, SHAPES3, offsets, strict=True))
    }


def _allocations3(reference):
    """Every built-in allocation; ``like`` reads ``reference`` as its scores."""
    return {
        "global_topk": allocation.global_topk(),
        "uniform": allocation.uniform(),
        "erk": allocation.erk(),
        "like": allocation.like(_returns(reference)),
        "learned": allocation.learned(FIXED),
    }


def _prune3(scores, sparsity, alloc):
    """``prune_at_init`` with ``scores`` as the criterion's, on the 3-layer net."""
    return criteria.prune_at_init(
        jax.random.key(0),
        _returns(scores),
        _tree3(0),
        None,
        apply_fn=None,
        sparsity=sparsity,
        allocation=alloc,
    )


def test_three_layer_context_features_by_hand():
    ctx = _ctx(_tree3(0))
    np.testing.assert_allclose(allocation.context_features(ctx.layers), PHI3)


@pytest.mark.parametrize("name", sorted(_allocations3(None)))
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_allocation_exact_total_and_no_empty_layer(name, sparsity):
    mask = _prune3(_tree3(1), sparsity, _allocations3(_tree3(9))[name])
    kept = _kept(mask)
    assert kept.sum() == _total(sparsity, N3)  # 0.99: 3, one per layer
    assert np.all(kept >= 1)
    assert all(bool(mask[f"l{i}"]["bias"].all()) for i in range(3))


def test_learned_is_the_models_logits_with_a_solved_shift():
    ctx = _ctx(_tree3(0))
    for s in (0.5, 0.9):
        expected = allocation.counts_from_logits(
            allocation.predict_logits(FIXED, PHI3, s), s, ctx
        )
        got = allocation.learned(FIXED)(None, s, ctx)
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(  # not uniform: the model moves weights between layers
        allocation.learned(FIXED)(None, 0.5, ctx), allocation.uniform()(None, 0.5, ctx)
    )


def test_global_topk_equals_mask_from_scores_without_collapse():
    scores = _tree3(1)
    expected = masks.mask_from_scores(scores, 0.5)
    assert np.all(_kept(expected) >= 1)
    assert_trees_all_equal(_prune3(scores, 0.5, allocation.global_topk()), expected)


def test_global_topk_min_zero_is_the_plain_global_threshold():
    low = _tree3(1, offsets=(0.0, -2.0, 0.0))  # layer 1 below every other weight
    mask = _prune3(low, 0.8, allocation.global_topk(min_per_layer=0))
    assert_trees_all_equal(mask, masks.mask_from_scores(low, 0.8))
    assert _kept(mask)[1] == 0  # the old scope="global": layer 1 collapses


def test_like_takes_the_reference_layer_counts():
    scores, reference = _tree3(1), _tree3(2)
    mask = _prune3(scores, 0.5, allocation.like(_returns(reference)))
    np.testing.assert_array_equal(
        _kept(mask), _kept(masks.mask_from_scores(reference, 0.5))
    )
    # Inside each layer, the kept weights are the best of the scores being pruned.
    counts = _kept(mask)
    assert_trees_all_equal(mask, allocation.mask_from_counts(scores, counts))


def test_like_calls_the_criterion_on_the_context(
    tiny_params, tiny_batch, tiny_apply_fn
):
    ctx = _ctx(tiny_params, tiny_batch, tiny_apply_fn)
    got = allocation.like(criteria.magnitude)(None, 0.5, ctx)
    expected = _kept(masks.mask_from_scores(jax.tree.map(jnp.abs, tiny_params), 0.5))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["global_topk", "like"])
def test_a_layer_whose_scores_are_all_lowest_keeps_one(name):
    low = _tree3(1, offsets=(0.0, -2.0, 0.0))
    plain = _kept(masks.mask_from_scores(low, 0.8))
    assert plain[1] == 0  # the paper's global threshold removes layer 1
    scores, alloc = (
        (low, allocation.global_topk())
        if name == "global_topk"
        else (_tree3(3), allocation.like(_returns(low)))
    )
    mask = _prune3(scores, 0.8, alloc)
    kept = _kept(mask)
    assert kept.sum() == _total(0.8, N3) == 53
    assert kept[1] >= 1


@pytest.mark.parametrize("name", ["global_topk", "like"])
def test_exact_total_when_one_layer_dominates(name):
    high = _tree3(1, offsets=(2.0, 0.0, 0.0))  # layer 0 above every other weight
    plain = _kept(masks.mask_from_scores(high, 0.8))
    np.testing.assert_array_equal(plain, [53, 0, 0])  # two layers collapse
    scores, alloc = (
        (high, allocation.global_topk())
        if name == "global_topk"
        else (_tree3(3), allocation.like(_returns(high)))
    )
    mask = _prune3(scores, 0.8, alloc)
    np.testing.assert_array_equal(_kept(mask), [51, 1, 1])


def test_global_topk_min_per_layer_two():
    high = _tree3(1, offsets=(2.0, 0.0, 0.0))
    mask = _prune3(high, 0.8, allocation.global_topk(min_per_layer=2))
    np.testing.assert_array_equal(_kept(mask), [49, 2, 2])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: allocation.global_topk(min_per_layer=-1), "min_per_layer must be"),
        (lambda: allocation.global_topk(min_per_layer=1.5), "min_per_layer must be"),
        (lambda: allocation.like("snip"), r"like\(\) needs a criterion"),
        (lambda: allocation.learned(None), r"learned\(\) needs an AllocationModel"),
    ],
    ids=["negative_min", "float_min", "like_string", "learned_none"],
)
def test_factories_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_allocations_compare_and_hash_by_value():
    assert allocation.global_topk() == allocation.global_topk()
    assert hash(allocation.global_topk()) == hash(allocation.global_topk())
    assert allocation.global_topk() != allocation.global_topk(min_per_layer=0)
    assert allocation.erk() == allocation.erk(power_scale=1.0) != allocation.uniform()
    assert allocation.uniform() == allocation.uniform()
    assert allocation.like(criteria.snip) == allocation.like(criteria.snip)
    assert allocation.like(criteria.snip) != allocation.like(criteria.grasp)
    copy = dataclasses.replace(FIXED)
    assert copy is not FIXED
    assert allocation.learned(copy) == allocation.learned(FIXED)
    assert hash(allocation.learned(copy)) == hash(allocation.learned(FIXED))
    assert criteria.DEFAULT_ALLOCATION == allocation.global_topk()


@pytest.mark.parametrize("name", sorted(_allocations3(None)))
def test_a_total_below_one_per_layer_is_refused(name):
    # round(0.005 * 265) = 1 weight for 3 layers.
    alloc = _allocations3(_tree3(9))[name]
    with pytest.raises(ValueError, match=r"keeps 1 weights, fewer than 1 in each of"):
        _prune3(_tree3(1), 0.995, alloc)
    mask = _prune3(_tree3(1), 0.995, allocation.global_topk(min_per_layer=0))
    assert _kept(mask).sum() == 1


# ------------------------------------------- every allocation on every model

# Models of more than 1M prunable weights: their masks are not built (below).
_BIG = {"conv2", "conv4", "conv6", "resnet18"}
_BIG |= {n for n in models.MODELS if n.startswith("vgg")}
# Cheaper XLA compiles (as in test_criteria); compiling dominates small models.
_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_LABELS = (
    "global_topk",
    "uniform",
    "erk",
    "like",
    "learned",
    "global_topk (adversarial)",
    "like (adversarial)",
)


def _uniform_scores(params, seed):
    """Host float32 scores uniform in ``[0, 1)``, shaped like ``params`` (abstract).

    Drawn with numpy and passed to the jitted function as arguments: the values
    are not constants XLA would fold or random bits it would compile.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: rng.random(p.shape, np.float32), params)


def _kept_by_allocation(params, apply_fn, shape, model, scores, sparsity, counts_only):
    """``[7, L]`` kept per layer: every allocation, then two adversarial cases.

    ``params`` are abstract (``ShapeDtypeStruct``: the allocations read shapes
    and the context, never the values); ``scores`` are concrete, uniform in
    ``[0, 1)``; adversarially the largest prunable layer scores below every
    other weight (``global_topk``, and ``like`` with it as reference).
    ``counts_only``: the allocation's checked counts without building the
    masks (the models of more than 1M weights, where the masks dominate the
    test's time; ``mask_from_counts`` keeps exactly these, tested above).
    Otherwise the seven masks are built by one ``vmap`` of ``mask_from_counts``
    over the seven (scores, counts) pairs (one compiled per-layer top-k, not
    seven), and their kept weights counted.
    """
    leaves, treedef = jax.tree.flatten(scores)
    big = int(np.argmax([math.prod(p.shape) if p.ndim >= 2 else -1 for p in leaves]))
    low = [x - 2.0 if i == big else x for i, x in enumerate(leaves)]
    low = jax.tree.unflatten(treedef, low)
    batch = {"image": jnp.zeros((1, *shape)), "label": jnp.zeros((1,), jnp.int32)}
    ctx = _ctx(params, batch, apply_fn)
    configs = [
        (allocation.global_topk(), scores),
        (allocation.uniform(), scores),
        (allocation.erk(), scores),
        (allocation.like(_returns(scores)), scores),
        (allocation.learned(model), scores),
        (allocation.global_topk(), low),
        (allocation.like(_returns(low)), scores),
    ]
    counts = jnp.stack(
        [
            allocation.check_counts(alloc(sc, sparsity, ctx), ctx, sparsity)
            for alloc, sc in configs
        ]
    )
    if counts_only:
        return counts

    def kept(sc, c):
        mask = allocation.mask_from_counts(sc, c)
        leaves = masks._prunable_mask_leaves(mask, masks.is_prunable)
        return jnp.stack([jnp.sum(m, dtype=jnp.int32) for _, m in leaves])

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[sc for _, sc in configs])
    return jax.vmap(kept)(stacked, counts)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_no_allocation_leaves_a_layer_empty_on_any_model(name, lenet_model):
    params, apply_fn, shape = _abstract_model(name)
    sizes = allocation.layer_sizes(params)
    assert (name in _BIG) == (sizes.sum() > 1_000_000)
    scores = _uniform_scores(params, seed=1)
    fn = jax.jit(  # one compilation per model for both sparsities
        lambda sc, s: _kept_by_allocation(
            params, apply_fn, shape, lenet_model, sc, s, name in _BIG
        ),
        # Large models: default options (the unoptimised counting passes over
        # their millions of scores would cost more than the compile saves).
        compiler_options=None if name in _BIG else _FAST,
    )
    for sparsity in (0.99, 0.999):
        kept = np.asarray(fn(scores, jnp.float32(sparsity)))
        assert kept.shape == (len(_LABELS), len(sizes))
        for label, row in zip(_LABELS, kept, strict=True):
            assert row.min() >= 1, (label, sparsity, row)
            assert row.sum() == _total(sparsity, sizes.sum()), (label, sparsity)
    assert fn._cache_size() == 1


# ------------------------------------------------- through prune_at_init

# Each returns bad counts at any sparsity; the match has the total {keep} to hit.
_BAD_ALLOCATIONS = {
    "total": (
        lambda scores, s, ctx: jnp.array([1, 1], jnp.int32),
        r"counts \[1, 1\] sum to 2, but the sparsity keeps exactly {keep} weights",
    ),
    "negative": (
        lambda scores, s, ctx: jnp.stack([allocation.num_keep(s, ctx) + 1, -1]),
        r"counts \[{above}, -1\] are outside 0 \.\. alive weights \[12, 6\] in "
        r"layers \[1\]",
    ),
    "shape": (
        lambda scores, s, ctx: jnp.array([5, 2, 2], jnp.int32),
        r"must return \[L\] = \[2\] integer counts .* got shape \(3,\)",
    ),
}


def _bad_allocation(name, keep):
    bad, match = _BAD_ALLOCATIONS[name]
    return bad, match.format(keep=keep, above=keep + 1)


@pytest.mark.parametrize("name", sorted(_BAD_ALLOCATIONS))
def test_prune_at_init_rejects_a_bad_allocation_eagerly(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    bad, match = _bad_allocation(name, keep=9)  # round(0.5 * 18)
    with pytest.raises(ValueError, match=match):
        criteria.prune_at_init(
            key,
            criteria.magnitude,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            sparsity=0.5,
            allocation=bad,
        )


@pytest.mark.parametrize("num_rounds", [1, 2])
@pytest.mark.parametrize("name", sorted(_BAD_ALLOCATIONS))
def test_prune_at_init_rejects_a_bad_allocation_under_jit(
    name, num_rounds, key, tiny_params, tiny_batch, tiny_apply_fn
):
    # Keep round(0.2 * 18) = 4; with two rounds round 0 already fails, at
    # sparsity 1 - 0.2 ** 0.5 = 0.553: keep round(8.05) = 8.
    bad, match = _bad_allocation(name, keep=4 if num_rounds == 1 else 8)
    prune = jax.jit(
        criteria.prune_at_init,
        static_argnames=("criterion", "apply_fn", "allocation", "num_rounds"),
    )
    # The shape is refused while tracing (ValueError); the values by a host
    # callback, whose error surfaces when the result is waited for.
    error = ValueError if name == "shape" else jax.errors.JaxRuntimeError
    with pytest.raises(error, match=match):
        mask = prune(
            key,
            criteria.magnitude,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            sparsity=jnp.float32(0.8),
            allocation=bad,
            num_rounds=num_rounds,
        )
        jax.block_until_ready(mask)


_BUILTIN = {
    "global_topk": allocation.global_topk,
    "global_topk_min0": lambda: allocation.global_topk(min_per_layer=0),
    "uniform": allocation.uniform,
    "erk": allocation.erk,
    "like_snip": lambda: allocation.like(criteria.snip),
    "learned": lambda: allocation.learned(dataclasses.replace(FIXED)),
}
_STATIC = ("criterion", "apply_fn", "allocation", "num_rounds", "schedule", "prunable")


@pytest.mark.parametrize("name", sorted(_BUILTIN))
def test_jitted_prune_at_init_traces_once_across_sparsities(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    chex.clear_trace_counter()
    prune = jax.jit(
        chex.assert_max_traces(criteria.prune_at_init, n=1), static_argnames=_STATIC
    )
    args = (key, criteria.snip, tiny_params, tiny_batch)
    kwargs = {"apply_fn": tiny_apply_fn, "num_rounds": 2}
    for s in (0.5, 0.7, 0.9):
        # A fresh (equal) allocation object every call: static by value.
        alloc = _BUILTIN[name]()
        mask = prune(*args, sparsity=jnp.float32(s), allocation=alloc, **kwargs)
        kept = _kept(mask)
        assert kept.sum() == _total(s, N_TINY)  # 9, 5, 2
        if name != "global_topk_min0":
            assert kept.min() >= 1
    assert prune._cache_size() == 1
    # The last (traced) mask is the eager one (one comparison: eager is slow).
    alloc = _BUILTIN[name]()
    eager = criteria.prune_at_init(*args, sparsity=0.9, allocation=alloc, **kwargs)
    assert_trees_all_equal(mask, eager)


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        # Linear to 0.75: keep 11 then round(4.5) = 4. uniform: 11 * (12, 6) / 18
        # = 7.33, 3.67 -> [7, 4]; 4 * (12, 6) / 18 = 2.67, 1.33 -> [3, 1].
        ("uniform", "linear", [[12, 6], [7, 4], [3, 1]]),
        # Geometric to 0.75: sparsity 1 - 0.25 ** 0.5 = 0.5 then 0.75, keep 9 then
        # 4. erk: 9 * (7, 5) / 12 = 5.25, 3.75 -> [5, 4]; 4 * (7, 5) / 12 = 2.33,
        # 1.67 -> [2, 2].
        ("erk", "geometric", [[12, 6], [5, 4], [2, 2]]),
    ],
)
def test_two_round_uniform_and_erk_keep_exact_totals_and_only_shrink(
    name, schedule, expected, key, tiny_params, tiny_batch, tiny_apply_fn
):
    seen = []

    def recording(key, params, batch, *, apply_fn, mask):
        jax.debug.callback(seen.append, mask, ordered=True)
        return criteria.magnitude(key, params, batch, apply_fn=apply_fn, mask=mask)

    final = criteria.prune_at_init(
        key,
        recording,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.75,
        allocation=_BUILTIN[name](),
        num_rounds=2,
        schedule=schedule,
    )
    jax.effects_barrier()
    history = [*seen, final]
    assert [_kept(m).tolist() for m in history] == expected
    assert _kept(final).sum() == _total(0.75, N_TINY) == 4
    for before, after in zip(history, history[1:], strict=False):
        for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            assert not (np.asarray(a) & ~np.asarray(b)).any()  # a subset of b
    assert final["Dense_0"]["bias"].all() and final["Dense_1"]["bias"].all()


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "0.9"])
@pytest.mark.parametrize("name", ["uniform", "erk"])
def test_prune_at_init_with_uniform_or_erk_rejects_a_bad_sparsity(
    name, bad, key, tiny_params, tiny_apply_fn
):
    match = r"sparsity must be (in|a number in) \[0, 1\)"
    with pytest.raises(ValueError, match=match):
        criteria.prune_at_init(
            key,
            criteria.magnitude,
            tiny_params,
            None,
            apply_fn=tiny_apply_fn,
            sparsity=bad,
            allocation=_BUILTIN[name](),
        )


# ----------------------------------------------------------- layer_densities


def test_layer_densities_by_hand():
    def mask(k0, k1):
        return {
            "Dense_0": {"kernel": jnp.array(k0), "bias": jnp.ones(2, bool)},
            "head": {"kernel": jnp.array(k1), "bias": jnp.zeros(4, bool)},
        }

    seq = [
        mask([[True, False], [False, False]], [[True, True, True, True]]),
        mask([[True, True], [False, False]], [[False, False, False, False]]),
    ]
    np.testing.assert_allclose(
        allocation.layer_densities(seq), [[0.25, 1.0], [0.5, 0.0]]
    )
    np.testing.assert_allclose(
        allocation.layer_densities(seq, prunable=masks.is_prunable_except_output),
        [[0.25], [0.5]],
    )


# ------------------------------------------------- several sources, scale-free


def test_scale_free_features_lenet300_100_by_hand():
    params, apply_fn, shape = _abstract_model("lenet300_100")
    contexts = layers.layer_contexts(params, apply_fn=apply_fn, input_shape=shape)
    contexts = [c for c in contexts if c is not None]  # kernels only
    phi = allocation.scale_free_features(contexts)
    n = 266200
    expected = [
        [0.0, 0.0, 0.0, 235200 / n, 0.0, 1.0, 0.0],
        [math.log(300 / 784), math.log(100 / 300), 0.0, 30000 / n, 0.5, 0.0, 0.0],
        [math.log(100 / 784), math.log(10 / 300), 0.0, 1000 / n, 1.0, 0.0, 1.0],
    ]
    assert phi.shape == (3, len(allocation.SCALE_FREE_FEATURE_NAMES))
    np.testing.assert_allclose(phi, expected, rtol=1e-12, atol=1e-15)
    # Another input size moves only the first layer's relative fan-in.
    small = layers.LeafContext(0, 3, 40, 300, 12000)
    phi40 = allocation.scale_free_features([small, *contexts[1:]])
    np.testing.assert_allclose(phi40[:, 0], np.log([40 / 300, 1.0, 100 / 300]))


def test_fit_allocation_sources_two_sources_by_hand():
    # One feature, two equal layers per source, one round at global density
    # 1/2 (z = 0): the pooled features 0, 1 | 0, 2 have mean 0.75 and std
    # sqrt(0.6875); source A's logits differ by 1 per unit of phi, B's by 2
    # over 2 units: one line, slope 1 per unit, so w = std (nearly no ridge).
    def source(phi1, gap):
        dens = [[1 / (1 + math.exp(gap / 2)), 1 / (1 + math.exp(-gap / 2))]]
        return allocation.AllocationSource(np.array([[0.0], [phi1]]), dens, [5, 5])

    model = allocation.fit_allocation_sources(
        [source(1.0, 1.0), source(2.0, 2.0)], l2=1e-12, metadata=(("k", 1),)
    )
    assert model.feature_mean == (0.75,) and model.metadata == (("k", 1),)
    np.testing.assert_allclose(model.feature_std, [math.sqrt(0.6875)], rtol=1e-12)
    np.testing.assert_allclose(model.weights, [math.sqrt(0.6875)], rtol=1e-9)
    np.testing.assert_allclose(model.slopes, [0.0], atol=1e-9)
    # Source A alone is standardised on its own layers: std 0.5, w = 0.5.
    alone = allocation.fit_allocation_sources([source(1.0, 1.0)], l2=1e-12)
    np.testing.assert_allclose(alone.weights, [0.5], rtol=1e-9)


def test_fit_allocation_sources_of_one_source_is_fit_allocation():
    dens = _synthetic_densities(PHI4, SIZES4, W_TRUE, V_TRUE, ROUND_DENSITIES)
    one = allocation.AllocationSource(PHI4, dens, SIZES4)
    assert allocation.fit_allocation_sources([one]) == allocation.fit_allocation(
        PHI4, dens, SIZES4
    )


def test_fit_allocation_sources_recovers_a_rule_shared_by_two_networks():
    # Two networks (4 and 3 layers) whose densities follow one rule of the
    # features standardised over both: the pooled fit reproduces each.
    sizes3 = np.array([200, 50, 15])
    pooled = np.concatenate([PHI4, PHI3])
    dens4, dens3 = (
        _synthetic_densities(phi, n, W_TRUE, V_TRUE, ROUND_DENSITIES, pooled)
        for phi, n in ((PHI4, SIZES4), (PHI3, sizes3))
    )
    model = allocation.fit_allocation_sources(
        [
            allocation.AllocationSource(PHI4, dens4, SIZES4),
            allocation.AllocationSource(PHI3, dens3, sizes3),
        ],
        l2=1e-6,
    )
    np.testing.assert_allclose(model.feature_mean, pooled.mean(0), rtol=1e-12)
    for phi, n, dens in ((PHI4, SIZES4, dens4), (PHI3, sizes3, dens3)):
        for d_e, big_d in zip(dens, ROUND_DENSITIES, strict=True):
            pred = _predicted_densities(model, phi, n, big_d)
            np.testing.assert_allclose(pred * n, d_e * n, atol=2.0)  # weights
    # Not a trivial match: the layers' densities differ (by far more than 2).
    assert np.max(np.abs(dens3 - dens3.mean(1, keepdims=True)) * sizes3) > 20


def test_fit_allocation_sources_rejects_bad_sources():
    dens = _synthetic_densities(PHI4, SIZES4, W_TRUE, V_TRUE, ROUND_DENSITIES)
    good = allocation.AllocationSource(PHI4, dens, SIZES4)
    with pytest.raises(ValueError, match="same layer features"):
        allocation.fit_allocation_sources([])
    with pytest.raises(ValueError, match="same layer features"):
        allocation.fit_allocation_sources([good, good._replace(phi=PHI4[:, :5])])
    with pytest.raises(ValueError, match=r"\[E, L\]"):
        allocation.fit_allocation_sources([good, good._replace(densities=dens[:, :3])])


def test_learned_reads_the_layer_features_it_is_given():
    ctx = _ctx(_tree3(0))
    phi = allocation.scale_free_features(ctx.layers)
    got = allocation.learned(FIXED, layer_features=allocation.scale_free_features)
    expected = allocation.counts_from_logits(
        allocation.predict_logits(FIXED, phi, 0.5), 0.5, ctx
    )
    np.testing.assert_array_equal(got(None, 0.5, ctx), expected)
    assert got != allocation.learned(FIXED)  # another feature map, another model
    assert allocation.learned(FIXED) == allocation.learned(
        FIXED, layer_features=allocation.context_features
    )
    narrow = dataclasses.replace(FIXED, weights=FIXED.weights[:3])
    with pytest.raises(ValueError, match="layer_features the model was fitted"):
        allocation.learned(narrow)(None, 0.5, ctx)
    with pytest.raises(ValueError, match="layer_features must map"):
        allocation.learned(FIXED, layer_features="scale_free")
