"""Tests for autosparse_jax.criteria: hand-checked scores, rounds, sanity checks.

Expected values are computed in the test (numpy closed forms, or an explicit
``jax.hessian`` reference for GraSP), never by calling the function under test.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_close, assert_trees_all_equal
from jax.flatten_util import ravel_pytree

from autosparse_jax import allocation, criteria, losses, masks, models

T, F = True, False
LOWEST = np.finfo(np.float32).min


def _num_kept(mask):
    items, _ = jax.tree_util.tree_flatten_with_path(mask)
    return sum(int(np.sum(m)) for p, m in items if masks.is_prunable(p, m))


def _expected_keep(sparsity, n):
    """``round((1 - s) * n)`` in float32, half to even (the documented count)."""
    return int(np.round((np.float32(1) - np.float32(sparsity)) * np.float32(n)))


def _jit(fn):
    """``jax.jit`` with a static ``apply_fn`` (one compile beats op-by-op on CPU)."""
    return jax.jit(fn, static_argnames="apply_fn")


def _synflow_scores(params, mask, **kwargs):
    static = ("apply_fn", "input_shape", "rescale")
    return jax.jit(criteria.synflow_scores, static_argnames=static)(
        params, mask, **kwargs
    )


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _linear_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"]


def _two_layer_apply(params, x):
    """``tanh(x @ a) @ b``, no biases."""
    return jnp.tanh(x.reshape(x.shape[0], -1) @ params["a"]) @ params["b"]


def _relu_chain_apply(params, x):
    """Three dense kernels, relu between them, no biases."""
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["l0"]["kernel"])
    x = jax.nn.relu(x @ params["l1"]["kernel"])
    return x @ params["l2"]["kernel"]


def _positive_chain(low=0.5, high=2.0):
    keys = jax.random.split(jax.random.key(3), 3)
    shapes = [(4, 5), (5, 3), (3, 2)]
    return {
        f"l{i}": {"kernel": jax.random.uniform(k, s, minval=low, maxval=high)}
        for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
    }


# Explicit linear model: logits = x @ W, B = 4 examples, 3 features, 2 classes.
W_LIN = np.array([[0.5, -1.0], [0.25, 0.75], [-0.5, 0.1]], np.float32)
X_LIN = np.array(
    [[1.0, 2.0, -1.0], [0.5, -0.5, 1.5], [-1.0, 0.0, 2.0], [2.0, 1.0, 0.5]],
    np.float32,
)
Y_LIN = np.array([0, 1, 1, 0], np.int32)


def _linear_case():
    params = {"w": jnp.asarray(W_LIN)}
    batch = {"image": jnp.asarray(X_LIN), "label": jnp.asarray(Y_LIN)}
    return params, batch


def _two_layer_case():
    k1, k2, k3 = jax.random.split(jax.random.key(11), 3)
    params = {"a": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (4, 3))}
    batch = {
        "image": jax.random.normal(k3, (6, 3)),
        "label": jnp.array([0, 1, 2, 0, 1, 2]),
    }
    return params, batch


# ---- magnitude and random ------------------------------------------------------


def test_magnitude_hand_case():
    params = {"w": jnp.array([[0.1, -0.9], [0.2, 0.5]]), "b": jnp.array([-1.0, 2.0])}
    dense = masks.dense_mask(params)
    scores = criteria.magnitude(None, params, None, apply_fn=None, mask=dense)
    np.testing.assert_array_equal(scores["w"], np.float32([[0.1, 0.9], [0.2, 0.5]]))
    np.testing.assert_array_equal(scores["b"], np.float32([1.0, 2.0]))
    mask = {"w": jnp.array([[T, F], [T, T]]), "b": jnp.array([T, T])}
    scores = criteria.magnitude(None, params, None, apply_fn=None, mask=mask)
    np.testing.assert_array_equal(scores["w"], np.float32([[0.1, 0.0], [0.2, 0.5]]))


def test_random_is_uniform_deterministic_and_independent_per_leaf(key):
    params = {"a": jnp.zeros((100, 50)), "b": jnp.zeros((100, 50))}
    dense = masks.dense_mask(params)
    call = functools.partial(criteria.random, params=params, batch=None, apply_fn=None)
    scores = call(key, mask=dense)
    for s in jax.tree.leaves(scores):
        assert s.shape == (100, 50) and s.dtype == jnp.float32
        assert float(s.min()) >= 0.0 and float(s.max()) < 1.0
        assert abs(float(s.mean()) - 0.5) < 0.02  # 5000 draws: std of mean ~0.004
        assert abs(float(s.var()) - 1 / 12) < 0.01
    assert_trees_all_equal(call(key, mask=dense), scores)
    other = call(jax.random.key(1), mask=dense)
    assert not np.array_equal(other["a"], scores["a"])
    assert not np.array_equal(scores["a"], scores["b"])  # one subkey per leaf
    corr = np.corrcoef(np.ravel(scores["a"]), np.ravel(scores["b"]))[0, 1]
    assert abs(corr) < 0.05


# ---- SNIP ------------------------------------------------------------------------


def test_snip_linear_model_closed_form():
    params, batch = _linear_case()
    scores = _jit(criteria.snip)(
        None, params, batch, apply_fn=_linear_apply, mask=masks.dense_mask(params)
    )
    x, w = X_LIN.astype(np.float64), W_LIN.astype(np.float64)
    probs = _softmax(x @ w)
    onehot = np.eye(2)[Y_LIN]
    grad = x.T @ (probs - onehot) / len(Y_LIN)  # dL/dW for the mean cross-entropy
    expected = np.abs(w * grad)
    expected /= expected.sum()
    np.testing.assert_allclose(scores["w"], expected, rtol=1e-5)
    assert float(jnp.sum(scores["w"])) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_stacked_batches_average_like_the_concatenated_batch(
    name, tiny_params, tiny_batch, tiny_apply_fn
):
    fn = functools.partial(
        _jit(criteria.CRITERIA[name]),
        None,
        tiny_params,
        apply_fn=tiny_apply_fn,
        mask=masks.dense_mask(tiny_params),
    )
    stacked = jax.tree.map(lambda x: x.reshape(2, 4, *x.shape[1:]), tiny_batch)
    assert stacked["label"].shape == (2, 4)
    assert_trees_all_close(fn(stacked), fn(tiny_batch), rtol=1e-5, atol=1e-6)
    first = jax.tree.map(lambda x: x[0], stacked)
    assert not np.allclose(
        fn(first)["Dense_0"]["kernel"], fn(tiny_batch)["Dense_0"]["kernel"]
    )


# ---- GraSP -----------------------------------------------------------------------


def _grasp_reference(params, batch, apply_fn, temperature, mask=None):
    """Keep-score ``w * (H g) / |sum|`` with an explicit Hessian (flat params).

    The loss is a function of the kept weights only: ``theta -> L(m * theta)``,
    so ``g`` and ``H`` are those of the pruned sub-network.
    """
    flat, unravel = ravel_pytree(params)
    mask = masks.dense_mask(params) if mask is None else mask
    m = ravel_pytree(jax.tree.map(lambda x: x.astype(jnp.float32), mask))[0]

    @jax.jit
    def hessian_times_grad(theta):
        def loss(theta):
            logits = apply_fn(unravel(theta * m), batch["image"]) / temperature
            return losses.cross_entropy(logits, batch["label"])

        hessian = jax.hessian(loss)(theta)
        assert hessian.shape == (theta.size, theta.size)
        return hessian @ jax.grad(loss)(theta)

    score = np.asarray(flat * m * hessian_times_grad(flat), np.float64)
    return score / abs(score.sum())


@pytest.mark.parametrize(
    ("case", "apply_fn"),
    [(_linear_case, _linear_apply), (_two_layer_case, _two_layer_apply)],
    ids=["linear", "two_layer"],
)
def test_grasp_matches_explicit_hessian_with_the_keep_sign(case, apply_fn):
    params, batch = case()
    got = _jit(criteria.grasp)(
        None, params, batch, apply_fn=apply_fn, mask=masks.dense_mask(params)
    )
    got = np.asarray(ravel_pytree(got)[0], np.float64)
    ref = _grasp_reference(params, batch, apply_fn, criteria.GRASP_TEMPERATURE)
    assert criteria.GRASP_TEMPERATURE == 200.0
    assert (ref > 0).any() and (ref < 0).any()  # signed: a flip is detectable
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    big = np.abs(ref) > 1e-2 * np.abs(ref).max()
    np.testing.assert_array_equal(np.sign(got[big]), np.sign(ref[big]))
    assert np.argmax(got) == np.argmax(ref) and np.argmin(got) == np.argmin(ref)
    assert abs(got.sum()) == pytest.approx(1.0, rel=1e-5)


def test_grasp_keeps_weights_whose_removal_reduces_gradient_norm():
    """Paper definition, computed without a Hessian: ``S(-w) = d/de |g(w - e w_i)|^2``.

    Removing weight ``i`` changes ``|g|^2`` by ``-w_i * d|g|^2/dw_i`` to first
    order; GraSP keeps the weights whose removal *reduces* gradient flow the
    most, so the keep-score must be ``+w_i * d|g|^2/dw_i / 2`` (up to scale).
    """
    params, batch = _two_layer_case()
    temperature = criteria.GRASP_TEMPERATURE

    def grad_norm_sq(p):
        def loss(q):
            logits = _two_layer_apply(q, batch["image"]) / temperature
            return losses.cross_entropy(logits, batch["label"])

        return sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(loss)(p)))

    change_on_removal = jax.tree.map(
        lambda w, d: -w * d, params, jax.jit(jax.grad(grad_norm_sq))(params)
    )
    keep = _jit(criteria.grasp)(
        None, params, batch, apply_fn=_two_layer_apply, mask=masks.dense_mask(params)
    )
    got = np.asarray(ravel_pytree(keep)[0], np.float64)
    removal = np.asarray(ravel_pytree(change_on_removal)[0], np.float64)
    expected = -removal / abs(removal.sum())
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert np.argmax(got) == np.argmin(removal)  # kept first: removal hurts |g| most


def test_grasp_honours_temperature():
    params, batch = _two_layer_case()
    dense = masks.dense_mask(params)
    hot = _jit(functools.partial(criteria.grasp, temperature=1.0))
    got_hot = hot(None, params, batch, apply_fn=_two_layer_apply, mask=dense)
    got_default = _jit(criteria.grasp)(
        None, params, batch, apply_fn=_two_layer_apply, mask=dense
    )
    assert not np.allclose(
        ravel_pytree(got_hot)[0], ravel_pytree(got_default)[0], rtol=1e-2, atol=1e-3
    )
    ref = _grasp_reference(params, batch, _two_layer_apply, 1.0)
    np.testing.assert_allclose(ravel_pytree(got_hot)[0], ref, rtol=1e-4, atol=1e-5)


def test_grasp_with_mask_scores_the_pruned_subnetwork():
    """With a mask, ``g`` and ``H`` must be those of the kept weights.

    Hidden unit 0 has all its outgoing weights pruned, so the pruned network's
    loss does not depend on the weights into it: their scores must be 0, as
    SNIP and SynFlow give (see the next test).
    """
    params, batch = _two_layer_case()
    mask = masks.dense_mask(params)
    mask["b"] = mask["b"].at[0, :].set(False)  # unit 0 feeds nothing
    mask["a"] = mask["a"].at[2, 3].set(False)
    got = _jit(criteria.grasp)(
        None, params, batch, apply_fn=_two_layer_apply, mask=mask
    )
    np.testing.assert_allclose(got["a"][:, 0], 0.0, atol=1e-6)
    temperature = criteria.GRASP_TEMPERATURE
    ref = _grasp_reference(params, batch, _two_layer_apply, temperature, mask=mask)
    np.testing.assert_allclose(ravel_pytree(got)[0], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["snip", "synflow"])
def test_weights_into_a_disconnected_unit_score_zero(name):
    params, batch = _two_layer_case()
    params = jax.tree.map(jnp.abs, params) if name == "synflow" else params
    mask = masks.dense_mask(params)
    mask["b"] = mask["b"].at[0, :].set(False)
    fn = _jit(criteria.CRITERIA[name])
    got = fn(None, params, batch, apply_fn=_two_layer_apply, mask=mask)
    np.testing.assert_array_equal(got["a"][:, 0], 0.0)
    assert (np.asarray(got["a"][:, 1:]) > 0).all()


# ---- SynFlow ---------------------------------------------------------------------


def test_synflow_closed_form_and_conservation_without_rescale():
    params = _positive_chain()
    scores = _synflow_scores(
        params,
        masks.dense_mask(params),
        apply_fn=_relu_chain_apply,
        input_shape=(4,),
        rescale=False,
    )
    ws = [np.asarray(params[f"l{i}"]["kernel"], np.float64) for i in range(3)]
    total = np.ones(4) @ ws[0] @ ws[1] @ ws[2] @ np.ones(2)  # R = 1^T W0 W1 W2 1
    for i, w in enumerate(ws):
        into = functools.reduce(np.matmul, ws[:i], np.ones(4))  # 1^T W0 .. W_{i-1}
        out = functools.reduce(lambda v, m: m @ v, ws[i + 1 :][::-1], np.ones(2))
        expected = w * np.outer(into, out)  # |w * dR/dw|
        np.testing.assert_allclose(scores[f"l{i}"]["kernel"], expected, rtol=1e-5)
        assert float(jnp.sum(scores[f"l{i}"]["kernel"])) == pytest.approx(
            total, rel=1e-5
        )


def test_synflow_rescale_multiplies_every_score_by_one_power_of_two():
    params = _positive_chain(low=1.0, high=3.0)  # activations grow: c_l < 1
    dense = masks.dense_mask(params)
    call = functools.partial(
        _synflow_scores, params, dense, apply_fn=_relu_chain_apply, input_shape=(4,)
    )
    plain, scaled = call(rescale=False), call(rescale=True)
    sums = [float(jnp.sum(scaled[f"l{i}"]["kernel"])) for i in range(3)]
    np.testing.assert_allclose(sums, sums[0], rtol=1e-5)
    c = np.prod(
        [
            2.0 ** np.round(np.log2(w.shape[-1] / np.sum(np.abs(np.asarray(w)))))
            for w in jax.tree.leaves(params)
        ]
    )
    assert c != 1.0
    assert_trees_all_close(scaled, jax.tree.map(lambda s: s * c, plain), rtol=1e-5)
    flat_plain, flat_scaled = ravel_pytree(plain)[0], ravel_pytree(scaled)[0]
    np.testing.assert_array_equal(np.argsort(flat_plain), np.argsort(flat_scaled))
    assert_trees_all_equal(
        masks.mask_from_scores(plain, 0.7), masks.mask_from_scores(scaled, 0.7)
    )


def test_synflow_ignores_data_values_and_weight_signs(key):
    params = _positive_chain()
    dense = masks.dense_mask(params)
    fn = functools.partial(
        _jit(criteria.synflow), key, apply_fn=_relu_chain_apply, mask=dense
    )
    k1, k2 = jax.random.split(key)
    batch1 = {"image": jax.random.normal(k1, (3, 4)), "label": jnp.array([0, 1, 0])}
    batch2 = {
        "image": jax.random.normal(k2, (3, 4)) * 10,
        "label": jnp.array([1, 1, 0]),
    }
    scores = fn(params, batch1)
    assert_trees_all_equal(fn(params, batch2), scores)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), batch2)  # [K=2, B=3, 4]
    assert_trees_all_equal(fn(params, stacked), scores)
    flipped = jax.tree.map(lambda x: x, params)
    flipped["l1"]["kernel"] = -params["l1"]["kernel"]
    assert_trees_all_equal(fn(flipped, batch1), scores)
    direct = _synflow_scores(
        params, dense, apply_fn=_relu_chain_apply, input_shape=(4,)
    )
    assert_trees_all_equal(scores, direct)


def test_synflow_vgg19_is_finite_and_conserves_flow():
    model = models.get_model("vgg19")
    # Cheaper XLA compiles (what jax_disable_most_optimizations sets): ~4 s, not ~7 s.
    fast = {
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    }
    init = jax.jit(models.init_params, static_argnums=(1, 2), compiler_options=fast)
    params, state = init(jax.random.key(0), model, (32, 32, 3))
    apply_fn = models.make_apply_fn(model, state)
    synflow = functools.partial(
        criteria.synflow_scores, apply_fn=apply_fn, input_shape=(32, 32, 3)
    )
    scores = jax.jit(synflow, compiler_options=fast)(params, masks.dense_mask(params))
    assert jax.tree.structure(scores) == jax.tree.structure(params)
    items, _ = jax.tree_util.tree_flatten_with_path(scores)
    sums = []
    for path, s in items:
        assert bool(jnp.isfinite(s).all()), jax.tree_util.keystr(path)
        assert float(s.min()) >= 0.0
        if masks.is_prunable(path, s):
            sums.append(float(jnp.sum(s)))
    assert len(sums) == 17  # 16 conv kernels and the head
    assert min(sums) > 0.0
    np.testing.assert_allclose(sums, sums[0], rtol=1e-4)  # max pooling is homogeneous


# ---- prune_at_init and schedules -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "num_rounds", "sparsity"),
    [
        ("magnitude", 1, 0.5),
        ("magnitude", 3, 0.9),
        ("snip", 1, 0.7),
        ("snip", 3, 0.5),
        ("synflow", 1, 0.9),
        ("synflow", 3, 0.7),
    ],
)
def test_prune_at_init_reaches_exact_count(
    name, num_rounds, sparsity, key, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = criteria.prune_at_init(
        key,
        criteria.CRITERIA[name],
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=sparsity,
        num_rounds=num_rounds,
    )
    keep = _expected_keep(sparsity, 18)  # N = 12 + 6
    assert _num_kept(mask) == keep
    assert float(masks.sparsity(mask)) == pytest.approx(1 - keep / 18, rel=1e-6)
    assert jax.tree.structure(mask) == jax.tree.structure(tiny_params)
    assert all(m.dtype == jnp.bool_ for m in jax.tree.leaves(mask))
    assert mask["Dense_0"]["bias"].all() and mask["Dense_1"]["bias"].all()


def test_prune_at_init_uniform_allocation_counts(
    key, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = criteria.prune_at_init(
        key,
        criteria.snip,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.5,
        allocation=allocation.uniform(),
        num_rounds=2,
    )
    assert int(mask["Dense_0"]["kernel"].sum()) == 6  # round(0.5 * 12)
    assert int(mask["Dense_1"]["kernel"].sum()) == 3  # round(0.5 * 6)


def test_prune_at_init_default_keeps_a_layer_the_global_threshold_empties(
    key, tiny_params, tiny_apply_fn
):
    # Dense_1's weights are all below Dense_0's: a plain global top-9 of |w|
    # takes every weight from Dense_0.
    params = jax.tree.map(lambda x: x, tiny_params)
    params["Dense_1"]["kernel"] = 1e-3 * tiny_params["Dense_1"]["kernel"]
    scores = jax.tree.map(jnp.abs, params)
    prune = functools.partial(
        criteria.prune_at_init,
        key,
        criteria.magnitude,
        params,
        None,
        apply_fn=tiny_apply_fn,
        sparsity=0.5,
    )
    plain = prune(allocation=allocation.global_topk(min_per_layer=0))
    assert_trees_all_equal(plain, masks.mask_from_scores(scores, 0.5))  # old "global"
    assert int(plain["Dense_1"]["kernel"].sum()) == 0
    default = prune()  # global_topk(): Dense_1 gets its best weight back
    assert int(default["Dense_0"]["kernel"].sum()) == 8
    assert int(default["Dense_1"]["kernel"].sum()) == 1
    best = np.unravel_index(np.argmax(scores["Dense_1"]["kernel"]), (3, 2))
    assert bool(default["Dense_1"]["kernel"][best])
    assert not (
        np.asarray(default["Dense_0"]["kernel"]) & ~plain["Dense_0"]["kernel"]
    ).any()


@pytest.mark.parametrize("schedule", ["geometric", "exponential", "linear"])
def test_prune_at_init_masks_only_shrink_across_rounds(
    schedule, key, tiny_params, tiny_batch, tiny_apply_fn
):
    seen = []

    def recording(key, params, batch, *, apply_fn, mask):
        jax.debug.callback(seen.append, mask, ordered=True)
        return criteria.random(key, params, batch, apply_fn=apply_fn, mask=mask)

    final = criteria.prune_at_init(
        key,
        recording,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.9,
        num_rounds=3,
        schedule=schedule,
    )
    jax.effects_barrier()
    history = [*seen, final]
    assert len(history) == 4
    if schedule != "linear":  # 1 - 0.1 ** (r / 3): 0, 0.536, 0.785, 0.9
        targets = [0.0] + [1 - 0.1 ** ((r + 1) / 3) for r in range(3)]
    else:
        targets = [0.0, 0.3, 0.6, 0.9]
    assert [_num_kept(m) for m in history] == [_expected_keep(s, 18) for s in targets]
    for before, after in zip(history, history[1:], strict=False):
        for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            assert not (np.asarray(a) & ~np.asarray(b)).any()  # a subset of b


def test_prune_at_init_round_r_uses_fold_in_key_r(
    key, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = criteria.prune_at_init(
        key,
        criteria.random,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.75,
        allocation=allocation.global_topk(min_per_layer=0),
        num_rounds=2,
        schedule="linear",
    )
    expected = masks.dense_mask(tiny_params)
    for r, target in enumerate([0.375, 0.75]):
        scores = criteria.random(
            jax.random.fold_in(key, r), tiny_params, None, apply_fn=None, mask=None
        )
        expected = masks.mask_from_scores(scores, target, mask=expected)
    assert_trees_all_equal(mask, expected)
    assert _num_kept(mask) == 4  # round(0.25 * 18) = round(4.5), half to even


def test_prune_at_init_one_round_scores_with_the_key_itself(
    key, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = criteria.prune_at_init(
        key,
        criteria.random,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.5,
        allocation=allocation.global_topk(min_per_layer=0),
    )

    def expected(k):
        scores = criteria.random(k, tiny_params, None, apply_fn=None, mask=None)
        return masks.mask_from_scores(scores, 0.5)

    assert_trees_all_equal(mask, expected(key))
    folded = expected(jax.random.fold_in(key, 0))  # the old one-round key
    assert not np.array_equal(folded["Dense_0"]["kernel"], mask["Dense_0"]["kernel"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "cosine"}, "schedule must be one of"),
        ({"num_rounds": 0}, "num_rounds must be a positive int"),
        ({"num_rounds": 2.0}, "num_rounds must be a positive int"),
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": float("nan")}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": "0.9"}, r"sparsity must be a number .*got '0.9' of type str"),
        ({"sparsity": None}, r"sparsity must be a number .*got None"),
        ({"sparsity": False}, r"sparsity must be a number .*got False"),
        ({"sparsity": jnp.array([0.5, 0.9])}, "sparsity must be a scalar"),
        ({"allocation": "global"}, "allocation must be a callable"),
        ({"allocation": None}, "allocation must be a callable"),
    ],
)
def test_prune_at_init_rejects_bad_arguments(
    kwargs, match, key, tiny_params, tiny_batch, tiny_apply_fn
):
    kwargs = {"sparsity": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        criteria.prune_at_init(
            key,
            criteria.magnitude,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            **kwargs,
        )


def test_jitted_prune_at_init_compiles_once_across_sparsities(
    key, tiny_params, tiny_batch, tiny_apply_fn
):
    chex.clear_trace_counter()
    jitted = jax.jit(  # a fresh wrapper: jit caches are shared per function
        chex.assert_max_traces(criteria.prune_at_init, n=1),
        static_argnames=(
            "criterion",
            "apply_fn",
            "allocation",
            "num_rounds",
            "schedule",
            "prunable",
        ),
    )
    call = functools.partial(
        jitted,
        key,
        criteria.snip,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        num_rounds=2,
    )
    for s in (0.5, 0.8):
        mask = call(sparsity=jnp.float32(s))
        assert _num_kept(mask) == _expected_keep(s, 18)
        eager = criteria.prune_at_init(
            key,
            criteria.snip,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            sparsity=s,
            num_rounds=2,
        )
        assert_trees_all_equal(mask, eager)
    assert jitted._cache_size() == 1


# ---- compute_scores and batch validation -----------------------------------------


def test_compute_scores_without_mask_is_the_criterion(
    key, tiny_params, tiny_batch, tiny_apply_fn
):
    scores = criteria.compute_scores(
        key, criteria.snip, tiny_params, tiny_batch, apply_fn=tiny_apply_fn
    )
    direct = criteria.snip(
        key,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        mask=masks.dense_mask(tiny_params),
    )
    assert_trees_all_equal(scores, direct)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: {"Dense_0": m["Dense_0"]}, "same tree structure"),
        (
            lambda m: {
                **m,
                "Dense_1": {**m["Dense_1"], "kernel": jnp.ones((2, 3), bool)},
            },
            "shape",
        ),
        (lambda m: {**m, "Dense_1": {**m["Dense_1"], "bias": jnp.ones((2,))}}, "bool"),
    ],
    ids=["structure", "shape", "dtype"],
)
def test_compute_scores_rejects_mismatched_mask(
    edit, match, key, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = edit(masks.dense_mask(tiny_params))
    with pytest.raises(ValueError, match=match):
        criteria.compute_scores(
            key,
            criteria.magnitude,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            mask=mask,
        )


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow"])
def test_uint8_images_and_bad_label_rank_raise(
    name, key, tiny_params, tiny_batch, tiny_apply_fn
):
    fn = functools.partial(
        criteria.compute_scores,
        key,
        criteria.CRITERIA[name],
        tiny_params,
        apply_fn=tiny_apply_fn,
    )
    raw = {"image": jnp.zeros((8, 2, 2, 1), jnp.uint8), "label": tiny_batch["label"]}
    with pytest.raises(ValueError, match="preprocess"):
        fn(raw)
    deep = {
        "image": tiny_batch["image"][None, None],
        "label": jnp.zeros((1, 1, 8), jnp.int32),
    }
    with pytest.raises(ValueError, match=r"label.*\(1, 1, 8\)"):
        fn(deep)


# ---- sanity checks ---------------------------------------------------------------


def test_shuffle_within_layers_keeps_counts_and_moves_weights(key):
    mask = {
        "big": jnp.arange(400).reshape(20, 20) < 200,  # top half kept: 200 of 400
        "small": jnp.array([[T, F, F], [T, T, F], [F, F, F], [F, T, F]]),
        # Not a valid mask (non-prunable leaves are all True), but a permuted
        # bias leaf would show up.
        "bias": jnp.arange(20) % 3 == 0,
    }
    shuffled = criteria.shuffle_within_layers(key, mask)
    assert jax.tree.structure(shuffled) == jax.tree.structure(mask)
    for name in ("big", "small"):
        assert (
            shuffled[name].dtype == jnp.bool_
            and shuffled[name].shape == mask[name].shape
        )
        assert int(shuffled[name].sum()) == int(mask[name].sum())
    assert int(shuffled["big"].sum()) == 200
    assert not np.array_equal(shuffled["big"], mask["big"])
    np.testing.assert_array_equal(shuffled["bias"], mask["bias"])
    assert_trees_all_equal(criteria.shuffle_within_layers(key, mask), shuffled)
    other = criteria.shuffle_within_layers(jax.random.key(1), mask)
    assert not np.array_equal(other["big"], shuffled["big"])


def test_invert_scores_keeps_the_lowest_signed_scores():
    scores = {"w": jnp.array([[-3.0, -0.5], [0.5, 2.0]]), "b": jnp.array([1.0, -1.0])}
    assert masks.mask_from_scores(scores, 0.5)["w"].tolist() == [[F, F], [T, T]]
    inverted = criteria.invert_scores(scores)
    np.testing.assert_array_equal(inverted["w"], np.float32([[3.0, 0.5], [-0.5, -2.0]]))
    assert masks.mask_from_scores(inverted, 0.5)["w"].tolist() == [[T, T], [F, F]]
    # A reciprocal does not reverse signed rankings: 1 / s = [[-1/3, -2], [2, 0.5]]
    # keeps the original 0.5 and 2.0, i.e. the *highest* scores.
    reciprocal = jax.tree.map(lambda s: 1.0 / s, scores)
    by_reciprocal = masks.mask_from_scores(reciprocal, 0.5)["w"].tolist()
    assert by_reciprocal == [[F, F], [T, T]] != [[T, T], [F, F]]
    assert_trees_all_equal(criteria.invert_scores(inverted), scores)
    wiggle = jnp.asarray(np.sin(np.arange(30.0)).reshape(5, 6))
    order = np.argsort(np.ravel(wiggle))
    np.testing.assert_array_equal(
        np.argsort(np.ravel(criteria.invert_scores({"w": wiggle})["w"])), order[::-1]
    )


def _tiny_init(key):
    k1, k2 = jax.random.split(key)
    return {
        "Dense_0": {"kernel": jax.random.normal(k1, (4, 3)), "bias": jnp.zeros((3,))},
        "Dense_1": {"kernel": jax.random.normal(k2, (3, 2)), "bias": jnp.zeros((2,))},
    }


def test_reinitialize_gives_masked_fresh_weights(key, tiny_params):
    mask = masks.mask_from_scores(jax.tree.map(jnp.abs, tiny_params), 0.5)
    fresh = criteria.reinitialize(key, tiny_params, mask, init_fn=_tiny_init)
    assert jax.tree.structure(fresh) == jax.tree.structure(tiny_params)
    expected = jax.tree.map(lambda p, m: jnp.where(m, p, 0.0), _tiny_init(key), mask)
    assert_trees_all_equal(fresh, expected)
    kept = mask["Dense_0"]["kernel"]
    assert not np.allclose(
        fresh["Dense_0"]["kernel"][kept], tiny_params["Dense_0"]["kernel"][kept]
    )
    np.testing.assert_array_equal(fresh["Dense_0"]["kernel"][~kept], 0.0)
    assert _num_kept(jax.tree.map(lambda p: p != 0, fresh)) == 9  # round(0.5 * 18)


def test_reinitialize_rejects_another_structure(key, tiny_params):
    mask = masks.dense_mask(tiny_params)
    with pytest.raises(ValueError, match="structure"):
        criteria.reinitialize(
            key,
            tiny_params,
            mask,
            init_fn=lambda k: {"Dense_0": _tiny_init(k)["Dense_0"]},
        )


# ---- prune_at_init: no scope, no prunable weights ----------------------------------


def test_prune_at_init_has_no_scope_any_more(key, tiny_params, tiny_apply_fn):
    with pytest.raises(TypeError, match="scope"):
        criteria.prune_at_init(
            key,
            criteria.magnitude,
            tiny_params,
            None,
            apply_fn=tiny_apply_fn,
            sparsity=0.5,
            scope="layerwise",
        )


@pytest.mark.parametrize("name", ["magnitude", "snip"])
def test_prune_at_init_without_prunable_weights_raises(name, key, tiny_batch):
    biases = {"Dense_0": {"bias": jnp.zeros(3)}, "head": {"bias": jnp.zeros(2)}}

    def apply_fn(params, x):
        return jnp.zeros((x.shape[0], 2)) + params["head"]["bias"][None, :]

    with pytest.raises(ValueError, match=r"no prunable weights: prunable=.*prunable="):
        criteria.prune_at_init(
            key,
            criteria.CRITERIA[name],
            biases,
            tiny_batch,
            apply_fn=apply_fn,
            sparsity=0.5,
        )
    only_head = {"head": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
    with pytest.raises(ValueError, match="no prunable weights"):
        criteria.prune_at_init(
            key,
            criteria.CRITERIA[name],
            only_head,
            tiny_batch,
            apply_fn=lambda p, x: x.reshape(x.shape[0], -1) @ p["head"]["kernel"],
            sparsity=0.5,
            prunable=masks.is_prunable_except_output,
        )


# ---- a custom prunable predicate ---------------------------------------------------

EXCEPT_HEAD = masks.is_prunable_except_output


def _head_params(tiny_params):
    """tiny_params with the output layer named ``head``."""
    return {"Dense_0": tiny_params["Dense_0"], "head": tiny_params["Dense_1"]}


def _head_apply(params, x):
    x = x.reshape(x.shape[0], -1)
    h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None, :]
    h = jax.nn.relu(h)
    return h @ params["head"]["kernel"] + params["head"]["bias"][None, :]


def _hg_reference(params, batch, temperature, prunable):
    """``H g`` with an explicit Hessian, ``g`` zero outside the ``prunable`` leaves."""
    flat, unravel = ravel_pytree(params)
    flags = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full(x.shape, float(prunable(path, x))), params
    )
    on = ravel_pytree(flags)[0]

    def loss(theta):
        logits = _head_apply(unravel(theta), batch["image"]) / temperature
        return losses.cross_entropy(logits, batch["label"])

    hessian = jax.jit(jax.hessian(loss))(flat)
    assert hessian.shape == (flat.size, flat.size)
    return unravel(hessian @ (jax.grad(loss)(flat) * on))


@pytest.mark.parametrize("temperature", [1.0, criteria.GRASP_TEMPERATURE])
def test_hessian_gradient_product_takes_g_from_the_prunable_leaves(
    temperature, tiny_params, tiny_batch
):
    params = _head_params(tiny_params)
    hgp = jax.jit(
        criteria.hessian_gradient_product,
        static_argnames=("apply_fn", "temperature", "prunable"),
    )
    call = functools.partial(
        hgp,
        params,
        masks.dense_mask(params),
        tiny_batch,
        apply_fn=_head_apply,
        temperature=temperature,
    )
    got = call(prunable=EXCEPT_HEAD)
    expected = _hg_reference(params, tiny_batch, temperature, EXCEPT_HEAD)
    scale = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(expected))
    assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-5 * scale)
    default = call()
    expected_default = _hg_reference(params, tiny_batch, temperature, masks.is_prunable)
    assert_trees_all_close(default, expected_default, rtol=1e-4, atol=1e-5 * scale)
    # The head's g changes H g everywhere, Dense_0 included.
    diff = np.abs(np.asarray(got["Dense_0"]["kernel"] - default["Dense_0"]["kernel"]))
    assert diff.max() > 1e-2 * scale


def test_prune_at_init_grasp_honours_the_predicate(key, tiny_params, tiny_batch):
    params = _head_params(tiny_params)
    mask = criteria.prune_at_init(
        key,
        criteria.grasp,
        params,
        tiny_batch,
        apply_fn=_head_apply,
        sparsity=0.5,
        prunable=EXCEPT_HEAD,
    )
    assert mask["head"]["kernel"].all() and mask["head"]["bias"].all()
    kept = np.ravel(mask["Dense_0"]["kernel"])
    assert kept.sum() == 6  # round(0.5 * 12): the head is not counted

    def top6(prunable):  # GraSP keep-score w * Hg, ranked inside Dense_0
        hg = _hg_reference(params, tiny_batch, criteria.GRASP_TEMPERATURE, prunable)
        score = np.ravel(params["Dense_0"]["kernel"] * hg["Dense_0"]["kernel"])
        out = np.zeros(12, bool)
        out[np.argsort(-score, kind="stable")[:6]] = True
        return out

    np.testing.assert_array_equal(kept, top6(EXCEPT_HEAD))
    assert not np.array_equal(kept, top6(masks.is_prunable))  # g on the head too


def test_synflow_rescales_only_the_prunable_leaves(tiny_params, tiny_batch):
    # Biases are zero, so R is linear in each kernel: rescaling the head by
    # c_head multiplies every score by c_head (a power of two), no more.
    params = _head_params(tiny_params)
    dense = masks.dense_mask(params)
    fn = _jit(criteria.synflow)
    default = fn(None, params, tiny_batch, apply_fn=_head_apply, mask=dense)
    custom = jax.jit(criteria.synflow, static_argnames=("apply_fn", "prunable"))(
        None, params, tiny_batch, apply_fn=_head_apply, mask=dense, prunable=EXCEPT_HEAD
    )
    head = np.abs(np.asarray(params["head"]["kernel"], np.float64))
    c_head = 2.0 ** np.round(np.log2(head.shape[-1] / head.sum()))
    assert c_head != 1.0
    assert_trees_all_close(
        default, jax.tree.map(lambda s: s * c_head, custom), rtol=1e-5
    )


@pytest.mark.parametrize("num_rounds", [1, 3])
def test_prune_at_init_synflow_honours_the_predicate(
    num_rounds, key, tiny_params, tiny_batch
):
    params = _head_params(tiny_params)
    prune = functools.partial(
        criteria.prune_at_init,
        key,
        criteria.synflow,
        params,
        tiny_batch,
        apply_fn=_head_apply,
        sparsity=0.75,
        num_rounds=num_rounds,
    )
    mask = prune(prunable=EXCEPT_HEAD)
    assert mask["head"]["kernel"].all() and mask["head"]["bias"].all()
    assert int(mask["Dense_0"]["kernel"].sum()) == 3  # round(0.25 * 12)
    assert float(masks.sparsity(mask, prunable=EXCEPT_HEAD)) == 0.75
    default = prune()
    assert not default["head"]["kernel"].all()
    assert _num_kept(default) == _expected_keep(0.75, 18)


def test_compute_scores_passes_the_predicate_to_criteria_that_take_it(
    key, tiny_params, tiny_batch
):
    params = _head_params(tiny_params)
    got = []

    def with_prunable(key, params, batch, *, apply_fn, mask, prunable):
        got.append(prunable)
        return criteria.magnitude(key, params, batch, apply_fn=apply_fn, mask=mask)

    def without(key, params, batch, *, apply_fn, mask):
        return criteria.magnitude(key, params, batch, apply_fn=apply_fn, mask=mask)

    for criterion in (with_prunable, without):
        scores = criteria.compute_scores(
            key,
            criterion,
            params,
            tiny_batch,
            apply_fn=_head_apply,
            prunable=EXCEPT_HEAD,
        )
        assert_trees_all_equal(scores, jax.tree.map(jnp.abs, params))
    assert got == [EXCEPT_HEAD]
    criteria.compute_scores(key, with_prunable, params, None, apply_fn=_head_apply)
    assert got == [EXCEPT_HEAD, masks.is_prunable]  # the default predicate


def test_compute_scores_rejects_scores_of_another_structure(
    key, tiny_params, tiny_batch, tiny_apply_fn
):
    def partial_scores(key, params, batch, *, apply_fn, mask):
        return {"Dense_0": jax.tree.map(jnp.abs, params["Dense_0"])}

    with pytest.raises(ValueError, match=r"returned scores with tree structure.*one"):
        criteria.compute_scores(
            key, partial_scores, tiny_params, tiny_batch, apply_fn=tiny_apply_fn
        )


def test_shuffle_within_layers_honours_the_predicate(key):
    mask = {
        "Dense_0": {"kernel": jnp.arange(400).reshape(20, 20) < 200},
        "head": {"kernel": jnp.arange(400).reshape(20, 20) < 200},
    }
    shuffled = criteria.shuffle_within_layers(key, mask, prunable=EXCEPT_HEAD)
    np.testing.assert_array_equal(shuffled["head"]["kernel"], mask["head"]["kernel"])
    assert not np.array_equal(shuffled["Dense_0"]["kernel"], mask["Dense_0"]["kernel"])
    assert int(shuffled["Dense_0"]["kernel"].sum()) == 200
    default = criteria.shuffle_within_layers(key, mask)
    assert not np.array_equal(default["head"]["kernel"], mask["head"]["kernel"])


# ------------------------------------------------------------- rank_matched


def test_rank_matched_deals_each_layers_magnitudes_by_score_hand_case():
    params = {
        "Dense_0": {
            "kernel": jnp.array([[1.0, -3.0], [2.0, 0.5]]),
            "bias": jnp.array([7.0, -1.0]),
        }
    }
    scores = {
        "Dense_0": {
            "kernel": jnp.array([[0.1, 0.4], [0.3, 0.2]]),
            "bias": jnp.array([9.0, 8.0]),
        }
    }
    out = criteria.rank_matched(params, scores)
    # |w| sorted: 0.5, 1, 2, 3; score ranks: 0.1 < 0.2 < 0.3 < 0.4.
    np.testing.assert_array_equal(out["Dense_0"]["kernel"], [[0.5, 3.0], [2.0, 1.0]])
    np.testing.assert_array_equal(out["Dense_0"]["bias"], [7.0, -1.0])  # not prunable


def test_rank_matched_by_magnitude_is_synflow_itself(
    tiny_params, tiny_batch, tiny_apply_fn
):
    ranked = criteria.rank_matched(tiny_params, jax.tree.map(jnp.abs, tiny_params))
    kwargs = {"apply_fn": tiny_apply_fn, "sparsity": 0.7, "num_rounds": 5}
    key = jax.random.key(0)
    assert_trees_all_equal(
        criteria.prune_at_init(key, criteria.synflow, ranked, tiny_batch, **kwargs),
        criteria.prune_at_init(
            key, criteria.synflow, tiny_params, tiny_batch, **kwargs
        ),
    )


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["magnitude", "snip"])
def test_masks_on_the_accelerator_match_the_cpus(name):
    """The jitted prune_at_init on the accelerator keeps the CPU's count, and
    the same weights: all of them for magnitude (exact), nearly all for SNIP
    (gradients may round differently near the threshold)."""
    model = models.get_model("lenet300_100", num_classes=10)
    params, state = models.init_params(jax.random.key(0), model, (28, 28, 1))
    batch = {
        "image": jax.random.normal(jax.random.key(1), (64, 28, 28, 1)),
        "label": jax.random.randint(jax.random.key(2), (64,), 0, 10),
    }
    prune = jax.jit(criteria.prune_at_init, static_argnames=("criterion", "apply_fn"))
    kept = []
    for device in (jax.devices()[0], jax.devices("cpu")[0]):
        put = functools.partial(jax.device_put, device=device)
        mask = prune(
            put(jax.random.key(3)), criteria.CRITERIA[name], put(params),
            put(batch), apply_fn=models.make_apply_fn(model, state), sparsity=0.98,
        )  # fmt: skip
        kept.append(np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)]))
    assert kept[0].sum() == kept[1].sum()
    overlap = (kept[0] & kept[1]).sum() / kept[1].sum()
    assert overlap == 1.0 if name == "magnitude" else overlap > 0.99
