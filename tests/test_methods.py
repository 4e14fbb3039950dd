"""Tests of the grid studies' methods: names, masks, sanity checks."""

import types

import jax
import numpy as np
import pytest
from conftest import tiny_target

from autosparse_jax import allocation, criteria, masks
from experiments import methods

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def target():
    t, model = tiny_target(SHAPE)
    study = types.SimpleNamespace(
        recipe=types.SimpleNamespace(model=model, input_shape=SHAPE)
    )
    return t, study


def _kept(mask) -> list[int]:
    return [int(m.sum()) for m in jax.tree.leaves(mask) if m.ndim > 1]


def test_resolve_knows_plain_combined_and_checked_names():
    assert methods.resolve("snip") is methods.METHODS["snip"]
    for name in ("erk+magnitude", "learned+autos", "synflow_shuffled", "irp_reinit"):
        assert callable(methods.resolve(name))
    for bad, match in (
        ("snipp", "Unknown method 'snipp'"),
        ("erk+snipp", "Unknown ranking 'snipp'"),
        ("ekr+snip", "Unknown allocation 'ekr'"),
    ):
        with pytest.raises(ValueError, match=match):
            methods.resolve(bad)


def test_which_methods_need_the_learners():
    needs = [m for m in ("snip", "irp", "autos_global", "learned+random",
                         "irp+snip", "erk+autos", "erk+snip", "irp_shuffled")
             if methods.needs_learners(m)]  # fmt: skip
    assert needs == ["autos_global", "learned+random", "irp+snip", "erk+autos"]


def test_baseline_is_the_plain_global_threshold_of_its_criterion(target):
    t, study = target
    mask, params = methods.resolve("magnitude")(t, 0.9, study)
    assert params is t.params
    expected = criteria.prune_at_init(
        jax.random.fold_in(t.prune_key, 0), criteria.magnitude, t.params, t.batches,
        apply_fn=t.apply_fn, sparsity=0.9,
        allocation=allocation.global_topk(min_per_layer=0),
    )  # fmt: skip
    assert jax.tree.all(jax.tree.map(np.array_equal, mask, expected))
    assert float(masks.sparsity(mask)) == pytest.approx(0.9, abs=1e-3)


def test_allocated_method_keeps_the_allocations_counts(target):
    t, study = target
    erk_snip, _ = methods.resolve("erk+snip")(t, 0.98, study)
    erk_random, _ = methods.resolve("erk+random")(t, 0.98, study)
    assert _kept(erk_snip) == _kept(erk_random)
    assert not jax.tree.all(jax.tree.map(np.array_equal, erk_snip, erk_random))


def test_sanity_checks_keep_the_layer_counts_and_change_what_they_promise(target):
    t, study = target
    mask, _ = methods.resolve("snip")(t, 0.95, study)
    shuffled, params = methods.resolve("snip_shuffled")(t, 0.95, study)
    assert _kept(shuffled) == _kept(mask) and params is t.params
    assert not jax.tree.all(jax.tree.map(np.array_equal, mask, shuffled))
    same, reinit = methods.resolve("snip_reinit")(t, 0.95, study)
    assert jax.tree.all(jax.tree.map(np.array_equal, same, mask))
    kernel = reinit["Dense_0"]["kernel"]
    assert kernel.shape == t.params["Dense_0"]["kernel"].shape
    assert not np.array_equal(kernel, t.params["Dense_0"]["kernel"])
