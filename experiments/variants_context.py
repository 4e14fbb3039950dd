"""AutoS on unit-, input- and path-aware features (``autos_context*``).

The within-layer scorer of ``experiments.variants``, fitted on features that
see a weight's context (``features.FEATURE_SETS["context"]``: w0, g0, the
input unit's activation RMS ``‖x_j‖``, ``|w0| ‖x_j‖``, the RMS of w0 and g0
over the weight's input row and output unit, the one-shot SynFlow score;
standardised within the layer):

* ``autos_context``: its scores under the learned allocation.
* ``autos_context_paths``: its ranking on SynFlow's paths (``variants.on_paths``).
* ``autos_context_lookahead30_paths``: the ``"context_lookahead"`` set (the
  context plus w_k and |w_k| - |w0| after 30 % of the recipe's epochs,
  ``variants.with_lookahead``) on SynFlow's paths: ``autos_lookahead30_paths``
  with the context added.

Each scorer learns from the source IRP run (``config.source``) with the same
features (and look-ahead) on the source, and is saved once per work directory
(``<workdir>[/lookahead30]/<feature set>_scorer/``; fitted by
``variants.fit_scorer``). Every mask applies to the
target's initial weights.
"""

import dataclasses
import os
from typing import Any

from autosparse_jax import criteria, features
from autosparse_jax import scorer as scorer_lib
from experiments import common, variants

CONTEXT = features.FeatureConfig(feature_set="context", normalization="layer")
CONTEXT_LOOKAHEAD = features.FeatureConfig(
    feature_set="context_lookahead", normalization="layer"
)


def context_scorer(
    study: Any, feature_config: features.FeatureConfig
) -> scorer_lib.Scorer:
    """Fitted once per work directory and feature set, then loaded."""
    name = f"{feature_config.feature_set}_scorer"
    cache = study.__dict__.setdefault("_context_scorers", {})
    if name not in cache:
        path = os.path.abspath(os.path.join(study.workdir, name))
        if not os.path.isdir(path):
            scorer_lib.save_scorer(
                path, variants.fit_scorer(study.config, feature_config)
            )
        cache[name] = scorer_lib.load_scorer(path)
    return cache[name]


def context_scores(
    t: common.Target, study: Any, feature_config: features.FeatureConfig
) -> Any:
    """The scorer's within-layer scores of the target's weights."""
    ahead = (
        variants.target_ahead(t, study)
        if variants.reads_ahead(feature_config)
        else None
    )
    feats = features.compute_features(
        t.params, t.batches, apply_fn=t.apply_fn, ahead_params=ahead,
        **dataclasses.asdict(feature_config),
    )  # fmt: skip
    return scorer_lib.predict_scores(
        context_scorer(study, feature_config), feats, feature_config=feature_config
    )


def autos_context(t, sparsity, study):
    mask = criteria.prune_at_init(
        t.prune_key, variants.FixedScores(context_scores(t, study, CONTEXT)),
        t.params, t.batches, apply_fn=t.apply_fn, sparsity=sparsity,
        allocation=study.learners().autos.allocation,
    )  # fmt: skip
    return mask, t.params


def autos_context_paths(t, sparsity, study):
    return variants.on_paths(t, context_scores(t, study, CONTEXT), sparsity), t.params


def autos_context_lookahead_paths(t, sparsity, study):
    scores = context_scores(t, study, CONTEXT_LOOKAHEAD)
    return variants.on_paths(t, scores, sparsity), t.params


VARIANTS = {
    "autos_context": autos_context,
    "autos_context_paths": autos_context_paths,
    "autos_context_lookahead30_paths": variants.with_lookahead(
        0.3, autos_context_lookahead_paths
    ),
}
"""The variants by name (registered in ``methods.METHODS``)."""
