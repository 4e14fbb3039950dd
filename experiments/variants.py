"""AutoS variants beyond the paper, by name (``autos_<variant>``).

* ``autos_paths``: the within-layer scorer's ranking dealt onto SynFlow's
  path iterations (``criteria.rank_matched``): SynFlow's layer balance and
  connected paths, AutoS's choice inside each layer.
* ``autos_lookahead``: a within-layer scorer on look-ahead features (the
  weights after a few epochs of the recipe, ``lookahead.train_ahead``),
  under the learned allocation.
* ``autos_lookahead_paths``: that scorer's ranking on SynFlow's paths.
* ``autos_lookahead30_paths``: the same with a look-ahead of 30 % of the
  recipe's epochs, whatever the config's (``with_lookahead``).

References without learning, to tell what the scorer adds:
``synflow_ahead`` (SynFlow's paths ranked by ``|w_k|``; ``synflow_ahead30``
with the 30 % look-ahead) and
``magnitude_ahead`` (one global threshold on ``|w_k|``, one-shot pruning
after the look-ahead, rewound to initialisation).

The look-ahead lasts ``config.lookahead_fraction`` of the recipe's epochs (at
least one) on the target; the scorer learns from the source IRP run with the
same fraction of the source's own recipe (``config.source_config``). Every
mask applies to the target's initial weights.
"""

import dataclasses
import os
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import (
    criteria,
    data,
    evaluation,
    features,
    irp,
    masks,
    train,
)
from autosparse_jax import lookahead as lookahead_lib
from autosparse_jax import scorer as scorer_lib
from experiments import common

LOOKAHEAD_FEATURES = features.FeatureConfig(
    feature_set="lookahead", normalization="layer"
)
PATH_ROUNDS = criteria.DEFAULT_ROUNDS["synflow"]


def ahead_epochs(config: Any, num_epochs: int) -> int:
    """Look-ahead epochs: ``config.lookahead_fraction`` of a recipe, at least 1."""
    return max(1, round(config.lookahead_fraction * num_epochs))


def _ahead(recipe, key, params, model_state, train_data, config) -> Any:
    return lookahead_lib.train_ahead(
        key, params, train_data, train_epoch=recipe.train_epoch,
        optimizer=recipe.optimizer, model_state=model_state,
        num_epochs=ahead_epochs(config, recipe.num_epochs),
    )  # fmt: skip


def target_ahead(t: common.Target, study: Any) -> Any:
    """The target's look-ahead params (cached per seed on the study)."""
    cache = study.__dict__.setdefault("_ahead", {})
    if t.seed not in cache:
        key = jax.random.fold_in(t.prune_key, 1)
        cache.clear()
        cache[t.seed] = _ahead(
            study.recipe, key, t.params, t.model_state, study.datasets[0],
            study.config,
        )  # fmt: skip
    return cache[t.seed]


class Source:
    """The source IRP run (``config.source``): labels, its config, data, apply_fn.

    ``y`` is every weight's label (rounds survived / rounds), ``split`` the
    fit / held-out split of the weights by ``config.scorer_seed``.
    """

    def __init__(self, config: Any):
        self.labels = irp.load_labels(config.source)
        meta = self.labels.metadata
        self.config = common.load_config(config.source_config)
        self.host = data.load_dataset(meta["dataset"], meta.get("train_split", "train"))
        self.recipe = common.make_recipe(self.config, len(self.host["label"]))
        self.apply_fn = common.models.make_apply_fn(
            self.recipe.model, self.labels.init_model_state
        )
        y = np.asarray(features.stack_leaves(self.labels.counts))
        self.y = y / meta["num_rounds"]
        self.split = evaluation.split_weights(
            config.scorer_seed, len(y), config.validation_fraction
        )


def train_on_source(
    config: Any,
    x: np.ndarray,
    y: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    scorer_config: scorer_lib.ScorerConfig,
    feature_config: features.FeatureConfig,
) -> tuple[scorer_lib.Scorer, list]:
    """A scorer fitted on ``split``'s first part, validated on its second."""
    fit_idx, val_idx = split
    return scorer_lib.train_scorer(
        jax.random.key(config.scorer_seed), x[fit_idx], y[fit_idx],
        config=scorer_config, feature_config=feature_config,
        validation=(x[val_idx], y[val_idx]), progress=False,
    )  # fmt: skip


def fit_scorer(
    config: Any, feature_config: features.FeatureConfig, loss: str = "mse"
) -> scorer_lib.Scorer:
    """A within-layer scorer on ``feature_config`` features of the source run.

    The labels of the source IRP run (``config.source``), its scoring batches,
    a held-out split of its weights and the default scorer recipe with
    ``config.scorer_num_steps`` steps and ``loss``; the source's look-ahead
    (the same fraction of the source's own recipe) is trained only when the
    feature set reads it.
    """
    src = Source(config)
    params = src.labels.init_params
    ahead = None
    if reads_ahead(feature_config):
        ahead = _ahead(
            src.recipe, jax.random.fold_in(jax.random.key(config.scorer_seed), 1),
            params, src.labels.init_model_state, train.to_device(src.host), config,
        )  # fmt: skip
    feats = features.compute_features(
        params, common.source_batches(config, src.labels),
        apply_fn=src.apply_fn, ahead_params=ahead,
        **dataclasses.asdict(feature_config),
    )  # fmt: skip
    y = scorer_lib.within_layer_targets(src.y, features.layer_ids(params))
    scorer_config = dataclasses.replace(
        scorer_lib.PRESETS["default"], num_steps=config.scorer_num_steps, loss=loss
    )
    fitted, _ = train_on_source(
        config, features.stack_features(feats), y, src.split, scorer_config,
        feature_config,
    )  # fmt: skip
    return fitted


def reads_ahead(feature_config: features.FeatureConfig) -> bool:
    """Whether a feature set reads the look-ahead weights ``w_k``."""
    return "wk" in feature_config.names


def fit_lookahead_scorer(config: Any, loss: str = "mse") -> scorer_lib.Scorer:
    """The within-layer scorer on look-ahead features of the source IRP run."""
    return fit_scorer(config, LOOKAHEAD_FEATURES, loss)


def lookahead_scorer(study: Any, loss: str = "mse") -> scorer_lib.Scorer:
    """Fitted once per work directory and loss (``lookahead_scorer[_<loss>]/``),
    then loaded."""
    name = "lookahead_scorer" + ("" if loss == "mse" else f"_{loss}")
    cache = study.__dict__.setdefault("_lookahead_scorers", {})
    if name not in cache:
        path = os.path.abspath(os.path.join(study.workdir, name))
        if not os.path.isdir(path):
            scorer_lib.save_scorer(path, fit_lookahead_scorer(study.config, loss))
        cache[name] = scorer_lib.load_scorer(path)
    return cache[name]


def _lookahead_scores(t: common.Target, study: Any, loss: str = "mse") -> Any:
    feats = features.compute_features(
        t.params, t.batches, apply_fn=t.apply_fn,
        ahead_params=target_ahead(t, study),
        **dataclasses.asdict(LOOKAHEAD_FEATURES),
    )  # fmt: skip
    return scorer_lib.predict_scores(
        lookahead_scorer(study, loss), feats, feature_config=LOOKAHEAD_FEATURES
    )


def on_paths(t: common.Target, ranking: Any, sparsity: float) -> Any:
    """SynFlow's path iterations with ``ranking`` inside each layer."""
    return common.prune_at_init(
        t.prune_key, criteria.synflow, criteria.rank_matched(t.params, ranking),
        t.batches, apply_fn=t.apply_fn,
        sparsity=jnp.asarray(sparsity, jnp.float32),
        allocation=common.SCOPES["global"], num_rounds=PATH_ROUNDS,
        schedule="geometric",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class FixedScores:
    """A criterion that returns precomputed scores (compiled per object)."""

    scores: Any

    def __call__(self, key, params, batch, *, apply_fn, mask):
        del key, params, batch, apply_fn, mask
        return self.scores


def autos_paths(t, sparsity, study):
    autos = study.learners().autos
    scores = autos.criterion(
        t.prune_key, t.params, t.batches, apply_fn=t.apply_fn,
        mask=masks.dense_mask(t.params),
    )  # fmt: skip
    return on_paths(t, scores, sparsity), t.params


def autos_lookahead(t, sparsity, study):
    autos = study.learners().autos
    mask = criteria.prune_at_init(
        t.prune_key, FixedScores(_lookahead_scores(t, study)), t.params,
        t.batches, apply_fn=t.apply_fn, sparsity=sparsity,
        allocation=autos.allocation,
    )  # fmt: skip
    return mask, t.params


def autos_lookahead_paths(t, sparsity, study):
    return on_paths(t, _lookahead_scores(t, study), sparsity), t.params


def synflow_ahead(t, sparsity, study):
    ranking = jax.tree.map(jnp.abs, target_ahead(t, study))
    return on_paths(t, ranking, sparsity), t.params


def magnitude_ahead(t, sparsity, study):
    mask = common.prune_at_init(
        t.prune_key, criteria.magnitude, target_ahead(t, study), t.batches,
        apply_fn=t.apply_fn, sparsity=jnp.asarray(sparsity, jnp.float32),
        allocation=common.SCOPES["global"],
    )  # fmt: skip
    return mask, t.params


def with_lookahead(fraction: float, base):
    """``base`` with a look-ahead of ``fraction`` of the recipe's epochs: it
    sees the study through a view whose ``config.lookahead_fraction`` is
    ``fraction``, with its own look-ahead caches and its scorer saved under
    ``<workdir>/lookahead<percent>/``."""

    def method(t, sparsity, study):
        name = f"lookahead{round(100 * fraction)}"
        views = study.__dict__.setdefault("_lookahead_views", {})
        if name not in views:
            config = study.config.copy_and_resolve_references()
            config.lookahead_fraction = fraction
            views[name] = types.SimpleNamespace(
                config=config, recipe=study.recipe, datasets=study.datasets,
                workdir=os.path.join(study.workdir, name), learners=study.learners,
            )  # fmt: skip
            os.makedirs(views[name].workdir, exist_ok=True)
        return base(t, sparsity, views[name])

    return method


VARIANTS = {
    "autos_paths": autos_paths,
    "autos_lookahead": autos_lookahead,
    "autos_lookahead_paths": autos_lookahead_paths,
    "autos_lookahead30_paths": with_lookahead(0.3, autos_lookahead_paths),
    "synflow_ahead": synflow_ahead,
    "synflow_ahead30": with_lookahead(0.3, synflow_ahead),
    "magnitude_ahead": magnitude_ahead,
}
"""The variants by name (registered in ``methods.METHODS``)."""
