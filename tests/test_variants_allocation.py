"""Tests of experiments.variants_allocation (leave-one-target-out learners)."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_target

from autosparse_jax import allocation as al
from autosparse_jax import criteria, layers, masks
from experiments import methods
from experiments import variants_allocation as va

SHAPE = (8, 8, 1)
SOURCES = (("a/labels", "a.py"), ("b/labels", "b.py"), ("c/labels", "c.py"))
TARGETS = {  # labels directory -> (model, dataset) of its run
    "a/labels": ("lenet300_100", "fashion_mnist"),
    "b/labels": ("mlp300_200_100_50", "fashion_mnist"),
    "c/labels": ("lenet300_100", "mnist1d"),
}


@pytest.fixture(scope="module")
def target():
    return tiny_target(SHAPE)[0]


@pytest.fixture
def fake_labels(monkeypatch):
    """``irp.load_labels`` of the three fake source directories (metadata)."""

    def load(path):
        model, dataset = TARGETS[path]
        return types.SimpleNamespace(metadata={"model": model, "dataset": dataset})

    monkeypatch.setattr(va.irp, "load_labels", load)


def _config(model, dataset):
    return types.SimpleNamespace(model=model, dataset=dataset, loto_sources=SOURCES)


def _kept(mask):
    leaves = masks._prunable_mask_leaves(mask, masks.is_prunable)
    return [int(np.sum(np.asarray(m))) for _, m in leaves]


def test_lean_features_drop_depth_and_is_first():
    contexts = [
        layers.LeafContext(0, 3, 40, 300, 12000),
        layers.LeafContext(1, 3, 300, 100, 30000),
        layers.LeafContext(2, 3, 100, 10, 1000),
    ]
    n = 43000
    expected = [
        [math.log(40 / 300), 0.0, 0.0, 12000 / n, 0.0],
        [0.0, math.log(100 / 300), 0.0, 30000 / n, 0.0],
        [math.log(100 / 300), math.log(10 / 300), 0.0, 1000 / n, 1.0],
    ]
    np.testing.assert_allclose(va.lean_features(contexts), expected, atol=1e-15)


def test_loto_sources_leave_the_targets_own_run_out(fake_labels):
    del fake_labels
    assert va.loto_sources(_config("lenet300_100", "fashion_mnist")) == list(
        SOURCES[1:]
    )
    assert va.loto_sources(_config("lenet300_100", "mnist1d")) == list(SOURCES[:2])
    assert (
        va.scorer_source(_config("mlp300_200_100_50", "fashion_mnist")) == (SOURCES[0])
    )
    only_own = types.SimpleNamespace(
        model="lenet300_100", dataset="mnist1d", loto_sources=SOURCES[2:]
    )
    with pytest.raises(ValueError, match="the study's own target"):
        va.loto_sources(only_own)


def test_fit_loto_allocation_pools_exactly_the_other_sources(fake_labels, monkeypatch):
    del fake_labels
    rng = np.random.default_rng(0)
    made = {
        d: al.AllocationSource(
            rng.normal(size=(3, 5)), rng.uniform(0.01, 0.9, (4, 3)), [30, 20, 10]
        )
        for d, _ in SOURCES
    }
    monkeypatch.setattr(va, "allocation_source", lambda d, fn: made[d])
    model = va.fit_loto_allocation(_config("lenet300_100", "mnist1d"), None)
    expected = al.fit_allocation_sources([made["a/labels"], made["b/labels"]])
    assert model.weights == expected.weights and model.slopes == expected.slopes
    assert dict(model.metadata) == {"sources": ("a/labels", "b/labels")}


def test_allocation_source_of_the_committed_lenet_run():
    source = va.allocation_source(
        "experiments/results/irp_fmnist_lenet300/labels", va.lean_features
    )
    assert source.phi.shape == (3, len(va.LEAN_COLUMNS))
    np.testing.assert_allclose(source.phi[:, 0], np.log([1.0, 300 / 784, 100 / 784]))
    np.testing.assert_array_equal(source.sizes, [235200, 30000, 1000])
    assert source.densities.shape == (20, 3)
    # After the last round (99 %) the layers keep 0.49 / 3.7 / 38.5 %.
    np.testing.assert_allclose(source.densities[-1], [0.00495, 0.0371, 0.385], 2e-3)


def _study(**cache):
    return types.SimpleNamespace(**cache)


def test_autos_loto_ranks_with_the_scorer_under_the_loto_allocation(target):
    t = target
    study = _study(
        _loto_autos=[types.SimpleNamespace(criterion=criteria.magnitude)],
        _loto_allocations={"full": al.uniform(), "lean": al.erk()},
    )
    for name, alloc in (("autos_loto", al.uniform()), ("autos_loto_lean", al.erk())):
        mask, params = methods.resolve(name)(t, 0.9, study)
        expected = criteria.prune_at_init(
            t.prune_key, criteria.magnitude, t.params, t.batches,
            apply_fn=t.apply_fn, sparsity=0.9, allocation=alloc,
        )  # fmt: skip
        assert params is t.params
        assert jax.tree.all(jax.tree.map(np.array_equal, mask, expected))


def test_synflow_autos_keeps_synflows_layer_counts_and_ranks_inside(target):
    t = target
    study = _study(_loto_autos=[types.SimpleNamespace(criterion=criteria.magnitude)])
    for sparsity in (0.9, 0.98):
        synflow, _ = methods.resolve("synflow")(t, sparsity, None)
        mask, _ = methods.resolve("synflow+autos")(t, sparsity, study)
        assert _kept(mask) == _kept(synflow)
        counts = jnp.asarray(_kept(synflow))
        expected = al.mask_from_counts(jax.tree.map(jnp.abs, t.params), counts)
        assert jax.tree.all(jax.tree.map(np.array_equal, mask, expected))


def test_fixed_counts_returns_its_counts_whatever_it_is_asked():
    alloc = va.FixedCounts((3, 1))
    np.testing.assert_array_equal(alloc(None, 0.5, None), [3, 1])
    assert alloc == va.FixedCounts((3, 1)) and hash(alloc) == hash(
        va.FixedCounts((3, 1))
    )
