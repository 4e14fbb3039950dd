"""Smoke tests of experiments.variants_metagrad (ProsPr, paper-setting AutoS)."""

import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import TinyMLP, assert_trees_all_close

from autosparse_jax import features, masks, metagrad, models
from autosparse_jax import scorer as scorer_lib
from experiments import common, methods, variants, variants_metagrad

SHAPE = (28, 28, 1)  # Fashion-MNIST images: the study preprocesses them as such
LR = 0.05


@pytest.fixture(scope="module")
def target():
    model = TinyMLP(num_classes=10, hidden=64)
    params, state = models.init_params(jax.random.key(3), model, SHAPE)
    batch = {
        "image": jax.random.normal(jax.random.key(1), (4, 16, *SHAPE)),
        "label": jax.random.randint(jax.random.key(2), (4, 16), 0, 10),
    }
    return common.Target(
        seed=3, params=params, model_state=state,
        apply_fn=models.make_apply_fn(model, state), batches=batch,
        prune_key=jax.random.key(4), data_key=jax.random.key(5), phi=None,
    )  # fmt: skip


def _study(tmp_path, **caches):
    rng = np.random.default_rng(0)
    config = ml_collections.ConfigDict(
        {"train": {"learning_rate": LR, "batch_size": 16}, "dataset": "fashion_mnist"}
    )
    study = types.SimpleNamespace(
        config=config, workdir=str(tmp_path),
        host_train={
            "image": rng.integers(0, 256, (70, *SHAPE), dtype=np.uint8),
            "label": rng.integers(0, 10, 70).astype(np.int32),
        },
    )  # fmt: skip
    study.__dict__.update(caches)
    return study


def _prunable_kept_and_removed(scores, mask):
    items = zip(jax.tree.leaves(scores), jax.tree.leaves(mask), strict=True)
    pairs = [(np.asarray(s), np.asarray(m)) for s, m in items if s.ndim >= 2]
    kept = np.concatenate([s[m] for s, m in pairs])
    removed = np.concatenate([s[~m] for s, m in pairs])
    return kept, removed


def _untrained(feature_config):
    width = features.num_features(feature_config.feature_set)
    return scorer_lib.as_criterion(
        scorer_lib.init_scorer(
            jax.random.key(0),
            jnp.zeros(width),
            jnp.ones(width),
            config=scorer_lib.PRESETS["default"],
            feature_config=feature_config,
        )  # fmt: skip
    )


def test_every_method_is_registered_for_the_run_logs():
    for name, fn in variants_metagrad.VARIANTS.items():
        assert methods.resolve(name) is fn
        assert callable(methods.resolve(f"{name}_shuffled"))
    assert [n for n in variants_metagrad.VARIANTS if n.startswith("autos_")] == [
        "autos_metagrad_paths", "autos_gsum", "autos_paperpreset",
    ]  # fmt: skip


def test_prospr_keeps_the_largest_meta_gradients_globally(target, tmp_path):
    mask, params = variants_metagrad.prospr(target, 0.9, _study(tmp_path))
    assert params is target.params
    assert float(masks.sparsity(mask)) == pytest.approx(0.9, abs=1e-3)
    dm = metagrad.metagradient(
        target.params, target.batches, apply_fn=target.apply_fn,
        mask=masks.dense_mask(target.params), num_steps=3, learning_rate=LR,
    )  # fmt: skip
    kept, removed = _prunable_kept_and_removed(jax.tree.map(jnp.abs, dm), mask)
    assert kept.min() >= removed.max() * (1 - 1e-5)


def test_target_metagradient_is_computed_once_per_seed(target, tmp_path):
    study = _study(tmp_path)
    dm = variants_metagrad.target_metagradient(target, study)
    expected = metagrad.metagradient(
        target.params, target.batches, apply_fn=target.apply_fn,
        mask=masks.dense_mask(target.params), num_steps=3, learning_rate=LR,
    )  # fmt: skip
    assert_trees_all_close(dm, expected, rtol=1e-5, atol=1e-9)
    assert variants_metagrad.target_metagradient(target, study) is dm


def test_prospr_paths_ranks_synflow_paths_by_the_meta_gradient(target, tmp_path):
    # With |w0| as the "meta-gradient" the path variant is SynFlow itself.
    study = _study(tmp_path, _metagrad={target.seed: target.params})
    mask, _ = variants_metagrad.prospr_paths(target, 0.95, study)
    expected = variants.on_paths(target, jax.tree.map(jnp.abs, target.params), 0.95)
    assert jax.tree.all(jax.tree.map(np.array_equal, mask, expected))


def test_epoch_batches_are_one_pass_of_the_training_set(tmp_path):
    host = _study(tmp_path).host_train
    batches = variants_metagrad.epoch_batches(
        jax.random.key(0), host, "fashion_mnist", 16
    )
    assert batches["image"].shape == (4, 16, *SHAPE)
    assert batches["image"].dtype == jnp.float32


def test_scorer_variants_prune_at_the_sparsity_without_empty_layers(target, tmp_path):
    study = _study(
        tmp_path,
        _variant_scorers={
            "metagrad": _untrained(variants_metagrad.METAGRAD_FEATURES),
            "gsum": _untrained(variants_metagrad.GSUM_FEATURES),
            "paperpreset": _untrained(variants_metagrad.PAPER_FEATURES),
        },
    )
    for name in ("autos_metagrad_paths", "autos_gsum", "autos_paperpreset"):
        mask, params = variants_metagrad.VARIANTS[name](target, 0.95, study)
        assert params is target.params
        assert float(masks.sparsity(mask)) == pytest.approx(0.95, abs=2e-3), name
        kernels = [m for m in jax.tree.leaves(mask) if m.ndim >= 2]
        assert all(int(m.sum()) > 0 for m in kernels), name
    assert study._epoch_batches[target.seed]["label"].shape == (4, 16)


def test_variant_scorer_is_fitted_once_then_loaded(tmp_path, monkeypatch):
    calls = []

    def fake_fit(config):
        calls.append(config)
        scorer = _untrained(variants_metagrad.GSUM_FEATURES).scorer
        return scorer, [{"val_spearman": 0.25}, {"val_spearman": 0.5}]

    monkeypatch.setitem(variants_metagrad.FITS, "gsum", fake_fit)
    study = _study(tmp_path)
    study.config.source = "labels"
    study.config.variant_scorers = str(tmp_path / "shared")
    first = variants_metagrad.variant_scorer(study, "gsum")
    assert variants_metagrad.variant_scorer(study, "gsum") is first
    again = variants_metagrad.variant_scorer(
        _study(tmp_path, config=study.config), "gsum"
    )
    assert len(calls) == 1
    assert again.scorer.feature_config == variants_metagrad.GSUM_FEATURES
    with open(tmp_path / "shared" / "gsum_scorer.json") as f:
        assert json.load(f)["held_out_spearman"] == 0.5
