"""A meta-gradient look-ahead and the paper's own AutoS settings, by name.

Direction 5 (a signal a few differentiable steps ahead):

* ``prospr``: ProsPr's ``|dL(w_k(m))/dm|`` (``metagrad.prospr``) under the
  published baselines' plain global threshold, no learning. The ``k =
  PROSPR_STEPS`` plain SGD steps at the recipe's learning rate run on the
  first scoring batches of the target, the loss on the last one.
* ``prospr_paths``: those scores dealt onto SynFlow's path iterations
  (``variants.on_paths``).
* ``autos_metagrad_paths``: a within-layer scorer on layer-normalised
  ``(w0, g0, dL/dm)`` learned from the source IRP run (the meta-gradient of
  the source network, its own recipe's learning rate), on SynFlow's paths.
  ``features.py`` has no meta-gradient feature set, so the meta-gradient
  fills the look-ahead slot of the ``"lookahead"`` set: the columns are
  ``(w0, g0, dL/dm, |dL/dm| - |w0|)`` (the last one redundant), and the
  scorer's ``FeatureConfig`` says ``"lookahead"``; this scorer is only used
  here.

Direction 2 (the authors' settings, the paper's global threshold):

* ``autos_gsum``: the paper's scorer (raw ``(w0, g0)``, MSE on the survival
  fraction) with the authors' ``g0``: per-batch mean gradients *summed* over
  one pass through the whole training set (``FeatureConfig(gradient="sum")``
  on ``N // B`` batches of the recipe's batch size), on the source and on
  every target, so ``g0`` scales with the training set's size.
* ``autos_paperpreset``: the paper's scorer trained with the authors'
  predictor, ``scorer.PRESETS["paper"]`` (2-16-64-1024-1024-64-1 with
  BatchNorm, Adam 0.01, 650 steps of 4,096), on the default mean ``g0``.

The scorers depend only on the source run, so they are fitted once and kept
in ``config.variant_scorers`` (shared by the three validation studies), then
loaded. Every mask applies to the target's initial weights.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from autosparse_jax import allocation as al
from autosparse_jax import features, masks, metagrad
from autosparse_jax import scorer as scorer_lib
from experiments import common, variants

PROSPR_STEPS = 3
"""Differentiable SGD steps (ProsPr's default); needs 4 scoring batches."""
METAGRAD_FEATURES = features.FeatureConfig(
    feature_set="lookahead", normalization="layer"
)
GSUM_FEATURES = features.FeatureConfig(gradient="sum")
PAPER_FEATURES = features.FeatureConfig()

_metagradient = jax.jit(
    metagrad.metagradient, static_argnames=("apply_fn", "num_steps")
)


def _dense_metagradient(params, batches, apply_fn, learning_rate) -> Any:
    return _metagradient(
        params, batches, apply_fn=apply_fn, mask=masks.dense_mask(params),
        num_steps=PROSPR_STEPS, learning_rate=jnp.float32(learning_rate),
    )  # fmt: skip


def target_metagradient(t: common.Target, study: Any) -> Any:
    """The target's ``dL/dm`` on its scoring batches (cached per seed)."""
    cache = study.__dict__.setdefault("_metagrad", {})
    if t.seed not in cache:
        cache.clear()
        cache[t.seed] = _dense_metagradient(
            t.params, t.batches, t.apply_fn, study.config.train.learning_rate
        )
    return cache[t.seed]


def epoch_batches(key: jax.Array, host_train: Any, dataset: str, size: int) -> Any:
    """One pass through the training set: ``N // size`` stacked batches."""
    num = len(host_train["label"]) // size
    return common.score_batches(key, host_train, dataset, num, size)


# ------------------------------------------------------------ the source


def fit_metagrad_scorer(config: Any) -> tuple[scorer_lib.Scorer, list]:
    """The within-layer scorer on ``(w0, g0, dL/dm)`` of the source run."""
    src = variants.Source(config)
    params = src.labels.init_params
    batches = common.source_batches(config, src.labels)
    dm = _dense_metagradient(
        params, batches, src.apply_fn, src.config.train.learning_rate
    )
    feats = features.compute_features(
        params, batches, apply_fn=src.apply_fn, ahead_params=dm,
        **dataclasses.asdict(METAGRAD_FEATURES),
    )  # fmt: skip
    y = scorer_lib.within_layer_targets(src.y, features.layer_ids(params))
    scorer_config = dataclasses.replace(
        scorer_lib.PRESETS["default"], num_steps=config.scorer_num_steps
    )
    return variants.train_on_source(
        config, features.stack_features(feats), y, src.split, scorer_config,
        METAGRAD_FEATURES,
    )  # fmt: skip


def fit_gsum_scorer(config: Any) -> tuple[scorer_lib.Scorer, list]:
    """The paper's scorer on ``(w0, g0)``, ``g0`` summed over the training set."""
    src = variants.Source(config)
    batches = epoch_batches(
        jax.random.key(config.scorer_seed), src.host, src.labels.metadata["dataset"],
        src.config.train.batch_size,
    )  # fmt: skip
    x = common.initial_features(
        src.labels.init_params, batches, src.apply_fn, GSUM_FEATURES
    )
    scorer_config = dataclasses.replace(
        scorer_lib.PRESETS["default"], num_steps=config.scorer_num_steps
    )
    return variants.train_on_source(
        config, x, src.y, src.split, scorer_config, GSUM_FEATURES
    )


def fit_paperpreset_scorer(config: Any) -> tuple[scorer_lib.Scorer, list]:
    """The paper's scorer on ``(w0, g0)`` with ``scorer.PRESETS["paper"]``."""
    src = variants.Source(config)
    batches = common.source_batches(config, src.labels)
    x = common.initial_features(
        src.labels.init_params, batches, src.apply_fn, PAPER_FEATURES
    )
    return variants.train_on_source(
        config, x, src.y, src.split, scorer_lib.PRESETS["paper"], PAPER_FEATURES
    )


FITS = {
    "metagrad": fit_metagrad_scorer,
    "gsum": fit_gsum_scorer,
    "paperpreset": fit_paperpreset_scorer,
}


def variant_scorer(study: Any, name: str) -> scorer_lib.Scorer:
    """Scorer ``name`` of ``FITS``: fitted once into
    ``<config.variant_scorers>/<name>_scorer/`` (with its held-out Spearman
    and fit time in the metadata), then loaded."""
    cache = study.__dict__.setdefault("_variant_scorers", {})
    if name not in cache:
        root = study.config.get("variant_scorers", study.workdir)
        path = os.path.abspath(os.path.join(root, f"{name}_scorer"))
        if not os.path.isdir(path):
            tic = time.perf_counter()
            fitted, history = FITS[name](study.config)
            meta = {
                "fit_s": time.perf_counter() - tic,
                "held_out_spearman": max(r["val_spearman"] for r in history),
                "source": study.config.source,
            }
            scorer_lib.save_scorer(path, fitted, metadata=meta)
            with open(path + ".json", "w") as f:
                json.dump(meta, f, indent=2)
        cache[name] = scorer_lib.as_criterion(scorer_lib.load_scorer(path))
    return cache[name]


# ------------------------------------------------------------ the methods


def prospr(t, sparsity, study):
    """ProsPr under the plain global threshold (the meta-gradient inside
    ``prune_at_init``: ``prune_s`` is its cost)."""
    cache = study.__dict__.setdefault("_variant_criteria", {})
    if "prospr" not in cache:
        cache["prospr"] = functools.partial(
            metagrad.prospr, num_steps=PROSPR_STEPS,
            learning_rate=float(study.config.train.learning_rate),
        )  # fmt: skip
    mask = common.prune_at_init(
        t.prune_key, cache["prospr"], t.params, t.batches, apply_fn=t.apply_fn,
        sparsity=jnp.asarray(sparsity, jnp.float32),
        allocation=common.SCOPES["global"],
    )  # fmt: skip
    return mask, t.params


def prospr_paths(t, sparsity, study):
    ranking = jax.tree.map(jnp.abs, target_metagradient(t, study))
    return variants.on_paths(t, ranking, sparsity), t.params


def autos_metagrad_paths(t, sparsity, study):
    scorer = variant_scorer(study, "metagrad").scorer
    feats = features.compute_features(
        t.params, t.batches, apply_fn=t.apply_fn,
        ahead_params=target_metagradient(t, study),
        **dataclasses.asdict(METAGRAD_FEATURES),
    )  # fmt: skip
    scores = scorer_lib.predict_scores(scorer, feats, feature_config=METAGRAD_FEATURES)
    return variants.on_paths(t, scores, sparsity), t.params


def _target_epoch(t: common.Target, study: Any) -> Any:
    cache = study.__dict__.setdefault("_epoch_batches", {})
    if t.seed not in cache:
        cache.clear()
        cache[t.seed] = epoch_batches(
            jax.random.fold_in(t.prune_key, 2), study.host_train,
            study.config.dataset, study.config.train.batch_size,
        )  # fmt: skip
    return cache[t.seed]


def _global(t, criterion, batches, sparsity):
    """The paper's global threshold, never an empty layer (``autos_global``)."""
    return common.prune_at_init(
        t.prune_key, criterion, t.params, batches, apply_fn=t.apply_fn,
        sparsity=jnp.asarray(sparsity, jnp.float32), allocation=al.global_topk(),
    )  # fmt: skip


def autos_gsum(t, sparsity, study):
    criterion = variant_scorer(study, "gsum")
    return _global(t, criterion, _target_epoch(t, study), sparsity), t.params


def autos_paperpreset(t, sparsity, study):
    criterion = variant_scorer(study, "paperpreset")
    return _global(t, criterion, t.batches, sparsity), t.params


VARIANTS = {
    "prospr": prospr,
    "prospr_paths": prospr_paths,
    "autos_metagrad_paths": autos_metagrad_paths,
    "autos_gsum": autos_gsum,
    "autos_paperpreset": autos_paperpreset,
}
"""The methods by name (registered in ``methods.METHODS``)."""
