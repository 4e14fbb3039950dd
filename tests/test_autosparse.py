"""Tests for autosparse_jax.autosparse: fit, prune, evaluate, save and load.

One tiny labelled IRP run is built by hand: ``TinyMLP`` (kernels ``(4, 8)``
and ``(8, 3)``: 32 + 24 = 56 prunable weights) at initialisation, with two
nested magnitude masks (sparsity 0.5, then 0.75) as its rounds. ``fit`` runs
once per module with 20-step scorers; the tests check the mechanics (counts,
structure, round trips, refusals), never ranking quality.
"""

import dataclasses
import json
import re
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyMLP, assert_trees_all_equal

from autosparse_jax import (
    allocation,
    autosparse,
    checkpoint,
    criteria,
    evaluation,
    features,
    irp,
    masks,
    models,
    scorer,
)

INPUT_SHAPE = (2, 2, 1)
N_PRUNABLE = 56  # (4, 8) + (8, 3)
TINY = scorer.ScorerConfig(
    hidden_sizes=(8,), num_steps=20, eval_every=10, batch_size=32
)
# Every 4th weight held out (14 of 56): both layers, labels 0, 1 and 2.
VALIDATION = (
    np.array([i for i in range(N_PRUNABLE) if i % 4]),
    np.arange(0, N_PRUNABLE, 4),
)
PRUNE_STATIC = ("criterion", "apply_fn", "allocation", "num_rounds", "prunable")
prune_at_init = jax.jit(criteria.prune_at_init, static_argnames=PRUNE_STATIC)


def _kernels(mask):
    return [mask["Dense_0"]["kernel"], mask["head"]["kernel"]]


def _kept(mask):
    return [int(m.sum()) for m in _kernels(mask)]


def _labels(params, metadata):
    magnitude = jax.tree.map(jnp.abs, params)
    m1 = masks.mask_from_scores(magnitude, 0.5)
    m2 = masks.mask_from_scores(magnitude, 0.75, mask=m1)
    counts = jax.tree.map(
        lambda a, b: a.astype(jnp.int32) + b.astype(jnp.int32), m1, m2
    )
    dense = masks.dense_mask(params)
    return irp.IRPLabels(params, {}, (dense, m1, m2), counts, metadata)


@pytest.fixture(scope="module")
def run():
    """``(model, apply_fn, labels, batch)`` of the hand-built labelled run."""
    model = TinyMLP()
    params, _ = models.init_params(jax.random.key(0), model, INPUT_SHAPE)
    labels = _labels(params, {"num_rounds": 2, "model": "tiny_mlp", "seed": 0})
    k1, k2 = jax.random.split(jax.random.key(1))
    batch = {
        "image": jax.random.normal(k1, (16, *INPUT_SHAPE)),
        "label": jax.random.randint(k2, (16,), 0, 3),
    }
    return model, models.make_apply_fn(model), labels, batch


@pytest.fixture(scope="module")
def autos(run):
    model, _, labels, batch = run
    return autosparse.fit(
        jax.random.key(2),
        labels,
        batch,
        model=model,
        validation=VALIDATION,
        scorer_config=TINY,
        progress=False,
    )


@pytest.fixture(scope="module")
def saved(autos, tmp_path_factory):
    path = tmp_path_factory.mktemp("autos") / "artifact"
    autosparse.save(path, autos)
    return path


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the saved artifact, free to damage."""
    path = tmp_path / "artifact"
    shutil.copytree(saved, path)
    return path


def _refusal(problem):
    return rf"Cannot load an AutoSparse artifact from .*: {problem}"


def _edit_metadata(directory, edit, *, rehash):
    """Edits ``metadata.json``; with ``rehash``, recomputes the true checksum."""
    path = directory / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    if rehash:
        del meta["checksum"]
        meta["checksum"] = checkpoint.checksum(checkpoint.restore(directory), meta)
    path.write_text(json.dumps(meta))


def _files_holding(directory, array):
    """The files under ``state/`` that hold ``array``'s raw bytes."""
    needle = np.asarray(array).tobytes()
    found = [
        p
        for p in sorted((directory / "state").rglob("*"))
        if p.is_file() and needle in p.read_bytes()
    ]
    assert found, "the array's bytes are in no file under state/"
    return found, needle


# --------------------------------------------------------------------- fit


def test_fit_returns_both_scorers_the_allocation_and_provenance(autos):
    assert autos.scorer.feature_config == autosparse.WITHIN_FEATURES
    assert autos.global_scorer.feature_config == autosparse.PAPER_FEATURES
    assert autosparse.WITHIN_FEATURES.normalization == "layer"
    assert autos.scorer.config == TINY
    assert isinstance(autos.criterion, scorer.ScorerCriterion)
    assert autos.criterion.scorer is autos.scorer
    assert autos.paper_criterion.scorer is autos.global_scorer
    assert autos.criterion is autos.criterion  # built once per object
    assert len(autos.allocation_model.weights) == len(allocation.LAYER_FEATURE_NAMES)
    prov = autos.provenance
    assert prov["source_model"] == "tiny_mlp" and prov["seed"] == 0
    assert (prov["num_weights"], prov["num_held_out"]) == (56, 14)
    assert set(prov["held_out_spearman"]) == {"scorer", "global_scorer"}
    assert all(-1 <= v <= 1 for v in prov["held_out_spearman"].values())


def test_fit_without_model_on_an_unregistered_model_raises(run):
    _, _, labels, batch = run
    message = re.escape("names model 'tiny_mlp', not one of models.MODELS; pass model=")
    with pytest.raises(ValueError, match=message):
        autosparse.fit(jax.random.key(2), labels, batch, scorer_config=TINY)
    unnamed = labels._replace(metadata={"num_rounds": 2})
    with pytest.raises(ValueError, match="names model None"):
        autosparse.fit(jax.random.key(2), unnamed, batch, scorer_config=TINY)


# ------------------------------------------------------------------- prune


@pytest.mark.parametrize("hidden", [8, 16], ids=["source", "wider"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95])
def test_prune_keeps_the_exact_count_and_no_empty_layer(hidden, sparsity, autos, run):
    _, _, _, batch = run
    model = TinyMLP(hidden=hidden)
    params, _ = models.init_params(jax.random.key(7), model, INPUT_SHAPE)
    n = 4 * hidden + hidden * 3
    mask = autos.prune(
        jax.random.key(3),
        params,
        batch,
        apply_fn=models.make_apply_fn(model),
        sparsity=sparsity,
    )
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert sum(_kept(mask)) == round((1 - sparsity) * n)  # e.g. 28, 6, 3 of 56
    assert min(_kept(mask)) >= 1
    assert bool(mask["Dense_0"]["bias"].all() & mask["head"]["bias"].all())


def test_prune_is_prune_at_init_with_the_criterion_and_the_allocation(autos, run):
    _, apply_fn, labels, batch = run
    params, key = labels.init_params, jax.random.key(3)
    kwargs = {"apply_fn": apply_fn, "sparsity": 0.9}
    mask = autos.prune(key, params, batch, **kwargs)
    composed = prune_at_init(
        key, autos.criterion, params, batch, allocation=autos.allocation, **kwargs
    )
    assert_trees_all_equal(composed, mask)
    # The criterion and the allocation combine with the other parts too.
    for crit, alloc in [
        (autos.paper_criterion, allocation.global_topk()),
        (autos.criterion, allocation.erk()),
        (criteria.snip, autos.allocation),
    ]:
        other = prune_at_init(key, crit, params, batch, allocation=alloc, **kwargs)
        assert sum(_kept(other)) == 6 and min(_kept(other)) >= 1
    uniform = prune_at_init(
        key, autos.criterion, params, batch, allocation=allocation.uniform(), **kwargs
    )
    assert _kept(uniform) == [3, 3]  # 10 % of 32 and of 24, rounded; total 6


def test_prune_at_init_compiles_once_per_autosparse(autos, run):
    _, apply_fn, labels, batch = run
    chex.clear_trace_counter()
    counted = jax.jit(
        chex.assert_max_traces(criteria.prune_at_init, n=1),
        static_argnames=PRUNE_STATIC,
    )
    for s in (0.5, 0.9):
        mask = counted(
            jax.random.key(3),
            autos.criterion,
            labels.init_params,
            batch,
            apply_fn=apply_fn,
            sparsity=jnp.float32(s),
            allocation=autos.allocation,
        )
        assert sum(_kept(mask)) == round((1 - s) * N_PRUNABLE)  # 28, 6
    chex.clear_trace_counter()


# ---------------------------------------------------------------- evaluate


def test_evaluate_reports_both_scorers_against_the_survival_counts(autos, run):
    model, apply_fn, labels, batch = run
    report = autosparse.evaluate(autos, labels, batch, model=model)
    assert set(report) == {"scorer", "global_scorer"}
    for row in report.values():
        assert set(row) == {"spearman", "within_layer_spearman", "per_layer"}
        assert set(row["per_layer"]) == {"0", "1"}
        assert -1 <= row["spearman"] <= 1
    fc = autosparse.PAPER_FEATURES
    x = features.stack_features(
        features.compute_features(
            labels.init_params, batch, apply_fn=apply_fn, **dataclasses.asdict(fc)
        )
    )
    pred = scorer.predict_flat(autos.global_scorer, x, feature_config=fc)
    counts = features.stack_leaves(labels.counts)
    expected = evaluation.spearman(np.asarray(pred), np.asarray(counts))
    assert report["global_scorer"]["spearman"] == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------- save, load


def test_feature_probe_is_fixed_and_tells_feature_configs_apart():
    paper = autosparse.feature_probe(autosparse.PAPER_FEATURES)
    assert paper.shape == (18, 2) and paper.dtype == np.float64  # 12 + 6 weights
    np.testing.assert_array_equal(
        paper, autosparse.feature_probe(autosparse.PAPER_FEATURES)
    )
    within = autosparse.feature_probe(autosparse.WITHIN_FEATURES)
    assert not np.allclose(within, paper)


def test_save_load_round_trip_gives_identical_masks(autos, saved, run):
    _, apply_fn, labels, batch = run
    loaded = autosparse.load(saved)
    for name in ("scorer", "global_scorer"):
        ours, theirs = getattr(autos, name), getattr(loaded, name)
        assert_trees_all_equal(theirs.variables, ours.variables)
        assert (theirs.config, theirs.feature_config) == (
            ours.config,
            ours.feature_config,
        )
    assert loaded.allocation_model == autos.allocation_model
    assert loaded.provenance == json.loads(json.dumps(autos.provenance))
    for s in (0.5, 0.9):
        kwargs = {"apply_fn": apply_fn, "sparsity": s}
        key = jax.random.key(3)
        assert_trees_all_equal(
            loaded.prune(key, labels.init_params, batch, **kwargs),
            autos.prune(key, labels.init_params, batch, **kwargs),
        )
    meta = checkpoint.load_metadata(saved)
    assert (meta["kind"], meta["format_version"]) == (
        "autosparse",
        autosparse.FORMAT_VERSION,
    )


def test_save_never_overwrites(autos, saved):
    with pytest.raises(FileExistsError, match="never overwritten"):
        autosparse.save(saved, autos)


def test_load_of_a_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint metadata"):
        autosparse.load(tmp_path / "nothing")


def test_load_refuses_another_format_version(copy):
    def bump(meta):
        meta["format_version"] = autosparse.FORMAT_VERSION + 1

    _edit_metadata(copy, bump, rehash=True)
    message = (
        f"its format version is {autosparse.FORMAT_VERSION + 1} but this library "
        f"reads version {autosparse.FORMAT_VERSION}"
    )
    with pytest.raises(ValueError, match=_refusal(message)):
        autosparse.load(copy)


def test_load_refuses_truncated_metadata(copy):
    path = copy / "metadata.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=_refusal("metadata.json is truncated")):
        autosparse.load(copy)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_load_refuses_a_truncated_or_deleted_array_file(damage, autos, copy):
    files, _ = _files_holding(copy, autos.global_scorer.variables["feature_mean"])
    for path in files:
        if damage == "delete":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=_refusal(r"its arrays cannot be read")):
        autosparse.load(copy)


def test_load_refuses_flipped_bytes_in_an_array_file(autos, copy):
    """Orbax's OCDBT store checks a CRC-32C of every file before our checksum."""
    files, needle = _files_holding(copy, autos.global_scorer.variables["feature_mean"])
    for path in files:
        data = bytearray(path.read_bytes())
        data[data.index(needle)] ^= 0x01  # the lowest mantissa bit of one float
        path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=_refusal("its arrays cannot be read")) as err:
        autosparse.load(copy)
    assert err.value.__cause__ is not None  # the storage error, chained


def test_load_refuses_arrays_rewritten_after_saving(autos, copy, tmp_path):
    """Other values in a well-formed store: only the checksum can tell."""
    variables = dict(autos.global_scorer.variables)
    variables["feature_mean"] = variables["feature_mean"] + 1.0
    other = dataclasses.replace(
        autos, global_scorer=autos.global_scorer.replace(variables=variables)
    )
    autosparse.save(tmp_path / "other", other)
    shutil.rmtree(copy / "state")
    shutil.copytree(tmp_path / "other" / "state", copy / "state")
    with pytest.raises(ValueError, match=_refusal("its checksum does not match")):
        autosparse.load(copy)
    # The swapped-in arrays alone are readable and intact.
    assert isinstance(autosparse.load(tmp_path / "other"), autosparse.AutoSparse)


def test_load_refuses_metadata_edited_after_saving(copy):
    def edit(meta):
        meta["provenance"]["seed"] = 1

    _edit_metadata(copy, edit, rehash=False)
    with pytest.raises(ValueError, match=_refusal("its checksum does not match")):
        autosparse.load(copy)


def test_load_refuses_another_kind_of_checkpoint(autos, tmp_path):
    path = tmp_path / "scorer"
    scorer.save_scorer(path, autos.scorer)
    message = "it holds kind='autos_scorer', not an AutoSparse artifact"
    with pytest.raises(ValueError, match=_refusal(message)):
        autosparse.load(path)


def test_load_refuses_features_computed_differently(copy, saved, tmp_path):
    def shift_probe(meta):
        probe = np.asarray(meta["scorers"]["scorer"]["feature_probe"])
        meta["scorers"]["scorer"]["feature_probe"] = (probe * 1.01).tolist()

    _edit_metadata(copy, shift_probe, rehash=True)
    with pytest.raises(ValueError, match=_refusal("its scorer was trained on feat")):
        autosparse.load(copy)
    # Control: the recomputed checksum alone is accepted, so only the probe
    # check refused the artifact above.
    control = tmp_path / "control"
    shutil.copytree(saved, control)
    _edit_metadata(control, lambda meta: None, rehash=True)
    assert isinstance(autosparse.load(control), autosparse.AutoSparse)


def test_load_refuses_an_unknown_feature_config(copy):
    def unknown(meta):
        meta["scorers"]["global_scorer"]["feature_config"]["normalization"] = "batch"

    _edit_metadata(copy, unknown, rehash=True)
    message = "its global_scorer configuration is unknown here"
    with pytest.raises(ValueError, match=_refusal(message)):
        autosparse.load(copy)
