"""Tests for autosparse_jax.features: per-weight features, flat views.

Expected values are computed in the test (``jax.grad`` of the cross-entropy on
each batch, numpy logs and root mean squares), or, for GraSP's ``Hg`` and the
SynFlow score, taken from the criteria functions the features are documented
to read. Most calls go through one ``jax.jit``: eager feature extraction costs
seconds on CPU.
"""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_close, assert_trees_all_equal

from autosparse_jax import criteria, features, layers, losses, masks, models

STATIC = ("apply_fn", "feature_set", "gradient", "normalization", "prunable")
compute = jax.jit(features.compute_features, static_argnames=STATIC)
hessian_gradient_product = jax.jit(
    criteria.hessian_gradient_product, static_argnames=("apply_fn", "prunable")
)
synflow_scores = jax.jit(
    criteria.synflow_scores, static_argnames=("apply_fn", "input_shape", "prunable")
)
EXT = {name: i for i, name in enumerate(features.FEATURE_NAMES["extended"])}
INPUT_SHAPE = (2, 2, 1)  # tiny_batch images
KERNELS = (("Dense_0", "kernel"), ("Dense_1", "kernel"))


def _two_batches(batch):
    """The 8 examples of ``tiny_batch`` as ``K = 2`` stacked batches of 4."""
    return jax.tree.map(lambda x: x.reshape(2, 4, *x.shape[1:]), batch)


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _rms(x):
    return float(np.sqrt(np.mean(np.square(np.asarray(x)))))


def _only_dense_0(path, leaf):
    """Predicate: only ``Dense_0``'s kernel is prunable."""
    return masks.is_prunable(path, leaf) and jax.tree_util.keystr(path).startswith(
        "['Dense_0']"
    )


# ------------------------------------------------------- shape and structure


@pytest.mark.parametrize("feature_set", ["paper", "extended"])
def test_features_have_params_structure_and_zero_non_prunable_leaves(
    feature_set, tiny_params, tiny_batch, tiny_apply_fn
):
    width = features.num_features(feature_set)
    assert width == {"paper": 2, "extended": 8}[feature_set]
    feats = compute(
        tiny_params, tiny_batch, apply_fn=tiny_apply_fn, feature_set=feature_set
    )
    assert jax.tree.structure(feats) == jax.tree.structure(tiny_params)
    for f, p in zip(jax.tree.leaves(feats), jax.tree.leaves(tiny_params), strict=True):
        assert f.shape == (*p.shape, width)
        assert f.dtype == jnp.float32
    for layer in ("Dense_0", "Dense_1"):
        assert not np.any(np.asarray(feats[layer]["bias"]))
        assert bool(jnp.isfinite(feats[layer]["kernel"]).all())
        assert np.any(np.asarray(feats[layer]["kernel"]))


# ------------------------------------------------------------ paper features


@pytest.mark.parametrize("gradient, factor", [("mean", 1.0), ("sum", 2.0)])
def test_paper_features_are_weight_and_hand_computed_gradient(
    gradient, factor, tiny_params, tiny_batch, tiny_apply_fn
):
    batches = _two_batches(tiny_batch)

    def loss(params, k):
        logits = tiny_apply_fn(params, batches["image"][k])
        return losses.cross_entropy(logits, batches["label"][k])

    per_batch = [jax.grad(loss)(tiny_params, k) for k in range(2)]
    mean_grad = jax.tree.map(lambda a, b: (a + b) / 2, *per_batch)
    feats = compute(tiny_params, batches, apply_fn=tiny_apply_fn, gradient=gradient)
    for path in KERNELS:
        f = _get(feats, path)
        np.testing.assert_array_equal(f[..., 0], _get(tiny_params, path))
        np.testing.assert_allclose(
            f[..., 1], factor * _get(mean_grad, path), rtol=1e-5, atol=1e-7
        )
        assert np.any(np.asarray(f[..., 1]))


def test_one_batch_equals_the_same_batch_stacked_once(
    tiny_params, tiny_batch, tiny_apply_fn
):
    one = compute(tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    stacked = jax.tree.map(lambda x: x[None], tiny_batch)
    summed = compute(tiny_params, stacked, apply_fn=tiny_apply_fn, gradient="sum")
    assert_trees_all_close(one, summed)


# --------------------------------------------------------- extended features


def test_extended_features_match_their_definitions(
    tiny_params, tiny_batch, tiny_apply_fn
):
    batches = _two_batches(tiny_batch)
    feats = compute(
        tiny_params, batches, apply_fn=tiny_apply_fn, feature_set="extended"
    )
    paper = compute(tiny_params, batches, apply_fn=tiny_apply_fn)
    dense = masks.dense_mask(tiny_params)
    hg = hessian_gradient_product(tiny_params, dense, batches, apply_fn=tiny_apply_fn)
    syn = synflow_scores(
        tiny_params, dense, apply_fn=tiny_apply_fn, input_shape=INPUT_SHAPE
    )
    fans = {"Dense_0": (4, 3), "Dense_1": (3, 2)}
    depth = {"Dense_0": 0.0, "Dense_1": 1.0}
    for path in KERNELS:
        f = np.asarray(_get(feats, path))
        w = np.asarray(_get(tiny_params, path))
        g = np.asarray(_get(paper, path)[..., 1])
        np.testing.assert_allclose(f[..., :2], _get(paper, path), rtol=1e-6)
        np.testing.assert_allclose(
            f[..., EXT["log|w0*g0|"]], np.log(np.abs(w * g)), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            f[..., EXT["w0*Hg"]], w * _get(hg, path), rtol=1e-5, atol=1e-8
        )
        np.testing.assert_allclose(
            f[..., EXT["log synflow"]], np.log(_get(syn, path)), rtol=1e-5, atol=1e-5
        )
        fan_in, fan_out = fans[path[0]]
        np.testing.assert_allclose(f[..., EXT["log fan_in"]], np.log(fan_in))
        np.testing.assert_allclose(f[..., EXT["log fan_out"]], np.log(fan_out))
        np.testing.assert_array_equal(f[..., EXT["relative depth"]], depth[path[0]])


# ---------------------------------------------------------- context features

CTX = {name: i for i, name in enumerate(features.FEATURE_NAMES["context"])}
W3x2 = jnp.array([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])  # inputs j, units i
X3 = jnp.array([[1.0, 2.0, 0.0], [3.0, -2.0, 0.0]]).reshape(2, 3, 1, 1)


class OneDense(nn.Module):
    """One Dense kernel (3, 2) named ``head`` on flattened images."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(x.reshape(x.shape[0], -1))


def _one_dense():
    params = {"head": {"kernel": W3x2, "bias": jnp.zeros(2)}}
    batch = {"image": X3, "label": jnp.array([0, 1])}
    return params, batch, models.make_apply_fn(OneDense())


def test_context_features_of_a_3x2_kernel_by_hand():
    params, batch, apply_fn = _one_dense()
    feats = compute(params, batch, apply_fn=apply_fn, feature_set="context")
    f = np.asarray(feats["head"]["kernel"])
    g = np.asarray(compute(params, batch, apply_fn=apply_fn)["head"]["kernel"][..., 1])
    w = np.asarray(W3x2)
    x_rms = np.array([np.sqrt(5.0), 2.0, 0.0])  # sqrt((1+9)/2), sqrt((4+4)/2), 0
    np.testing.assert_array_equal(f[..., CTX["w0"]], w)
    np.testing.assert_allclose(f[..., CTX["|x_j|"]], np.tile(x_rms[:, None], 2), 1e-6)
    np.testing.assert_allclose(
        f[..., CTX["|w0|*|x_j|"]], np.abs(w) * x_rms[:, None], rtol=1e-6
    )
    rows = np.array([np.sqrt(12.5), 0.0, 1.0])  # rms of (3, 4), (0, 0), (1, -1)
    cols = np.array([np.sqrt(10 / 3), np.sqrt(17 / 3)])
    np.testing.assert_allclose(f[..., CTX["rms w0[j,:]"]], np.tile(rows[:, None], 2))
    np.testing.assert_allclose(f[..., CTX["rms w0[:,i]"]], np.tile(cols, (3, 1)))
    np.testing.assert_allclose(
        f[..., CTX["rms g0[j,:]"]][:, 0], np.sqrt(np.mean(g**2, 1)), rtol=1e-5
    )
    np.testing.assert_allclose(
        f[..., CTX["rms g0[:,i]"]][0], np.sqrt(np.mean(g**2, 0)), rtol=1e-5
    )
    assert not np.any(g[2])  # input 2 is always 0: no gradient
    syn = synflow_scores(
        params, masks.dense_mask(params), apply_fn=apply_fn, input_shape=(3, 1, 1)
    )
    np.testing.assert_allclose(
        f[..., CTX["log synflow"]],
        np.log(np.maximum(syn["head"]["kernel"], 1e-30)),
        rtol=1e-5,
    )


def test_context_features_standardise_the_unit_statistics_within_the_layer():
    params, batch, apply_fn = _one_dense()
    feats = compute(
        params, batch, apply_fn=apply_fn, feature_set="context", normalization="layer"
    )
    f = np.asarray(feats["head"]["kernel"])
    # RMS of |x_j| over the 6 weights: sqrt((5 + 4 + 0) / 3) = sqrt(3).
    expected = np.array([np.sqrt(5.0), 2.0, 0.0]) / np.sqrt(3.0)
    np.testing.assert_allclose(f[..., CTX["|x_j|"]][:, 1], expected, rtol=1e-6)
    for name in ("rms w0[j,:]", "rms w0[:,i]", "rms g0[j,:]", "rms g0[:,i]"):
        np.testing.assert_allclose(_rms(f[..., CTX[name]]), 1.0, rtol=1e-5)


def test_context_lookahead_appends_the_lookahead_features():
    params, batch, apply_fn = _one_dense()
    ahead = jax.tree.map(lambda p: 2.0 * p, params)
    both = compute(
        params, batch, apply_fn=apply_fn, feature_set="context_lookahead",
        ahead_params=ahead,
    )["head"]["kernel"]  # fmt: skip
    context = compute(params, batch, apply_fn=apply_fn, feature_set="context")
    assert both.shape == (3, 2, 11)
    np.testing.assert_array_equal(both[..., :9], context["head"]["kernel"])
    np.testing.assert_array_equal(both[..., 9], 2.0 * W3x2)
    np.testing.assert_array_equal(both[..., 10], jnp.abs(W3x2))


def test_context_features_need_a_linen_apply_fn(tiny_params, tiny_batch, tiny_apply_fn):
    with pytest.raises(ValueError, match="must run flax.linen modules"):
        features.compute_features(
            tiny_params, tiny_batch, apply_fn=tiny_apply_fn, feature_set="context"
        )


# ------------------------------------------------------------- normalisation


def test_layer_normalization_gives_unit_rms_per_leaf(
    tiny_params, tiny_batch, tiny_apply_fn
):
    raw = compute(tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    feats = compute(
        tiny_params, tiny_batch, apply_fn=tiny_apply_fn, normalization="layer"
    )
    for path in KERNELS:
        f, r = _get(feats, path), _get(raw, path)
        for col in (0, 1):
            assert _rms(r[..., col]) != pytest.approx(1.0, rel=1e-3)
            assert _rms(f[..., col]) == pytest.approx(1.0, rel=1e-5)
            np.testing.assert_allclose(
                f[..., col], r[..., col] / _rms(r[..., col]), rtol=1e-5
            )


def test_network_normalization_keeps_the_ratio_between_layers(
    tiny_params, tiny_batch, tiny_apply_fn
):
    raw = compute(tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    feats = compute(
        tiny_params, tiny_batch, apply_fn=tiny_apply_fn, normalization="network"
    )
    for col in (0, 1):
        both = np.concatenate([np.ravel(_get(feats, p)[..., col]) for p in KERNELS])
        assert _rms(both) == pytest.approx(1.0, rel=1e-5)
        ratio = _rms(feats["Dense_0"]["kernel"][..., col]) / _rms(
            feats["Dense_1"]["kernel"][..., col]
        )
        raw_ratio = _rms(raw["Dense_0"]["kernel"][..., col]) / _rms(
            raw["Dense_1"]["kernel"][..., col]
        )
        assert ratio == pytest.approx(raw_ratio, rel=1e-5)
        assert _rms(feats["Dense_0"]["kernel"][..., col]) != pytest.approx(
            1.0, rel=1e-3
        )


@pytest.mark.parametrize("normalization", ["layer", "network"])
def test_normalized_weight_is_scale_free(
    normalization, tiny_params, tiny_batch, tiny_apply_fn
):
    tripled = jax.tree_util.tree_map_with_path(
        lambda path, p: 3.0 * p if masks.is_prunable(path, p) else p, tiny_params
    )
    kwargs = dict(apply_fn=tiny_apply_fn, normalization=normalization)
    base = compute(tiny_params, tiny_batch, **kwargs)
    scaled = compute(tripled, tiny_batch, **kwargs)
    for path in KERNELS:
        np.testing.assert_allclose(
            _get(scaled, path)[..., 0], _get(base, path)[..., 0], rtol=1e-6
        )


def test_normalization_applies_to_the_inputs_of_every_feature(
    tiny_params, tiny_batch, tiny_apply_fn
):
    feats = compute(
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        feature_set="extended",
        normalization="layer",
    )
    for path in KERNELS:
        f = np.asarray(_get(feats, path))
        np.testing.assert_allclose(
            f[..., EXT["log|w0*g0|"]], np.log(np.abs(f[..., 0] * f[..., 1])), atol=1e-5
        )
        # Context features are not normalised.
        assert _rms(f[..., EXT["log fan_in"]]) == pytest.approx(
            np.log(tiny_params[path[0]]["kernel"].shape[0]), rel=1e-6
        )


def test_prunable_predicate_limits_features_and_normalization(
    tiny_params, tiny_batch, tiny_apply_fn
):
    feats = compute(
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        normalization="network",
        prunable=_only_dense_0,
    )
    assert not np.any(np.asarray(feats["Dense_1"]["kernel"]))
    assert _rms(feats["Dense_0"]["kernel"][..., 0]) == pytest.approx(1.0, rel=1e-5)
    flat = features.stack_features(feats, prunable=_only_dense_0)
    np.testing.assert_array_equal(flat, feats["Dense_0"]["kernel"].reshape(12, 2))
    np.testing.assert_array_equal(
        features.layer_ids(tiny_params, prunable=_only_dense_0), np.zeros(12)
    )


def test_prunable_predicate_reaches_grasp_and_synflow(
    tiny_params, tiny_batch, tiny_apply_fn
):
    """``Hg``'s ``g`` and SynFlow's rescaling cover only the prunable leaves."""
    feats = compute(
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        feature_set="extended",
        prunable=_only_dense_0,
    )
    dense = masks.dense_mask(tiny_params)
    w = np.asarray(tiny_params["Dense_0"]["kernel"])
    f = np.asarray(feats["Dense_0"]["kernel"])
    hg = {
        p: hessian_gradient_product(
            tiny_params, dense, tiny_batch, apply_fn=tiny_apply_fn, prunable=p
        )["Dense_0"]["kernel"]
        for p in (_only_dense_0, masks.is_prunable)
    }
    np.testing.assert_allclose(
        f[..., EXT["w0*Hg"]], w * hg[_only_dense_0], rtol=1e-5, atol=1e-8
    )
    assert not np.allclose(w * hg[_only_dense_0], w * hg[masks.is_prunable])
    syn = {
        p: synflow_scores(
            tiny_params,
            dense,
            apply_fn=tiny_apply_fn,
            input_shape=INPUT_SHAPE,
            prunable=p,
        )["Dense_0"]["kernel"]
        for p in (_only_dense_0, masks.is_prunable)
    }
    np.testing.assert_allclose(
        f[..., EXT["log synflow"]], np.log(syn[_only_dense_0]), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(np.log(syn[_only_dense_0]), np.log(syn[masks.is_prunable]))


def test_layer_context_is_re_exported_from_layers():
    assert features.LeafContext is layers.LeafContext
    assert features.layer_contexts is layers.layer_contexts


# ------------------------------------------------------- flat <-> pytree


def test_stack_features_and_stack_leaves_agree(tiny_params, tiny_batch, tiny_apply_fn):
    feats = compute(tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    flat = features.stack_features(feats)
    assert flat.shape == (18, 2)  # biases excluded although their features are 2-D
    np.testing.assert_array_equal(flat[:12], feats["Dense_0"]["kernel"].reshape(12, 2))
    np.testing.assert_array_equal(flat[12:], feats["Dense_1"]["kernel"].reshape(6, 2))
    np.testing.assert_array_equal(flat[:, 0], features.stack_leaves(tiny_params))
    np.testing.assert_array_equal(features.layer_ids(tiny_params), [0] * 12 + [1] * 6)
    assert features.layer_ids(tiny_params).dtype == np.int32


def test_unstack_scores_inverts_stack_leaves(tiny_params):
    flat = jnp.arange(18, dtype=jnp.float32)
    tree = features.unstack_scores(flat, tiny_params)
    expected = {
        "Dense_0": {"kernel": flat[:12].reshape(4, 3), "bias": jnp.zeros(3)},
        "Dense_1": {"kernel": flat[12:].reshape(3, 2), "bias": jnp.zeros(2)},
    }
    assert_trees_all_equal(tree, expected)
    np.testing.assert_array_equal(features.stack_leaves(tree), flat)
    back = features.unstack_scores(features.stack_leaves(tiny_params), tiny_params)
    assert_trees_all_equal(back["Dense_1"]["kernel"], tiny_params["Dense_1"]["kernel"])


@pytest.mark.parametrize("length", [17, 23])
def test_unstack_scores_rejects_a_wrong_length(length, tiny_params):
    with pytest.raises(ValueError, match=re.escape("expected (18,)")):
        features.unstack_scores(jnp.zeros(length), tiny_params)


def test_stack_features_without_prunable_leaves_raises(tiny_params):
    feats = jax.tree.map(lambda p: jnp.zeros((*p.shape, 2)), tiny_params)
    with pytest.raises(ValueError, match="no prunable leaves"):
        features.stack_features(feats, prunable=lambda path, leaf: False)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"feature_set": "bogus"},
            "feature_set must be one of ('paper', 'extended', 'lookahead', 'context'",
        ),
        (
            {"normalization": "batch"},
            "normalization must be one of ('none', 'network', 'layer')",
        ),
        ({"gradient": "max"}, "gradient must be one of ('mean', 'sum')"),
    ],
)
def test_unknown_options_raise(kwargs, message, tiny_params, tiny_batch, tiny_apply_fn):
    with pytest.raises(ValueError, match=re.escape(message)):
        features.compute_features(
            tiny_params, tiny_batch, apply_fn=tiny_apply_fn, **kwargs
        )
    with pytest.raises(ValueError, match=re.escape(message)):
        features.FeatureConfig(**kwargs)


def test_lookahead_features_match_their_definitions(
    tiny_params, tiny_batch, tiny_apply_fn
):
    ahead = jax.tree.map(lambda p: 1.5 * p - 0.1, tiny_params)
    feats = compute(
        tiny_params, tiny_batch, apply_fn=tiny_apply_fn, feature_set="lookahead",
        ahead_params=ahead,
    )  # fmt: skip
    paper = compute(tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    w0, wk = tiny_params["Dense_0"]["kernel"], ahead["Dense_0"]["kernel"]
    f = feats["Dense_0"]["kernel"]
    assert features.FeatureConfig(feature_set="lookahead").names == (
        "w0", "g0", "wk", "|wk|-|w0|",
    )  # fmt: skip
    np.testing.assert_array_equal(f[..., :2], paper["Dense_0"]["kernel"])
    np.testing.assert_array_equal(f[..., 2], wk)
    np.testing.assert_allclose(f[..., 3], jnp.abs(wk) - jnp.abs(w0), rtol=1e-6)


def test_lookahead_features_need_ahead_params_like_params(
    tiny_params, tiny_batch, tiny_apply_fn
):
    kwargs = {"apply_fn": tiny_apply_fn, "feature_set": "lookahead"}
    with pytest.raises(ValueError, match="pass ahead_params=lookahead.train_ahead"):
        features.compute_features(tiny_params, tiny_batch, **kwargs)
    with pytest.raises(ValueError, match="a tree like params"):
        features.compute_features(
            tiny_params, tiny_batch, ahead_params={"Dense_0": {}}, **kwargs
        )


def test_uint8_images_raise(tiny_params, tiny_batch, tiny_apply_fn):
    batch = {**tiny_batch, "image": jnp.zeros((8, *INPUT_SHAPE), jnp.uint8)}
    with pytest.raises(ValueError, match="preprocessed float images"):
        features.compute_features(tiny_params, batch, apply_fn=tiny_apply_fn)


def test_num_features_rejects_unknown_set():
    with pytest.raises(
        ValueError, match=re.escape("('paper', 'extended', 'lookahead', 'context'")
    ):
        features.num_features("bogus")


def test_feature_config_defaults_names_and_immutability():
    config = features.FeatureConfig()
    assert (config.feature_set, config.gradient, config.normalization) == (
        "paper",
        "mean",
        "none",
    )
    assert config.names == ("w0", "g0")
    for name in features.FEATURE_SETS:
        names = features.FeatureConfig(feature_set=name).names
        assert names == features.FEATURE_NAMES[name]
        assert len(names) == features.num_features(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gradient = "sum"
    with pytest.raises(TypeError):
        features.FeatureConfig("paper")  # keyword-only


# ---------------------------------------------------------------------- jit


def test_jit_matches_eager(tiny_params, tiny_batch, tiny_apply_fn):
    kwargs = dict(
        apply_fn=tiny_apply_fn, feature_set="extended", normalization="network"
    )
    batches = _two_batches(tiny_batch)
    eager = features.compute_features(tiny_params, batches, **kwargs)
    jitted = compute(tiny_params, batches, **kwargs)
    assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-6)
