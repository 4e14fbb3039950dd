"""Tests for autosparse_jax.scorer: config, MLP, prediction, criterion, training, I/O.

Shapes are tiny (``tiny_params`` has 12 + 6 = 18 prunable weights) and every
key is fixed. Training runs on synthetic features with continuous targets for
a few dozen steps: the tests check the mechanics (shapes, selection, tracing,
the loss by hand), never accuracy. The one learnability check fits a target
that is a monotone function of one feature.
"""

import dataclasses
import functools
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_all_close, assert_trees_all_equal
from scipy import stats

from autosparse_jax import (
    allocation,
    checkpoint,
    criteria,
    evaluation,
    features,
    masks,
    scorer,
)

FC = features.FeatureConfig()  # "paper": (w0, g0), F = 2
TINY = scorer.ScorerConfig(
    hidden_sizes=(8,), num_steps=20, eval_every=10, batch_size=64
)
PRUNE_STATIC = ("criterion", "apply_fn", "allocation", "num_rounds", "prunable")
N_PRUNABLE = 18  # tiny_params: (4, 3) + (3, 2) kernels
prune = jax.jit(criteria.prune_at_init, static_argnames=PRUNE_STATIC)
compute = jax.jit(
    features.compute_features,
    static_argnames=(
        "apply_fn",
        "feature_set",
        "gradient",
        "normalization",
        "prunable",
    ),
)


def _scorer(config=TINY, mean=(0.0, 0.0), std=(1.0, 1.0), seed=0):
    return scorer.init_scorer(
        jax.random.key(seed),
        jnp.asarray(mean, jnp.float32),
        jnp.asarray(std, jnp.float32),
        config=config,
        feature_config=FC,
    )


def _toy_data(n, seed, sign=1.0):
    """``x`` ``[n, 2]`` normal; ``y`` a continuous monotone function of ``x[:, 0]``."""
    x = jax.random.normal(jax.random.key(seed), (n, 2))
    y = sign * jnp.tanh(x[:, 0])
    return x, y


def _spearman(a, b):
    return float(stats.spearmanr(np.asarray(a), np.asarray(b))[0])


# ------------------------------------------------------------------- config


def test_unknown_loss_raises():
    with pytest.raises(ValueError, match=r"loss must be one of .*'hinge'"):
        scorer.ScorerConfig(loss="hinge")


def test_num_steps_must_be_a_multiple_of_eval_every():
    with pytest.raises(ValueError, match=r"num_steps \(25\) must be a multiple"):
        scorer.ScorerConfig(num_steps=25, eval_every=10)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_steps", 0),
        ("num_steps", -10),
        ("eval_every", 0),
        ("eval_every", -5),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("learning_rate", -1e-3),
    ],
)
def test_non_positive_values_raise(field, value):
    kwargs = {"num_steps": 20, "eval_every": 10, "loss": "mse", field: value}
    with pytest.raises(ValueError, match=rf"{field}.*positive"):
        scorer.ScorerConfig(**kwargs)


def test_ranking_loss_needs_two_samples_per_batch():
    with pytest.raises(ValueError, match="batch_size >= 2"):
        scorer.ScorerConfig(loss="ranking", batch_size=1)


def test_paper_preset():
    paper = scorer.PRESETS["paper"]
    assert paper.hidden_sizes == (16, 64, 1024, 1024, 64)
    assert paper.batch_norm is True
    assert paper.loss == "mse"
    assert paper.learning_rate == 0.01
    assert paper.num_steps % paper.eval_every == 0
    with pytest.raises(TypeError):
        scorer.PRESETS["mine"] = TINY  # read-only mapping


# ---------------------------------------------------------------------- MLP


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_maps_n_by_f_to_n(batch_norm, key):
    model = scorer.ScorerMLP(hidden_sizes=(4, 3), batch_norm=batch_norm)
    x = jnp.arange(10.0).reshape(5, 2)
    variables = model.init(key, x)
    assert ("batch_stats" in variables) == batch_norm
    assert model.apply(variables, x).shape == (5,)
    out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (5,)


def test_init_scorer_stores_statistics_and_replaces_zero_std():
    s = _scorer(mean=(1.0, -2.0), std=(0.0, 0.5))
    np.testing.assert_array_equal(s.variables["feature_mean"], [1.0, -2.0])
    np.testing.assert_array_equal(s.variables["feature_std"], [1.0, 0.5])
    assert s.config == TINY and s.feature_config == FC
    assert s.variables["params"]["Dense_0"]["kernel"].shape == (2, 8)


def test_init_scorer_rejects_a_width_that_does_not_match_the_feature_set():
    with pytest.raises(ValueError, match=r"3 features.*'paper' has 2"):
        _scorer(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


# --------------------------------------------------------------- prediction


@pytest.mark.parametrize("batch_norm", [False, True])
def test_predict_flat_standardises_with_the_stored_statistics(batch_norm):
    config = dataclasses.replace(TINY, batch_norm=batch_norm)
    mean, std = jnp.array([1.0, -2.0]), jnp.array([2.0, 0.5])
    s = _scorer(config, mean=mean, std=std)
    x = jax.random.normal(jax.random.key(1), (6, 2)) * 3.0
    model = scorer.ScorerMLP(hidden_sizes=(8,), batch_norm=batch_norm)
    model_vars = {k: v for k, v in s.variables.items() if not k.startswith("feature")}
    expected = model.apply(model_vars, (x - mean[None, :]) / std[None, :])
    got = scorer.predict_flat(s, x, feature_config=FC)
    assert got.shape == (6,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # Not the same as scoring the raw features (the statistics matter).
    assert not np.allclose(got, model.apply(model_vars, x), atol=1e-3)


def test_predict_flat_chunks_give_the_unchunked_result(monkeypatch):
    s = _scorer(mean=(0.5, 0.0), std=(1.0, 2.0))
    x = jax.random.normal(jax.random.key(2), (20, 2))  # 20 = 2 * 7 + 6
    whole = scorer.predict_flat(s, x, feature_config=FC)
    monkeypatch.setattr(scorer, "PREDICT_CHUNK", 7)
    chunked = scorer.predict_flat(s, x, feature_config=FC)
    assert chunked.shape == (20,)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    assert len(np.unique(np.asarray(whole))) > 1  # not a constant function


def test_predict_flat_rejects_a_wrong_width_naming_the_feature_set():
    s = _scorer()
    with pytest.raises(ValueError, match=r"feature_set='paper'.*width 3"):
        scorer.predict_flat(s, jnp.zeros((4, 3)), feature_config=FC)


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2)])
def test_predict_flat_rejects_non_2d_input(shape):
    with pytest.raises(ValueError, match=r"must be \[N, F\]"):
        scorer.predict_flat(_scorer(), jnp.zeros(shape), feature_config=FC)


LAYER_FC = features.FeatureConfig(normalization="layer")


def test_predict_flat_refuses_features_made_with_another_normalization():
    x = jnp.zeros((4, 2))  # the right width: only the config tells them apart
    message = re.escape(
        "trained on features made with FeatureConfig(feature_set='paper', "
        "gradient='mean', normalization='none'), but these were made with "
        "FeatureConfig(feature_set='paper', gradient='mean', normalization='layer')"
    )
    with pytest.raises(ValueError, match=message):
        scorer.predict_flat(_scorer(), x, feature_config=LAYER_FC)
    layer_scorer = _scorer().replace(feature_config=LAYER_FC)
    with pytest.raises(ValueError, match=r"normalization='layer'\), but these.*'none'"):
        scorer.predict_flat(layer_scorer, x, feature_config=FC)
    assert scorer.predict_flat(layer_scorer, x, feature_config=LAYER_FC).shape == (4,)


def test_predict_scores_refuses_features_made_with_another_normalization(
    tiny_params,
):
    feats = jax.tree.map(lambda p: jnp.zeros((*p.shape, 2)), tiny_params)
    with pytest.raises(ValueError, match="scorer.as_criterion"):
        scorer.predict_scores(_scorer(), feats, feature_config=LAYER_FC)


def test_predict_scores_is_parallel_to_the_params(tiny_params):
    s = _scorer(mean=(0.1, 0.2), std=(1.0, 0.5))
    keys = iter(jax.random.split(jax.random.key(3), 4))
    feats = jax.tree.map(
        lambda p: jax.random.normal(next(keys), (*p.shape, 2)), tiny_params
    )
    scores = scorer.predict_scores(s, feats, feature_config=FC)
    chex.assert_trees_all_equal_shapes_and_dtypes(
        scores, jax.tree.map(lambda p: p.astype(jnp.float32), tiny_params)
    )
    flat = scorer.predict_flat(s, features.stack_features(feats), feature_config=FC)
    assert flat.shape == (N_PRUNABLE,)
    for name in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(scores[name]["bias"], 0.0)
    np.testing.assert_allclose(
        scores["Dense_0"]["kernel"], flat[:12].reshape(4, 3), rtol=1e-6
    )
    np.testing.assert_allclose(
        scores["Dense_1"]["kernel"], flat[12:].reshape(3, 2), rtol=1e-6
    )


# ---------------------------------------------------------------- criterion


@pytest.fixture
def prune_scorer(tiny_params, tiny_batch, tiny_apply_fn):
    """An untrained scorer standardised on the tiny network's paper features."""
    x = features.stack_features(
        compute(tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    )
    config = dataclasses.replace(TINY, hidden_sizes=(16,))
    return scorer.init_scorer(
        jax.random.key(5), x.mean(0), x.std(0), config=config, feature_config=FC
    )


@functools.partial(jax.jit, static_argnames="apply_fn")
def _predicted(sc, params, batch, *, apply_fn):
    """Reference: ``predict_scores`` on the paper features of ``params``."""
    feats = features.compute_features(params, batch, apply_fn=apply_fn)
    return scorer.predict_scores(sc, feats, feature_config=FC)


def _kept(mask):
    return [int(mask[name]["kernel"].sum()) for name in ("Dense_0", "Dense_1")]


def test_as_criterion_scores_are_the_predicted_scores(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    criterion = scorer.as_criterion(prune_scorer)
    assert criterion.scorer is prune_scorer
    scores = jax.jit(criterion, static_argnames="apply_fn")(
        key,
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        mask=masks.dense_mask(tiny_params),
    )
    expected = _predicted(prune_scorer, tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    assert_trees_all_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert len(np.unique(np.asarray(features.stack_leaves(scores)))) == N_PRUNABLE


def test_as_criterion_with_a_mask_scores_the_masked_network(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    mask = masks.dense_mask(tiny_params)
    mask["Dense_0"]["kernel"] = mask["Dense_0"]["kernel"].at[0].set(False)  # input 0
    mask["Dense_1"]["kernel"] = mask["Dense_1"]["kernel"].at[:, 1].set(False)
    criterion = scorer.as_criterion(prune_scorer)
    scores = jax.jit(criterion, static_argnames="apply_fn")(
        key, tiny_params, tiny_batch, apply_fn=tiny_apply_fn, mask=mask
    )
    masked = masks.apply_mask(tiny_params, mask)
    expected = _predicted(prune_scorer, masked, tiny_batch, apply_fn=tiny_apply_fn)
    assert_trees_all_close(scores, expected, rtol=1e-5, atol=1e-6)
    # Not the dense network's scores: the surviving weights' g0 changed.
    dense = _predicted(prune_scorer, tiny_params, tiny_batch, apply_fn=tiny_apply_fn)
    alive = np.asarray(mask["Dense_1"]["kernel"])
    assert not np.allclose(
        np.asarray(scores["Dense_1"]["kernel"])[alive],
        np.asarray(dense["Dense_1"]["kernel"])[alive],
        atol=1e-4,
    )


def test_as_criterion_takes_the_prunable_predicate(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    def only_dense_0(path, leaf):
        return masks.is_prunable(path, leaf) and "Dense_0" in jax.tree_util.keystr(path)

    mask = prune(
        key,
        scorer.as_criterion(prune_scorer),
        tiny_params,
        tiny_batch,
        apply_fn=tiny_apply_fn,
        sparsity=0.5,
        prunable=only_dense_0,
    )
    assert _kept(mask) == [6, 6]  # half of Dense_0's 12; Dense_1 not prunable


def test_as_criterion_rejects_a_non_scorer(prune_scorer):
    with pytest.raises(ValueError, match="as_criterion needs a Scorer, got dict"):
        scorer.as_criterion(prune_scorer.variables)


def test_prune_at_init_with_autos_keeps_the_exact_count_of_a_global_threshold(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    criterion = scorer.as_criterion(prune_scorer)
    reference = _predicted(
        prune_scorer, tiny_params, tiny_batch, apply_fn=tiny_apply_fn
    )
    previous = None
    for s in (0.0, 0.5, 0.8, 0.9):
        mask = prune(
            key,
            criterion,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            sparsity=jnp.float32(s),
            allocation=allocation.global_topk(min_per_layer=0),
        )
        assert sum(_kept(mask)) == round((1 - s) * N_PRUNABLE)  # 18, 9, 4, 2
        assert bool(mask["Dense_0"]["bias"].all() & mask["Dense_1"]["bias"].all())
        assert_trees_all_equal(mask, masks.mask_from_scores(reference, s))
        if previous is not None:  # higher sparsity: a subset
            for name in ("Dense_0", "Dense_1"):
                assert not np.any(mask[name]["kernel"] & ~previous[name]["kernel"])
        previous = mask


def test_prune_at_init_with_autos_compiles_once_for_traced_sparsities(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    criterion = scorer.as_criterion(prune_scorer)  # one object, reused
    chex.clear_trace_counter()
    counted = jax.jit(
        chex.assert_max_traces(criteria.prune_at_init, n=1),
        static_argnames=PRUNE_STATIC,
    )
    for s in (0.5, 0.8):
        mask = counted(
            key,
            criterion,
            tiny_params,
            tiny_batch,
            apply_fn=tiny_apply_fn,
            sparsity=jnp.asarray(s, jnp.float32),
        )
        assert sum(_kept(mask)) == round((1 - s) * N_PRUNABLE)  # 9, 4
    chex.clear_trace_counter()


def test_prune_at_init_with_autos_global_and_uniform_counts(
    key, prune_scorer, tiny_params, tiny_batch, tiny_apply_fn
):
    criterion = scorer.as_criterion(prune_scorer)
    kwargs = {"apply_fn": tiny_apply_fn, "sparsity": 0.5}
    uniform = prune(
        key,
        criterion,
        tiny_params,
        tiny_batch,
        allocation=allocation.uniform(),
        **kwargs,
    )
    assert _kept(uniform) == [6, 3]  # half of 12, half of 6
    glob = prune(key, criterion, tiny_params, tiny_batch, **kwargs)
    reference = _predicted(
        prune_scorer, tiny_params, tiny_batch, apply_fn=tiny_apply_fn
    )
    assert _kept(glob) == _kept(masks.mask_from_scores(reference, 0.5))
    assert sum(_kept(glob)) == 9
    assert _kept(glob) != _kept(uniform)  # one threshold, not the same per layer


# ----------------------------------------------------------------- the loss


def test_ranking_loss_by_hand():
    config = scorer.ScorerConfig(loss="ranking", batch_size=4)
    pred = jnp.array([2.0, 0.0, 1.0, 1.0])
    y = jnp.array([1.0, 0.0, 0.0, 0.0])
    # Halves a = [2, 0], b = [1, 1]; signs [+1, 0]: only the first pair counts.
    loss = scorer._loss(config, pred, y)
    np.testing.assert_allclose(loss, math.log1p(math.exp(-1.0)), rtol=1e-6)
    # All pairs tied: no pair counts, loss 0 (not NaN).
    assert float(scorer._loss(config, pred, jnp.zeros(4))) == 0.0


def test_mse_loss_by_hand():
    config = scorer.ScorerConfig(loss="mse")
    pred = jnp.array([2.0, 0.0, 1.0, 1.0])
    y = jnp.array([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(scorer._loss(config, pred, y), 0.75, rtol=1e-6)


# ----------------------------------------------------------------- training


def test_train_scorer_selects_the_best_held_out_spearman():
    """Validation labels run against the training labels, so the best is early."""
    x, y = _toy_data(256, seed=10)
    x_val, y_val = _toy_data(128, seed=11, sign=-1.0)
    fc = features.FeatureConfig(feature_set="paper", gradient="sum")
    config = dataclasses.replace(TINY, hidden_sizes=(16,), num_steps=40)
    trained, history = scorer.train_scorer(
        jax.random.key(0),
        x,
        y,
        config=config,
        feature_config=fc,
        validation=(x_val, y_val),
        progress=False,
    )
    assert trained.feature_config == fc and trained.config == config
    assert [row["step"] for row in history] == [10, 20, 30, 40]
    for row in history:
        assert set(row) == {"step", "train_loss", "val_spearman", "val_mse", "seconds"}
        assert all(
            isinstance(v, float | int) and math.isfinite(v) for v in row.values()
        )
    rhos = [row["val_spearman"] for row in history]
    pred = scorer.predict_flat(trained, x_val, feature_config=fc)
    assert len(np.unique(np.asarray(pred))) == pred.shape[0]  # no ties
    assert _spearman(pred, y_val) == pytest.approx(max(rhos), abs=1e-5)
    val_mse = float(jnp.mean(jnp.square(pred - y_val)))
    best = int(np.argmax(rhos))
    assert history[best]["val_mse"] == pytest.approx(val_mse, rel=1e-5)
    assert best != len(rhos) - 1  # the selection is not "the last one"


def test_held_out_spearman_gives_tied_labels_their_average_rank():
    """IRP labels are survival fractions ``k / R``: many ties."""
    x, y = _toy_data(256, seed=10)
    x_val, y_cont = _toy_data(128, seed=11)
    y_val = jnp.round(y_cont * 2.0) / 2.0  # labels in {-1, -0.5, 0, 0.5, 1}
    trained, history = scorer.train_scorer(
        jax.random.key(0),
        x,
        y,
        config=TINY,
        feature_config=FC,
        validation=(x_val, y_val),
        progress=False,
    )
    pred = np.asarray(scorer.predict_flat(trained, x_val, feature_config=FC))
    best = max(row["val_spearman"] for row in history)
    assert best == pytest.approx(evaluation.spearman(pred, y_val), abs=1e-6)
    assert best == pytest.approx(_spearman(pred, y_val), abs=1e-6)  # average ranks
    ordinal = np.argsort(np.argsort(np.asarray(y_val), kind="stable"))
    assert best != pytest.approx(_spearman(pred, ordinal), abs=1e-4)


def test_train_scorer_without_validation_returns_the_last_scorer():
    x, y = _toy_data(256, seed=10)
    kwargs = {"feature_config": FC, "progress": False}
    last, history = scorer.train_scorer(jax.random.key(0), x, y, config=TINY, **kwargs)
    assert [row["step"] for row in history] == [10, 20]
    for row in history:
        assert set(row) == {"step", "train_loss", "seconds"}
    # The same 20 steps in one chunk (minibatches depend on the step, not chunk).
    one_chunk = dataclasses.replace(TINY, eval_every=20)
    same, _ = scorer.train_scorer(jax.random.key(0), x, y, config=one_chunk, **kwargs)
    assert_trees_all_close(last.variables, same.variables, rtol=1e-5, atol=1e-6)
    # And not the scorer after the first chunk.
    first, _ = scorer.train_scorer(
        jax.random.key(0),
        x,
        y,
        config=dataclasses.replace(TINY, num_steps=10),
        **kwargs,
    )
    assert not np.allclose(
        last.variables["params"]["Dense_0"]["kernel"],
        first.variables["params"]["Dense_0"]["kernel"],
    )


def test_train_scorer_traces_the_training_chunk_once(monkeypatch):
    traces = []
    original = scorer._train_chunk_fn

    def counting_chunk_fn(config, optimizer):
        run = original(config, optimizer)

        def counted(*args):
            traces.append(1)
            return run(*args)

        return counted

    monkeypatch.setattr(scorer, "_train_chunk_fn", counting_chunk_fn)
    x, y = _toy_data(128, seed=10)
    x_val, y_val = _toy_data(64, seed=11)
    config = dataclasses.replace(TINY, num_steps=30)
    _, history = scorer.train_scorer(
        jax.random.key(0),
        x,
        y,
        config=config,
        feature_config=FC,
        validation=(x_val, y_val),
        progress=False,
    )
    assert len(history) == 3
    assert len(traces) == 1


def test_ranking_loss_learns_a_monotone_target():
    """Learnability on a synthetic toy (y = tanh(x_0)), not an accuracy claim."""
    x, y = _toy_data(512, seed=20)
    x_val, y_val = _toy_data(256, seed=21)
    config = scorer.ScorerConfig(
        hidden_sizes=(16,),
        loss="ranking",
        learning_rate=1e-2,
        num_steps=100,
        eval_every=50,
        batch_size=128,
    )
    _, history = scorer.train_scorer(
        jax.random.key(0),
        x,
        y,
        config=config,
        feature_config=FC,
        validation=(x_val, y_val),
        progress=False,
    )
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_spearman"] > 0.9


def test_batch_norm_scorer_trains_and_updates_batch_stats():
    x, y = _toy_data(256, seed=10)
    config = dataclasses.replace(TINY, hidden_sizes=(8, 4), batch_norm=True)
    trained, history = scorer.train_scorer(
        jax.random.key(0), x, y, config=config, feature_config=FC, progress=False
    )
    stats_ = trained.variables["batch_stats"]
    assert set(stats_) == {"BatchNorm_0", "BatchNorm_1"}
    # Flax initialises the running mean to 0 and the variance to 1.
    assert not np.allclose(stats_["BatchNorm_0"]["mean"], 0.0)
    assert not np.allclose(stats_["BatchNorm_0"]["var"], 1.0)
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert np.all(np.isfinite(scorer.predict_flat(trained, x, feature_config=FC)))


def test_train_scorer_rejects_mismatched_shapes():
    x, y = _toy_data(16, seed=0)
    with pytest.raises(ValueError, match=r"need x \[N, F\] and y \[N\]"):
        scorer.train_scorer(jax.random.key(0), x, y[:8], config=TINY, feature_config=FC)
    with pytest.raises(ValueError, match="feature_set='paper'"):
        scorer.train_scorer(
            jax.random.key(0),
            x,
            y,
            config=TINY,
            feature_config=FC,
            validation=(jnp.zeros((4, 3)), jnp.zeros(4)),
            progress=False,
        )


def test_train_scorer_rejects_constant_validation_targets():
    x, y = _toy_data(16, seed=0)
    with pytest.raises(ValueError, match="not all equal"):
        scorer.train_scorer(
            jax.random.key(0),
            x,
            y,
            config=TINY,
            feature_config=FC,
            validation=(x[:8], jnp.full((8,), 0.5)),
            progress=False,
        )


# --------------------------------------------------------------- save, load


def test_save_load_round_trip(tmp_path):
    config = dataclasses.replace(TINY, hidden_sizes=(8, 4), batch_norm=True)
    fc = features.FeatureConfig(feature_set="extended", normalization="layer")
    original = scorer.init_scorer(
        jax.random.key(0),
        jnp.arange(8.0),
        jnp.ones(8) * 2.0,
        config=config,
        feature_config=fc,
    )
    path = tmp_path / "scorer"
    scorer.save_scorer(path, original, metadata={"source_model": "tiny"})
    loaded = scorer.load_scorer(path)
    assert_trees_all_equal(loaded.variables, original.variables)
    assert loaded.config == config
    assert loaded.config.hidden_sizes == (8, 4)
    assert loaded.feature_config == fc
    meta = checkpoint.load_metadata(path)
    assert meta["source_model"] == "tiny"
    assert meta["kind"] == "autos_scorer"
    x = jax.random.normal(jax.random.key(1), (5, 8))
    np.testing.assert_array_equal(
        scorer.predict_flat(loaded, x, feature_config=fc),
        scorer.predict_flat(original, x, feature_config=fc),
    )


def test_load_scorer_rejects_another_kind_of_checkpoint(tmp_path):
    path = tmp_path / "irp_round"
    checkpoint.save(path, {"w": jnp.ones(3)}, metadata={"kind": "irp_round"})
    with pytest.raises(ValueError, match=r"not a saved scorer \(kind='irp_round'\)"):
        scorer.load_scorer(path)


def test_save_scorer_never_overwrites(tmp_path):
    path = tmp_path / "scorer"
    scorer.save_scorer(path, _scorer())
    with pytest.raises(FileExistsError):
        scorer.save_scorer(path, _scorer(seed=1))
    assert_trees_all_equal(scorer.load_scorer(path).variables, _scorer().variables)
