"""Leave-one-target-out AutoS: learners fitted on the OTHER targets' IRP runs.

A study's target (model, dataset) is never among the IRP runs its learners
are fitted on. ``config.loto_sources`` lists ``(labels directory, IRP config)``
of every source run; a study keeps those whose model or dataset differs from
its own (``loto_sources``). The per-layer allocation is fitted on all of
them at once, in scale-free layer terms (``allocation.fit_allocation_sources``
over ``allocation.scale_free_features``); the within-layer scorer, which
fits one run, on the first of them (``scorer_source``).

* ``autos_loto``: the within-layer AutoS scorer (w0, g0) under the
  multi-source allocation on every scale-free layer feature.
* ``autos_loto_lean``: the same, the allocation on the features that do not
  name a layer's position (relative log fan-in and fan-out, kernel size,
  share of the weights, is-output; ``LEAN_COLUMNS``).
* ``autos_loto_lookahead`` / ``autos_loto_lean_lookahead``: the look-ahead
  within-layer scorer of ``experiments.variants`` (``config.lookahead_fraction``
  of the recipe), fitted on ``scorer_source``, under those allocations.
* ``synflow+autos``: SynFlow's own per-layer counts (its 100-round mask, as
  the ``synflow`` baseline prunes the target) with the leave-one-target-out
  within-layer scorer choosing inside each layer. Not ``like(synflow)``,
  which would take the counts of one SynFlow round.

The fitted allocation models are written to
``<workdir>/loto_allocation_<name>.json`` (with the sources), the scorer to
``<workdir>/loto_learners/`` (its look-ahead twin under ``<workdir>/loto/``).
"""

import dataclasses
import json
import os
import types
from typing import Any

import jax.numpy as jnp
import numpy as np

from autosparse_jax import allocation as al
from autosparse_jax import autosparse, criteria, data, irp, layers, masks, models
from experiments import common, variants

LEAN_COLUMNS = (0, 1, 2, 3, 6)
"""``SCALE_FREE_FEATURE_NAMES`` columns without relative depth and is-first."""


def lean_features(contexts) -> np.ndarray:
    """``[L, 5]`` scale-free layer features that do not name the position."""
    return al.scale_free_features(contexts)[:, LEAN_COLUMNS]


LAYER_FEATURES = {"full": al.scale_free_features, "lean": lean_features}
"""The allocation's layer features by variant name."""


def loto_sources(config: Any) -> list[tuple[str, str]]:
    """``(labels, IRP config)`` of the sources whose target is not the study's.

    Raises:
      ValueError: if no source is left.
    """
    kept = []
    for labels_dir, irp_config in config.loto_sources:
        meta = irp.load_labels(labels_dir).metadata
        if (meta["model"], meta["dataset"]) != (config.model, config.dataset):
            kept.append((labels_dir, irp_config))
    if not kept:
        raise ValueError(
            f"every run of config.loto_sources is a {config.model} / "
            f"{config.dataset} run, the study's own target; name other sources."
        )
    return kept


def allocation_source(labels_dir: str, layer_features) -> al.AllocationSource:
    """A labelled run's layer features, per-round densities and sizes (host)."""
    labels = irp.load_labels(labels_dir)
    meta = labels.metadata
    info = data.DATASETS[meta["dataset"]]
    model = models.get_model(meta["model"], num_classes=info.num_classes)
    apply_fn = models.make_apply_fn(model, labels.init_model_state)
    contexts = layers.layer_contexts(
        labels.init_params, apply_fn=apply_fn, input_shape=info.input_shape
    )
    return al.AllocationSource(
        layer_features([c for c in contexts if c is not None]),
        al.layer_densities(labels.masks[1:]),
        al.layer_sizes(labels.init_params),
    )


def fit_loto_allocation(config: Any, layer_features) -> al.AllocationModel:
    """The allocation model of the study's leave-one-target-out sources."""
    dirs = [labels_dir for labels_dir, _ in loto_sources(config)]
    return al.fit_allocation_sources(
        [allocation_source(d, layer_features) for d in dirs],
        metadata=(("sources", tuple(dirs)),),
    )


def loto_allocation(study: Any, name: str) -> al.Allocation:
    """``learned`` on the ``name`` layer features (fitted once per process;
    the model written to ``<workdir>/loto_allocation_<name>.json``)."""
    cache = study.__dict__.setdefault("_loto_allocations", {})
    if name not in cache:
        feature_fn = LAYER_FEATURES[name]
        model = fit_loto_allocation(study.config, feature_fn)
        record = dataclasses.asdict(model)
        path = os.path.join(study.workdir, f"loto_allocation_{name}.json")
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
        cache[name] = al.learned(model, layer_features=feature_fn)
    return cache[name]


def scorer_source(config: Any) -> tuple[str, str]:
    """The source the within-layer scorers learn from: the first one left."""
    return loto_sources(config)[0]


def loto_autos(study: Any) -> autosparse.AutoSparse:
    """AutoSparse fitted on ``scorer_source`` (the study's own learners when
    that is ``config.source``), saved once under ``<workdir>/loto_learners``."""
    cache = study.__dict__.setdefault("_loto_autos", [])
    if not cache:
        labels_dir, _ = scorer_source(study.config)
        if os.path.abspath(labels_dir) == os.path.abspath(study.config.source):
            cache.append(study.learners().autos)
        else:
            path = os.path.abspath(os.path.join(study.workdir, "loto_learners"))
            if not os.path.isdir(path):
                fitted = common.fit_autosparse(study.config, source=labels_dir)
                autosparse.save(path, fitted)
            cache.append(autosparse.load(path))
    return cache[0]


def loto_view(study: Any) -> Any:
    """The study seen with ``scorer_source`` as its source (for the look-ahead
    scorer of ``experiments.variants``), working in ``<workdir>/loto``."""
    views = study.__dict__.setdefault("_loto_view", [])
    if not views:
        labels_dir, irp_config = scorer_source(study.config)
        config = study.config.copy_and_resolve_references()
        config.source, config.source_config = labels_dir, irp_config
        views.append(
            types.SimpleNamespace(
                config=config, recipe=study.recipe, datasets=study.datasets,
                workdir=os.path.join(study.workdir, "loto"),
            )
        )  # fmt: skip
        os.makedirs(views[0].workdir, exist_ok=True)
    return views[0]


def within_layer(name: str):
    """``autos_loto[_lean]``: the within-layer scorer under the allocation."""

    def method(t, sparsity, study):
        mask = common.prune_at_init(
            t.prune_key, loto_autos(study).criterion, t.params, t.batches,
            apply_fn=t.apply_fn, sparsity=jnp.asarray(sparsity, jnp.float32),
            allocation=loto_allocation(study, name),
        )  # fmt: skip
        return mask, t.params

    return method


def lookahead(name: str):
    """``autos_loto[_lean]_lookahead``: the look-ahead scorer under it."""

    def method(t, sparsity, study):
        view = loto_view(study)
        mask = criteria.prune_at_init(
            t.prune_key, variants.FixedScores(variants._lookahead_scores(t, view)),
            t.params, t.batches, apply_fn=t.apply_fn, sparsity=sparsity,
            allocation=loto_allocation(study, name),
        )  # fmt: skip
        return mask, t.params

    return method


@dataclasses.dataclass(frozen=True)
class FixedCounts:
    """An allocation that returns the same ``[L]`` counts whatever it is asked."""

    counts: tuple[int, ...]

    def __call__(self, scores, sparsity, ctx):
        del scores, sparsity, ctx
        return jnp.asarray(self.counts, jnp.int32)


def synflow_autos(t, sparsity, study):
    """SynFlow's per-layer counts, the LOTO within-layer scorer's ranking."""
    reference = common.prune_at_init(  # the ``synflow`` baseline's mask
        t.prune_key, criteria.synflow, t.params, t.batches, apply_fn=t.apply_fn,
        sparsity=jnp.asarray(sparsity, jnp.float32),
        allocation=common.SCOPES["global"], num_rounds=variants.PATH_ROUNDS,
        schedule="geometric",
    )  # fmt: skip
    leaves = masks._prunable_mask_leaves(reference, masks.is_prunable)
    counts = tuple(int(np.sum(np.asarray(m))) for _, m in leaves)
    mask = criteria.prune_at_init(
        t.prune_key, loto_autos(study).criterion, t.params, t.batches,
        apply_fn=t.apply_fn, sparsity=sparsity, allocation=FixedCounts(counts),
    )  # fmt: skip
    return mask, t.params


VARIANTS = {
    "autos_loto": within_layer("full"),
    "autos_loto_lean": within_layer("lean"),
    "autos_loto_lookahead": lookahead("full"),
    "autos_loto_lean_lookahead": lookahead("lean"),
    "synflow+autos": synflow_autos,
}
"""The leave-one-target-out variants by name (in ``methods.METHODS``)."""
