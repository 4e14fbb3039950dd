"""Tests of the AutoS variants of experiments.variants (look-ahead, paths)."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import assert_trees_all_equal, tiny_target

from autosparse_jax import lookahead, masks, train
from experiments import methods, variants

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def target():
    t, model = tiny_target(SHAPE)
    return t, model


def _same(a, b) -> bool:
    return bool(jax.tree.all(jax.tree.map(np.array_equal, a, b)))


def test_ahead_epochs_is_a_fraction_of_the_recipe_and_at_least_one():
    config = types.SimpleNamespace(lookahead_fraction=0.1)
    assert [variants.ahead_epochs(config, n) for n in (1, 10, 24, 100)] == [
        1,
        1,
        2,
        10,
    ]


def test_on_paths_ranked_by_magnitude_is_synflow(target):
    t, _ = target
    for sparsity in (0.9, 0.98):
        expected, _ = methods.resolve("synflow")(t, sparsity, None)
        mask = variants.on_paths(t, jax.tree.map(jnp.abs, t.params), sparsity)
        assert _same(mask, expected)


def test_synflow_ahead_ranks_by_the_look_ahead_weights(target):
    t, _ = target
    # Without training ahead, the look-ahead ranking is SynFlow's own.
    study = types.SimpleNamespace(_ahead={t.seed: t.params})
    mask, params = variants.synflow_ahead(t, 0.98, study)
    assert params is t.params
    assert _same(mask, methods.resolve("synflow")(t, 0.98, None)[0])
    # Other look-ahead weights change which weights are kept, not how many.
    moved = jax.tree.map(lambda w: w[::-1], t.params)
    study = types.SimpleNamespace(_ahead={t.seed: moved})
    other, _ = variants.synflow_ahead(t, 0.98, study)
    assert not _same(other, mask)
    assert float(masks.sparsity(other)) == pytest.approx(0.98, abs=2e-3)


def test_target_ahead_trains_the_recipe_ahead_once_per_seed(target):
    t, model = target
    optimizer = optax.sgd(0.05, momentum=0.9)
    images = t.batches["image"].reshape(-1, *SHAPE)
    labels = t.batches["label"].reshape(-1)
    study = types.SimpleNamespace(
        recipe=types.SimpleNamespace(
            train_epoch=train.make_train_epoch(model, optimizer, batch_size=16),
            optimizer=optimizer,
            num_epochs=20,
        ),
        datasets=({"image": images, "label": labels},),
        config=types.SimpleNamespace(lookahead_fraction=0.1),
    )
    ahead = variants.target_ahead(t, study)
    expected = lookahead.train_ahead(
        jax.random.fold_in(t.prune_key, 1), t.params, study.datasets[0],
        train_epoch=study.recipe.train_epoch, optimizer=optimizer, num_epochs=2,
    )  # fmt: skip
    assert_trees_all_equal(ahead, expected)
    assert variants.target_ahead(t, study) is ahead  # cached, not retrained
    assert not _same(ahead, t.params)


def test_fixed_scores_is_a_criterion_returning_its_scores(tiny_params):
    scores = jax.tree.map(jnp.abs, tiny_params)
    criterion = variants.FixedScores(scores)
    out = criterion(
        jax.random.key(0), tiny_params, None, apply_fn=None,
        mask=masks.dense_mask(tiny_params),
    )  # fmt: skip
    assert out is scores


def test_every_variant_is_a_method_named_for_the_run_logs():
    for name, fn in variants.VARIANTS.items():
        assert methods.resolve(name) is fn
        assert callable(methods.resolve(f"{name}_shuffled"))
    learned = [n for n in variants.VARIANTS if methods.needs_learners(n)]
    assert learned == [
        "autos_paths", "autos_lookahead", "autos_lookahead_paths",
        "autos_lookahead30_paths",
    ]  # fmt: skip


def test_with_lookahead_shows_the_method_a_longer_look_ahead(tmp_path):
    config = ml_collections.ConfigDict({"lookahead_fraction": 0.1, "seed": 0})
    study = types.SimpleNamespace(
        config=config, recipe="recipe", datasets="data", workdir=str(tmp_path),
        learners=lambda: "learners",
    )  # fmt: skip
    seen = []
    method = variants.with_lookahead(0.3, lambda t, s, view: seen.append(view) or s)
    assert method(None, 0.99, study) == 0.99
    method(None, 0.98, study)
    view = seen[0]
    assert seen[1] is view  # one view per study: its caches persist
    assert view.config.lookahead_fraction == 0.3
    assert config.lookahead_fraction == 0.1  # the study's own config unchanged
    assert (view.recipe, view.datasets, view.learners()) == (
        "recipe", "data", "learners",
    )  # fmt: skip
    assert view.workdir == str(tmp_path / "lookahead30")
    assert (tmp_path / "lookahead30").is_dir()
