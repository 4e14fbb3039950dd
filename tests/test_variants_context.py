"""Smoke tests of experiments.variants_context (AutoS on context features).

A tiny target and an untrained scorer stand in for the source IRP run: the
tests check the plumbing (features, cached scorer, allocation, paths), not
what the scorer learns.
"""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_target

from autosparse_jax import features, masks
from autosparse_jax import scorer as scorer_lib
from experiments import common, methods, variants, variants_context

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def target():
    return tiny_target(SHAPE)[0]


def _scorer(t, feature_config, ahead=None):
    """An untrained scorer standardised on the target's own features."""
    feats = features.compute_features(
        t.params, t.batches, apply_fn=t.apply_fn, ahead_params=ahead,
        **dataclasses.asdict(feature_config),
    )  # fmt: skip
    x = features.stack_features(feats)
    return scorer_lib.init_scorer(
        jax.random.key(0), x.mean(0), x.std(0),
        config=scorer_lib.PRESETS["default"], feature_config=feature_config,
    )  # fmt: skip


def _study(t, tmp_path):
    scorer = _scorer(t, variants_context.CONTEXT)
    scorer_lib.save_scorer(str(tmp_path / "context_scorer"), scorer)
    allocation = common.SCOPES["layerwise"]
    return types.SimpleNamespace(
        workdir=str(tmp_path),
        learners=lambda: types.SimpleNamespace(
            autos=types.SimpleNamespace(allocation=allocation)
        ),
    )


def _same(a, b) -> bool:
    return bool(jax.tree.all(jax.tree.map(np.array_equal, a, b)))


def test_autos_context_paths_deals_the_saved_scorers_ranking_onto_paths(
    target, tmp_path
):
    study = _study(target, tmp_path)  # the scorer is loaded, never fitted here
    scores = variants_context.context_scores(target, study, variants_context.CONTEXT)
    assert jax.tree.structure(scores) == jax.tree.structure(target.params)
    mask, params = variants_context.autos_context_paths(target, 0.98, study)
    assert params is target.params
    assert _same(mask, variants.on_paths(target, scores, 0.98))
    assert float(masks.sparsity(mask)) == pytest.approx(0.98, abs=2e-3)
    synflow, _ = methods.resolve("synflow")(target, 0.98, None)
    assert not _same(mask, synflow)


def test_autos_context_uses_the_learned_allocation(target, tmp_path):
    study = _study(target, tmp_path)
    mask, _ = variants_context.autos_context(target, 0.9, study)
    for layer in ("Dense_0", "head"):
        kept = float(jnp.mean(mask[layer]["kernel"]))
        assert kept == pytest.approx(0.1, abs=0.02)  # layerwise stand-in


def test_context_lookahead_paths_reads_the_look_ahead_weights(target, tmp_path):
    ahead = jax.tree.map(lambda w: w[::-1], target.params)
    scorer = _scorer(target, variants_context.CONTEXT_LOOKAHEAD, ahead)
    view = types.SimpleNamespace(
        _ahead={target.seed: ahead},
        _context_scorers={"context_lookahead_scorer": scorer},
        workdir=str(tmp_path),
    )
    study = types.SimpleNamespace(_lookahead_views={"lookahead30": view})
    method = methods.resolve("autos_context_lookahead30_paths")
    mask, _ = method(target, 0.98, study)
    assert float(masks.sparsity(mask)) == pytest.approx(0.98, abs=2e-3)


def test_every_context_variant_is_a_method_that_needs_the_learners():
    for name, fn in variants_context.VARIANTS.items():
        assert methods.resolve(name) is fn
        assert methods.needs_learners(name)
