"""Tests for allocation.py: per-layer counts, exact totals, no empty layer."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_equal

from autosparse_jax import allocation, features, masks, models, scorer

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


def _synthetic_densities(phi, sizes, w, v, global_densities):
    """``[E, L]`` ``sigmoid(w.x + z v.x + t_e)``, ``t_e`` hitting each ``D_e``."""
    std = np.where(phi.std(0) > 0, phi.std(0), 1.0)
    x = (phi - phi.mean(0)) / std
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
    return np.asarray(allocation.counts_from_logits(logits, sizes, s)) / sizes


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


# ---------------------------------------------------------------- counts_erk

ERK_SHAPES = {
    "dense": [(784, 300), (300, 100), (100, 10)],
    "conv": [(3, 3, 3, 16), (3, 3, 16, 32), (5, 5, 32, 32), (512, 10)],
}


@pytest.mark.parametrize("kind", sorted(ERK_SHAPES))
@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_counts_erk_matches_masks_erk(kind, sparsity):
    shapes = ERK_SHAPES[kind]
    params = {f"l{i}": jnp.zeros(s) for i, s in enumerate(shapes)}
    sizes = np.array([math.prod(s) for s in shapes])
    per_leaf = masks.erk(params, sparsity)
    expected = np.array([(1 - per_leaf[f"l{i}"]) * n for i, n in enumerate(sizes)])
    counts = np.asarray(allocation.counts_erk(shapes, sparsity, power=1.0))
    assert counts.sum() == _total(sparsity, sizes.sum())
    np.testing.assert_allclose(counts, expected, atol=1.01)
    assert np.all((counts >= 1) & (counts <= sizes))


def test_counts_erk_power_zero_is_uniform():
    shapes = ERK_SHAPES["conv"]
    sizes = np.array([math.prod(s) for s in shapes])
    counts = np.asarray(allocation.counts_erk(shapes, 0.9, power=0.0))
    assert counts.sum() == _total(0.9, sizes.sum())
    np.testing.assert_allclose(counts, 0.1 * sizes, atol=1.01)


# -------------------------------------------------------- counts_from_logits

SIZES = np.array([1000, 400, 100, 30])


def test_counts_from_logits_equal_logits_give_uniform_densities():
    counts = np.asarray(allocation.counts_from_logits(jnp.zeros(4), SIZES, 0.8))
    assert counts.sum() == _total(0.8, SIZES.sum())
    np.testing.assert_allclose(counts, 0.2 * SIZES, atol=1.01)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 0.999])
def test_counts_from_logits_exact_total(sparsity):
    logits = jnp.array([-1.0, 0.5, 2.0, -3.0])
    counts = np.asarray(allocation.counts_from_logits(logits, SIZES, sparsity))
    assert counts.sum() == max(_total(sparsity, SIZES.sum()), len(SIZES))
    assert np.all((counts >= 1) & (counts <= SIZES))


def test_counts_from_logits_traced_sparsity_jit_vmap_and_loop_agree():
    logits = jnp.array([-1.0, 0.5, 2.0, -3.0])
    sparsities = jnp.array([0.5, 0.8, 0.9, 0.95, 0.99], jnp.float32)
    fn = jax.jit(lambda s: allocation.counts_from_logits(logits, SIZES, s))
    looped = np.stack(
        [allocation.counts_from_logits(logits, SIZES, float(s)) for s in sparsities]
    )
    np.testing.assert_array_equal(np.stack([fn(s) for s in sparsities]), looped)
    np.testing.assert_array_equal(jax.vmap(fn)(sparsities), looped)
    totals = [_total(s, SIZES.sum()) for s in np.asarray(sparsities)]
    np.testing.assert_array_equal(looped.sum(1), totals)


def test_counts_from_logits_is_monotone_in_the_logit():
    sizes = np.array([500, 500, 500, 500])
    counts = np.asarray(
        allocation.counts_from_logits(jnp.array([1.0, -1.0, 2.0, 0.0]), sizes, 0.8)
    )
    assert counts[1] < counts[3] < counts[0] < counts[2]


def test_counts_from_logits_ignores_a_constant_shift():
    logits = jnp.array([-1.0, 0.5, 2.0, -3.0])
    base = allocation.counts_from_logits(logits, SIZES, 0.9)
    shifted = allocation.counts_from_logits(logits + 5.0, SIZES, 0.9)
    np.testing.assert_allclose(shifted, base, atol=1)
    assert int(shifted.sum()) == int(base.sum())


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


def test_mask_from_counts_keeps_the_highest_scores_ties_by_index():
    scores = {
        "a": {
            "kernel": jnp.array([[0.1, 0.9, 0.5], [0.9, 0.2, 0.5]]),
            "bias": jnp.array([-5.0, -5.0, -5.0]),
        },
        "b": {"kernel": jnp.array([[0.3], [0.3], [0.3]]), "bias": jnp.array([0.0])},
    }
    mask = allocation.mask_from_counts(scores, jnp.array([3, 1]))
    np.testing.assert_array_equal(
        mask["a"]["kernel"], [[False, True, True], [True, False, False]]
    )
    np.testing.assert_array_equal(mask["b"]["kernel"], [[True], [False], [False]])
    assert bool(mask["a"]["bias"].all() & mask["b"]["bias"].all())
    full = allocation.mask_from_counts(scores, jnp.array([6, 3]))
    assert bool(full["a"]["kernel"].all() & full["b"]["kernel"].all())


# ------------------------------------------------------------------ allocate

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


def _allocate3(scores, sparsity, name, reference=None):
    return allocation.allocate(
        scores,
        sparsity,
        allocation=name,
        phi=PHI3,
        model=FIXED,
        reference_scores=_tree3(9) if reference is None else reference,
    )


@pytest.mark.parametrize("name", allocation.ALLOCATIONS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_allocate_exact_total_and_no_empty_layer(name, sparsity):
    mask = _allocate3(_tree3(1), sparsity, name)
    kept = _kept(mask)
    assert kept.sum() == max(_total(sparsity, N3), 3)
    assert np.all(kept >= 1)
    assert all(bool(mask[f"l{i}"]["bias"].all()) for i in range(3))


def test_allocate_global_equals_mask_from_scores_without_collapse():
    scores = _tree3(1)
    expected = masks.mask_from_scores(scores, 0.5)
    assert np.all(_kept(expected) >= 1)
    assert_trees_all_equal(_allocate3(scores, 0.5, "global"), expected)


def test_allocate_scores_takes_the_reference_layer_counts():
    scores, reference = _tree3(1), _tree3(2)
    mask = _allocate3(scores, 0.5, "scores", reference=reference)
    np.testing.assert_array_equal(
        _kept(mask), _kept(masks.mask_from_scores(reference, 0.5))
    )


@pytest.mark.parametrize("name", ["global", "scores"])
def test_allocate_keeps_a_layer_whose_scores_are_all_lowest(name):
    low = _tree3(1, offsets=(0.0, -2.0, 0.0))  # layer 1 below every other weight
    plain = _kept(masks.mask_from_scores(low, 0.8))
    assert plain[1] == 0  # the paper's global threshold removes layer 1
    mask = _allocate3(low if name == "global" else _tree3(3), 0.8, name, low)
    kept = _kept(mask)
    assert kept.sum() == _total(0.8, N3) == 53
    assert kept[1] >= 1


@pytest.mark.parametrize("name", ["global", "scores"])
def test_allocate_keeps_exact_total_when_one_layer_dominates(name):
    high = _tree3(1, offsets=(2.0, 0.0, 0.0))  # layer 0 above every other weight
    plain = _kept(masks.mask_from_scores(high, 0.8))
    np.testing.assert_array_equal(plain, [53, 0, 0])  # two layers collapse
    mask = _allocate3(high if name == "global" else _tree3(3), 0.8, name, high)
    np.testing.assert_array_equal(_kept(mask), [51, 1, 1])


def test_allocate_rejects_unknown_or_incomplete_arguments():
    scores = _tree3(1)
    with pytest.raises(ValueError, match="allocation must be one of"):
        allocation.allocate(scores, 0.9, allocation="snip")
    with pytest.raises(ValueError, match="needs model"):
        allocation.allocate(scores, 0.9, allocation="learned", phi=PHI3)
    with pytest.raises(ValueError, match="needs model"):
        allocation.allocate(scores, 0.9, allocation="learned", model=FIXED)
    with pytest.raises(ValueError, match="reference_scores"):
        allocation.allocate(scores, 0.9, allocation="scores")
    with pytest.raises(ValueError, match="rows"):
        allocation.allocate(
            scores, 0.9, allocation="learned", phi=PHI3[:2], model=FIXED
        )


# ------------------------------------------- every allocation on every model

# Models of more than 1M prunable weights: about 10-20 s each on 2 CPU cores.
_BIG = {"conv2", "conv4", "conv6", "resnet18"}
_BIG |= {n for n in models.MODELS if n.startswith("vgg")}
# Cheaper XLA compiles (as in test_criteria); compiling dominates small models.
_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _kept_by_config(params, phi, model, sparsity, counts_only):
    """``[7, L]`` kept per layer: every allocation, then two adversarial cases.

    ``counts_only``: the allocation's counts without building the masks (the
    models of more than 1M weights, where the masks dominate the test's time).
    Scores are uniform in ``[0, 1)``; adversarially the largest prunable layer
    scores below every other weight (``"global"``, and ``"scores"`` with it as
    reference).
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    uniform = [
        jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves, strict=True)
    ]
    big = int(np.argmax([p.size if p.ndim >= 2 else -1 for p in leaves]))
    low = [x - 2.0 if i == big else x for i, x in enumerate(uniform)]
    scores, low = jax.tree.unflatten(treedef, uniform), jax.tree.unflatten(treedef, low)
    configs = [(a, scores, scores) for a in allocation.ALLOCATIONS]
    configs += [("global", low, None), ("scores", scores, low)]
    rows = []
    for name, sc, ref in configs:
        kwargs = {"phi": phi, "model": model, "reference_scores": ref}
        if counts_only:  # mask_from_counts keeps exactly these (tested above)
            rows.append(
                allocation.layer_counts(sc, sparsity, allocation=name, **kwargs)
            )
            continue
        mask = allocation.allocate(sc, sparsity, allocation=name, **kwargs)
        leaves = masks._prunable_mask_leaves(mask, masks.is_prunable)
        rows.append(jnp.stack([jnp.sum(m, dtype=jnp.int32) for _, m in leaves]))
    return jnp.stack(rows)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in _BIG else n
        for n in sorted(models.MODELS)
    ],
)
def test_no_allocation_leaves_a_layer_empty_on_any_model(name, lenet_model):
    params, apply_fn, shape = _abstract_model(name)
    phi = allocation.layer_features(params, apply_fn=apply_fn, input_shape=shape)
    sizes = allocation.layer_sizes(params)
    assert (name in _BIG) == (sizes.sum() > 1_000_000)
    fn = jax.jit(  # one compilation per model for both sparsities
        lambda s: _kept_by_config(params, phi, lenet_model, s, name in _BIG),
        compiler_options=None if name in _BIG else _FAST,
    )
    labels = [*allocation.ALLOCATIONS, "global (adversarial)", "scores (adversarial)"]
    for sparsity in (0.99, 0.999):
        kept = np.asarray(fn(jnp.float32(sparsity)))
        assert kept.shape == (len(labels), len(sizes))
        for label, row in zip(labels, kept, strict=True):
            assert row.min() >= 1, (label, sparsity, row)
            assert row.sum() == _total(sparsity, sizes.sum()), (label, sparsity)


# --------------------------------------------------------- autosparse_prune

PRUNE_STATIC = ("apply_fn", "allocation", "allocation_model")
N_TINY = 18  # tiny_params: (4, 3) + (3, 2) kernels


@pytest.fixture
def prune_scorer(key, tiny_params, tiny_batch, tiny_apply_fn):
    """An untrained scorer standardised on the tiny network's paper features."""
    feats = features.compute_features(
        key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn
    )
    x = features.stack_features(feats)
    config = scorer.ScorerConfig(
        hidden_sizes=(16,), num_steps=20, eval_every=10, batch_size=64
    )
    return scorer.init_scorer(
        jax.random.key(5),
        x.mean(0),
        x.std(0),
        config=config,
        feature_config=features.FeatureConfig(),
    )


@pytest.mark.parametrize("name", scorer.ALLOCATIONS)
def test_autosparse_prune_with_allocation_exact_total_and_no_empty_layer(
    name, key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    chex.clear_trace_counter()
    prune = jax.jit(  # one compilation for both (traced) sparsities
        chex.assert_max_traces(scorer.autosparse_prune, n=1),
        static_argnames=PRUNE_STATIC,
    )
    for sparsity in (0.5, 0.9):
        mask = prune(
            key,
            prune_scorer,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            sparsity=jnp.float32(sparsity),
            allocation=name,
            allocation_model=FIXED,
        )
        kept = _kept(mask)
        assert kept.sum() == round((1 - sparsity) * N_TINY)  # 9, 2
        assert np.all(kept >= 1)
        assert bool(mask["Dense_0"]["bias"].all() & mask["Dense_1"]["bias"].all())


def test_autosparse_prune_rejects_learned_without_model_and_unknown(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    # "scores" is allocation.allocate's name; autosparse_prune calls it "snip".
    for name, match in (("learned", "needs model"), ("scores", "must be one of")):
        with pytest.raises(ValueError, match=match):
            scorer.autosparse_prune(
                key,
                prune_scorer,
                tiny_params,
                tiny_batch,
                apply_fn=tiny_apply_fn,
                sparsity=0.5,
                allocation=name,
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
