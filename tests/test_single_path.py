"""The single pruning path reproduces every mask of the API it replaced.

``tests/data/legacy_masks.json`` holds, per case, the SHA-256 of the packed
prunable bits and the per-layer kept counts of the masks the earlier API
made (``criteria.prune_at_init`` with ``scope``, ``allocation.allocate`` with
string allocations, ``scorer.autosparse_prune``) on LeNet-300-100 (init key
0) and a generated batch, recorded by ``tests/data/make_legacy_masks.py`` at
commit 1d7f07c (the script needs the old API, so it was removed with it).
Each is rebuilt here with ``criteria.prune_at_init(..., allocation=...)``;
all are bitwise identical
except 100-round SynFlow with the old layerwise scope (see the test).

The cases of one criterion score the same dense network with the same key, so
its scores are computed by the criterion once per module and shared
(``_memoized``; the criteria are deterministic for a key,
``test_criteria_conformance``); the allocation and the mask are built per case.
"""

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import allocation as al
from autosparse_jax import criteria, features, masks, models, scorer

LEGACY = json.loads(
    (pathlib.Path(__file__).parent / "data" / "legacy_masks.json").read_text()
)
SPARSITIES = (0.9, 0.99, 0.995)
MODEL = al.AllocationModel(
    weights=(0.3, -0.2, 0.0, 0.5, -0.4, 0.2, 0.1),
    slopes=(0.05, 0.1, 0.0, -0.1, 0.2, 0.0, -0.05),
    feature_mean=(5.0, 4.0, 0.0, 0.3, 0.5, 0.3, 0.3),
    feature_std=(1.0, 1.0, 1.0, 0.3, 0.4, 0.5, 0.5),
)
# Old string allocations -> the allocation functions that replace them.
ALLOCATIONS = {
    "global": al.global_topk(),
    "erk": al.erk(),
    "uniform": al.uniform(),
    "scores": al.like(criteria.snip),
    "snip": al.like(criteria.snip),
    "learned": al.learned(MODEL),
}


@pytest.fixture(scope="module")
def lenet():
    model = models.get_model("lenet300_100")
    params, state = models.init_params(jax.random.key(0), model, (28, 28, 1))
    k1, k2 = jax.random.split(jax.random.key(1))
    batch = {
        "image": jax.random.normal(k1, (2, 32, 28, 28, 1)),
        "label": jax.random.randint(k2, (2, 32), 0, 10),
    }
    return params, models.make_apply_fn(model, state), batch


def _record(mask):
    leaves = [
        np.asarray(m) for _, m in masks._prunable_mask_leaves(mask, masks.is_prunable)
    ]
    bits = np.packbits(np.concatenate([m.ravel() for m in leaves]))
    return {
        "sha256": hashlib.sha256(bits.tobytes()).hexdigest(),
        "kept": [int(m.sum()) for m in leaves],
    }


def _scorer(normalization):
    return scorer.init_scorer(
        jax.random.key(3),
        jnp.array([0.0, 0.0]),
        jnp.array([0.05, 0.01]),
        config=scorer.ScorerConfig(hidden_sizes=(8, 8)),
        feature_config=features.FeatureConfig(normalization=normalization),
    )


def _fixed_key(criterion, key):
    """``criterion`` scored with ``key`` whatever key it is given."""

    def scored(_, params, batch, *, apply_fn, mask):
        return criterion(key, params, batch, apply_fn=apply_fn, mask=mask)

    return scored


@pytest.fixture(scope="module")
def scores_cache():
    return {}


def _memoized(criterion, cache, name):
    """``criterion``, computing the scores of a dense network once per ``name``
    and key; a traced call (a round of several) or a pruned mask is scored anew.

    Takes and passes on ``prunable`` as ``compute_scores`` would.
    """

    def scored(key, params, batch, *, apply_fn, mask, prunable=masks.is_prunable):
        kwargs = al.criterion_kwargs(criterion, prunable)
        leaves = [key, *jax.tree.leaves(mask)]
        if not all(masks._is_concrete(x) for x in leaves) or not all(
            bool(np.all(m)) for m in leaves[1:]
        ):
            return criterion(key, params, batch, apply_fn=apply_fn, mask=mask, **kwargs)
        entry = (name, np.asarray(jax.random.key_data(key)).tobytes(), prunable)
        if entry not in cache:
            cache[entry] = criterion(
                key, params, batch, apply_fn=apply_fn, mask=mask, **kwargs
            )
        return cache[entry]

    return scored


def _cases():
    for s in SPARSITIES:
        for name in criteria.CRITERIA:
            yield f"prune_at_init/{name}/global/{s}"
            yield f"prune_at_init/{name}/layerwise/{s}"
            for a in ("global", "learned", "erk", "uniform", "scores"):
                yield f"allocate/{name}/{a}/{s}"
        for n in ("none", "layer"):
            yield f"autosparse_prune/{n}/None/global/{s}"
            yield f"autosparse_prune/{n}/None/layerwise/{s}"
            for a in ("global", "learned", "erk", "uniform", "snip"):
                yield f"autosparse_prune/{n}/{a}/-/{s}"


def test_every_legacy_case_is_recorded():
    assert sorted(_cases()) == sorted(LEGACY)


def _marked(case):
    """``case``, marked ``extended`` unless it is at 99 % sparsity: every
    criterion x path x allocation runs at 99 % in ``make test``; 90 and 99.5 %
    run the same code with another sparsity (``make test-extended``)."""
    if case.endswith("/0.99"):
        return case
    return pytest.param(case, marks=pytest.mark.extended)


@pytest.mark.parametrize("case", [_marked(c) for c in sorted(_cases())])
def test_new_path_reproduces_the_legacy_mask(case, lenet, scores_cache):
    params, apply_fn, batch = lenet
    key = jax.random.key(2)
    path, *parts, s = case.split("/")
    s = float(s)
    rounds = 1
    if path == "prune_at_init":
        name, scope = parts
        crit = criteria.CRITERIA[name]
        rounds = criteria.DEFAULT_ROUNDS.get(name, 1)
        # The old path gave round r the key fold_in(key, r), one round too.
        key = jax.random.fold_in(key, 0) if rounds == 1 else key
        alloc = al.global_topk(min_per_layer=0) if scope == "global" else al.uniform()
        scored_by = f"{path}/{name}"
    elif path == "allocate":
        name, a = parts
        crit = _fixed_key(criteria.CRITERIA[name], key)  # scored with key itself
        alloc = ALLOCATIONS[a]
        scored_by = f"{path}/{name}"
    else:
        normalization, a, scope = parts
        crit = scorer.as_criterion(_scorer(normalization))
        scored_by = f"{path}/{normalization}"
        if a == "None":
            alloc = (
                al.global_topk(min_per_layer=0) if scope == "global" else al.uniform()
            )
        else:
            alloc = ALLOCATIONS[a]
    crit = _memoized(crit, scores_cache, scored_by)
    mask = criteria.prune_at_init(
        key, crit, params, batch, apply_fn=apply_fn, sparsity=s,
        allocation=alloc, num_rounds=rounds,
    )  # fmt: skip
    if case.startswith("prune_at_init/synflow/layerwise"):
        # The old scope="layerwise" rounded each layer on its own, so its total
        # in the 99 intermediate rounds could miss round((1 - s_r) N) by a
        # weight or two; uniform() keeps the exact total every round. The
        # final per-layer counts agree; which weights survive 100 rounds does
        # not (no committed study used this pair).
        assert _record(mask)["kept"] == LEGACY[case]["kept"]
        return
    assert _record(mask) == LEGACY[case]
