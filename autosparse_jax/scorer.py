"""AutoS: a Flax MLP that predicts IRP survival from per-weight features.

The scorer is trained on one labelled IRP run (every prunable weight is one
sample: its features at initialisation and the fraction of rounds it survived)
and then prunes new networks at initialisation (Liu, Cheng et al. 2024,
"Learning effective pruning at initialization from iterative pruning",
arXiv 2408.14757).
"""

import dataclasses
import functools
import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from autosparse_jax import _names, checkpoint, evaluation, features, masks, train
from autosparse_jax._checks import is_int
from autosparse_jax.types import (
    ApplyFn,
    Batch,
    Features,
    Mask,
    Params,
    PRNGKey,
    PrunableFn,
    Scores,
)

Loss = Literal["mse", "ranking"]
_LOSSES = ("mse", "ranking")
_KIND = "autos_scorer"
PREDICT_CHUNK = 65_536
"""Weights scored per step of ``predict_flat`` (bounds activation memory)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScorerConfig:
    """The scorer's architecture and training recipe.

    Attributes:
      hidden_sizes: widths of the hidden ReLU layers.
      batch_norm: BatchNorm before each ReLU (the authors' predictor).
      loss: ``"mse"`` against the survival fraction, or ``"ranking"``: the
        pairwise logistic loss ``softplus(-sign(y_a - y_b) (s_a - s_b))`` over
        the two halves of each minibatch (pairs with equal labels skipped).
      learning_rate: Adam's learning rate (constant).
      num_steps: optimisation steps, a multiple of ``eval_every``.
      batch_size: weights per step (sampled with replacement).
      eval_every: steps between held-out evaluations (checkpoint selection).
    """

    hidden_sizes: tuple[int, ...] = (32, 32)
    batch_norm: bool = False
    loss: Loss = "mse"
    learning_rate: float = 3e-3
    num_steps: int = 2_000
    batch_size: int = 4_096
    eval_every: int = 250

    def __post_init__(self):
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}.")
        for field in ("num_steps", "eval_every", "batch_size"):
            value = getattr(self, field)
            if not is_int(value) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}.")
        lr = self.learning_rate
        if not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
            raise ValueError(
                f"learning_rate must be a positive finite number, got {lr!r}."
            )
        sizes = self.hidden_sizes
        if not isinstance(sizes, tuple) or not all(is_int(w) and w > 0 for w in sizes):
            raise ValueError(
                f"hidden_sizes must be positive ints in a tuple (one per hidden "
                f"layer), got {sizes!r}."
            )
        if self.num_steps % self.eval_every:
            raise ValueError(
                f"num_steps ({self.num_steps}) must be a multiple of eval_every "
                f"({self.eval_every}): training runs one compiled chunk of "
                "eval_every steps between evaluations."
            )
        if self.loss == "ranking" and self.batch_size < 2:
            raise ValueError("the ranking loss needs batch_size >= 2.")


PRESETS: Mapping[str, ScorerConfig] = _names.NameTable(
    "scorer preset",
    {
        "default": ScorerConfig(),
        # The authors' simplest predictor: 10 epochs of a 266k-weight network
        # at batch 4,096 (650 steps), MSE, Adam lr 0.01.
        "paper": ScorerConfig(
            hidden_sizes=(16, 64, 1024, 1024, 64),
            batch_norm=True,
            loss="mse",
            learning_rate=0.01,
            num_steps=650,
            batch_size=4_096,
            eval_every=65,
        ),
    },
)
"""Read-only: preset name -> ``ScorerConfig``."""


class ScorerMLP(nn.Module):
    """``[N, F] -> [N]``: Dense (+ BatchNorm) + ReLU per hidden size, then Dense(1)."""

    hidden_sizes: Sequence[int] = (32, 32)
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for width in self.hidden_sizes:
            x = nn.Dense(width)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
        return nn.Dense(1)(x)[:, 0]


@flax.struct.dataclass
class Scorer:
    """A trained scorer: its variables and the configs that define its inputs.

    Attributes:
      variables: ``{"params", "batch_stats" (with BatchNorm), "feature_mean"
        [F], "feature_std" [F]}``; features are standardised with the stored
        statistics of the training features.
      config: the ``ScorerConfig`` (static).
      feature_config: how its features were computed (static).
    """

    variables: dict[str, Any]
    config: ScorerConfig = flax.struct.field(pytree_node=False)
    feature_config: features.FeatureConfig = flax.struct.field(pytree_node=False)


def _model(config: ScorerConfig) -> ScorerMLP:
    return ScorerMLP(hidden_sizes=config.hidden_sizes, batch_norm=config.batch_norm)


def _check_width(scorer: Scorer, width: int) -> None:
    fc = scorer.feature_config
    expected = scorer.variables["feature_mean"].shape[0]
    if width != expected:
        raise ValueError(
            f"The scorer was trained on {expected} features (feature_set="
            f"{fc.feature_set!r}: {', '.join(fc.names)}) but got features of width "
            f"{width}. Compute them with features.compute_features(..., "
            f"feature_set={fc.feature_set!r}, gradient={fc.gradient!r}, "
            f"normalization={fc.normalization!r}), or use autosparse_prune."
        )


def _standardize(variables: dict[str, Any], x: jax.Array) -> jax.Array:
    """``(x - mean) / std`` with the stored training statistics, ``[N, F]``."""
    mean, std = variables["feature_mean"], variables["feature_std"]
    return (x - mean[None, :]) / std[None, :]


# -------------------------------------------------------------- prediction


def _check_feature_config(scorer: Scorer, feature_config: Any) -> None:
    if feature_config != scorer.feature_config:
        raise ValueError(
            f"The scorer was trained on features made with {scorer.feature_config}, "
            f"but these were made with {feature_config}; a scorer only ranks "
            "features computed the way it was trained. Compute them with "
            "features.compute_features(..., **dataclasses.asdict("
            "scorer.feature_config)), or prune with scorer.as_criterion(scorer)."
        )


def predict_flat(
    scorer: Scorer, x: jax.Array, *, feature_config: features.FeatureConfig
) -> jax.Array:
    """Scores ``[N, F]`` features in chunks of ``PREDICT_CHUNK``: ``[N]`` float32.

    Args:
      scorer: a trained ``Scorer``.
      x: ``[N, F]`` stacked features (``features.stack_features``).
      feature_config: how ``x`` was computed; must be the scorer's. Static.

    Raises:
      ValueError: ``x`` is not ``[N, F]`` with the scorer's ``F``, or was made
        with another ``FeatureConfig``, or (concrete outside ``jax.jit``) a
        prediction is NaN or inf. Under ``jax.jit`` non-finite predictions are
        returned; ``masks.mask_from_scores`` ranks NaN lowest.

    Example:
      >>> s = predict_flat(scorer, stack_features(feats),
      ...                  feature_config=scorer.feature_config)
    """
    _check_feature_config(scorer, feature_config)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, F], got shape {x.shape}.")
    _check_width(scorer, x.shape[1])
    v = scorer.variables
    x = _standardize(v, x)
    n = x.shape[0]
    chunk = min(PREDICT_CHUNK, n)
    padded = jnp.pad(x, ((0, -n % chunk), (0, 0))).reshape(-1, chunk, x.shape[1])
    model = _model(scorer.config)
    model_vars = {k: v[k] for k in ("params", "batch_stats") if k in v}
    out = jax.lax.map(lambda c: model.apply(model_vars, c), padded).reshape(-1)[:n]
    if masks._is_concrete(out):
        bad = int(jnp.sum(~jnp.isfinite(out)))
        if bad:
            raise ValueError(
                f"the scorer predicted NaN or inf for {bad} of {n} weights: its "
                "variables or these features are not finite (a diverged or "
                "corrupt scorer, or NaN features); retrain or reload it."
            )
    return out


def predict_scores(
    scorer: Scorer,
    feats: Features,
    *,
    feature_config: features.FeatureConfig,
    prunable: PrunableFn = masks.is_prunable,
) -> Scores:
    """Predicted survival scores parallel to the params (non-prunable: 0).

    Args:
      scorer: a trained ``Scorer``.
      feats: features from ``features.compute_features`` (leaf ``shape + (F,)``).
      feature_config: how ``feats`` were computed; must be the scorer's.
      prunable: predicate ``(path, leaf) -> bool`` on the params' leaves.

    Raises:
      ValueError: the features were made with another ``FeatureConfig`` or
        their width differs from the scorer's.

    Example:
      >>> scores = predict_scores(scorer, feats, feature_config=FeatureConfig())
    """
    flat = predict_flat(
        scorer,
        features.stack_features(feats, prunable=prunable),
        feature_config=feature_config,
    )
    like = jax.tree.map(lambda f: jax.ShapeDtypeStruct(f.shape[:-1], f.dtype), feats)
    return features.unstack_scores(flat, like, prunable=prunable)


@dataclasses.dataclass(frozen=True, eq=False)
class ScorerCriterion:
    """A trained scorer as a pruning criterion (the uniform criterion signature).

    ``criterion(key, params, batch, *, apply_fn, mask)`` computes the features
    the scorer was trained on (its ``feature_config``) on the masked network
    and predicts a score per weight, so AutoS prunes through
    ``criteria.prune_at_init`` like every other criterion, with any
    allocation and any number of rounds. Hashed and compared by identity: a
    static argument under ``jax.jit`` (keep one object to compile once).

    Attributes:
      scorer: the trained ``Scorer``.
    """

    scorer: Scorer

    def __call__(
        self,
        key: PRNGKey,
        params: Params,
        batch: Batch,
        *,
        apply_fn: ApplyFn,
        mask: Mask,
        prunable: PrunableFn = masks.is_prunable,
    ) -> Scores:
        del key  # The features are deterministic.
        fc = self.scorer.feature_config
        feats = features.compute_features(
            masks.apply_mask(params, mask),
            batch,
            apply_fn=apply_fn,
            prunable=prunable,
            **dataclasses.asdict(fc),
        )
        return predict_scores(self.scorer, feats, feature_config=fc, prunable=prunable)


def as_criterion(scorer: Scorer) -> ScorerCriterion:
    """``ScorerCriterion(scorer)``: AutoS as a criterion for ``prune_at_init``.

    Example:
      >>> autos = as_criterion(scorer)
      >>> mask = criteria.prune_at_init(key, autos, params, batch,
      ...     apply_fn=apply_fn, sparsity=0.99, allocation=allocation.erk())
    """
    if not isinstance(scorer, Scorer):
        raise ValueError(f"as_criterion needs a Scorer, got {type(scorer).__name__}.")
    return ScorerCriterion(scorer)


def within_layer_targets(y: np.ndarray, layer_ids: np.ndarray) -> np.ndarray:
    """Survival labels as their quantile within the weight's layer, in ``[0, 1]``.

    Trains a scorer (with ``normalization="layer"`` features) on the
    within-layer ranking only: the allocation across layers is left to
    ``allocation``. Ties get their average rank.

    Example:
      >>> y_within = within_layer_targets(y, features.layer_ids(params))
    """
    from scipy import stats

    y, layer_ids = np.asarray(y), np.asarray(layer_ids)
    out = np.zeros(y.shape, np.float32)
    for layer in np.unique(layer_ids):
        idx = layer_ids == layer
        ranks = stats.rankdata(y[idx])
        out[idx] = (ranks - 1) / max(idx.sum() - 1, 1)
    return out


# ---------------------------------------------------------------- training


def init_scorer(
    key: PRNGKey,
    feature_mean: jax.Array,
    feature_std: jax.Array,
    *,
    config: ScorerConfig,
    feature_config: features.FeatureConfig,
) -> Scorer:
    """A freshly initialised ``Scorer`` with the given standardisation.

    Example:
      >>> scorer = init_scorer(key, x.mean(0), x.std(0), config=ScorerConfig(),
      ...                      feature_config=features.FeatureConfig())
    """
    num = feature_mean.shape[0]
    if num != features.num_features(feature_config.feature_set):
        raise ValueError(
            f"{num} features, but feature_set {feature_config.feature_set!r} has "
            f"{features.num_features(feature_config.feature_set)}."
        )
    variables = _model(config).init(key, jnp.zeros((2, num), jnp.float32))
    std = jnp.where(feature_std > 0, feature_std, 1.0)
    return Scorer(
        variables={**variables, "feature_mean": feature_mean, "feature_std": std},
        config=config,
        feature_config=feature_config,
    )


def _loss(config: ScorerConfig, pred: jax.Array, y: jax.Array) -> jax.Array:
    if config.loss == "mse":
        return jnp.mean(jnp.square(pred - y))
    half = pred.shape[0] // 2
    sign = jnp.sign(y[:half] - y[half : 2 * half])
    diff = pred[:half] - pred[half : 2 * half]
    pairs = jax.nn.softplus(-sign * diff) * (sign != 0)
    return jnp.sum(pairs) / jnp.maximum(jnp.sum(sign != 0), 1)


def _train_chunk_fn(config: ScorerConfig, optimizer: optax.GradientTransformation):
    """``eval_every`` Adam steps as one ``lax.scan`` (jitted once by the caller)."""
    model = _model(config)

    def step(carry, step_index):
        variables, opt_state, x, y, key = carry
        idx = jax.random.randint(
            jax.random.fold_in(key, step_index), (config.batch_size,), 0, x.shape[0]
        )
        xb = _standardize(variables, x[idx])

        def loss_fn(params):
            state = {k: variables[k] for k in ("batch_stats",) if k in variables}
            pred, new_state = model.apply(
                {"params": params, **state}, xb, train=True, mutable=list(state)
            )
            return _loss(config, pred, y[idx]), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            variables["params"]
        )
        updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        variables = {**variables, **new_state, "params": params}
        return (variables, opt_state, x, y, key), loss

    def run(variables, opt_state, x, y, key, start):
        steps = start + jnp.arange(config.eval_every)
        (variables, opt_state, *_), losses = jax.lax.scan(
            step, (variables, opt_state, x, y, key), steps
        )
        return variables, opt_state, jnp.mean(losses)

    return run


def _check_finite(arrays: Mapping[str, Any]) -> None:
    """Host check of training inputs: every value finite."""
    for name, a in arrays.items():
        if not bool(jnp.isfinite(a).all()):
            raise ValueError(
                f"{name} hold NaN or inf; a scorer trained on them predicts NaN. "
                "Drop or fix those weights' rows first."
            )


def _validate(scorer: Scorer, predict, x: jax.Array, y: np.ndarray) -> dict:
    """Held-out Spearman (``evaluation.spearman``: average ranks) and MSE."""
    pred = np.asarray(predict(scorer, x))
    return {
        "spearman": evaluation.spearman(pred, y),
        "mse": float(np.mean(np.square(pred - y))),
    }


def train_scorer(
    key: PRNGKey,
    x: jax.Array,
    y: jax.Array,
    *,
    config: ScorerConfig,
    feature_config: features.FeatureConfig,
    validation: tuple[jax.Array, jax.Array] | None = None,
    progress: bool | None = None,
) -> tuple[Scorer, list[dict[str, float]]]:
    """Trains a scorer with Adam; selects the checkpoint on held-out data (host).

    Training runs ``num_steps / eval_every`` calls of one jitted ``lax.scan``
    over ``eval_every`` minibatch steps (one compilation). After each call the
    scorer is evaluated on ``validation``, never on the training weights, and
    the one with the highest held-out Spearman correlation is returned (pruning
    uses only the ranking). Without ``validation`` the last one is returned.

    Args:
      key: PRNG key (initialisation and minibatch sampling).
      x: ``[N, F]`` training features.
      y: ``[N]`` targets, the survival fraction in ``[0, 1]``.
      config: the ``ScorerConfig``. Static.
      feature_config: how ``x`` was computed (stored in the scorer).
      validation: held-out ``([M, F], [M])``, e.g. a second IRP run.
      progress: tqdm bar over the chunks; ``None``: only on a terminal.

    Returns:
      The selected ``Scorer`` and one history row per evaluation
      (``step``, ``train_loss``, ``val_spearman``, ``val_mse``, ``seconds``).

    Raises:
      ValueError: on mismatched shapes, a feature width that does not match
        ``feature_config``, NaN or infinite features or targets, or a training
        loss that becomes NaN or infinite (diverged).

    Example:
      >>> scorer, history = train_scorer(key, x, y, config=PRESETS["default"],
      ...     feature_config=FeatureConfig(), validation=(x_val, y_val))
    """
    from tqdm.auto import tqdm

    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need x [N, F] and y [N], got {x.shape} and {y.shape}.")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    _check_finite({"features x": x, "targets y": y})
    init_key, data_key = jax.random.split(key)
    scorer = init_scorer(
        init_key,
        jnp.mean(x, 0),
        jnp.std(x, 0),
        config=config,
        feature_config=feature_config,
    )
    optimizer = optax.adam(config.learning_rate)
    opt_state = optimizer.init(scorer.variables["params"])
    run_chunk = jax.jit(_train_chunk_fn(config, optimizer))
    if validation is not None:
        x_val = jnp.asarray(validation[0], jnp.float32)
        y_val = np.asarray(validation[1], np.float32)
        _check_finite({"validation features": x_val, "validation targets": y_val})
        _check_width(scorer, x_val.shape[1])
        if y_val.shape != (x_val.shape[0],) or np.ptp(y_val) == 0:
            raise ValueError(
                "validation must be ([M, F], [M]) with targets that are not all "
                "equal (their rank correlation selects the checkpoint); hold out "
                "weights with different labels."
            )
        predict = jax.jit(
            functools.partial(predict_flat, feature_config=feature_config)
        )
    best, best_rho, history = None, float("-inf"), []
    variables = scorer.variables
    chunks = range(config.num_steps // config.eval_every)
    for c in tqdm(chunks, disable=not train._show_progress(progress), unit="chunk"):
        tic = time.perf_counter()
        variables, opt_state, loss = run_chunk(
            variables, opt_state, x, y, data_key, c * config.eval_every
        )
        current = scorer.replace(variables=variables)
        row = {"step": (c + 1) * config.eval_every, "train_loss": loss}
        row = {k: float(v) for k, v in jax.device_get(row).items()}
        if not math.isfinite(row["train_loss"]):
            raise ValueError(
                f"scorer training diverged: the train loss is {row['train_loss']} "
                f"after {row['step']} steps; lower learning_rate (now "
                f"{config.learning_rate}) or check the features' scale."
            )
        if validation is not None:
            metrics = _validate(current, predict, x_val, y_val)
            row.update({f"val_{k}": v for k, v in metrics.items()})
        row["seconds"] = time.perf_counter() - tic
        history.append(row)
        rho = row.get("val_spearman", float("nan"))
        if best is None or validation is None or rho > best_rho:
            # NaN (constant predictions) never wins; the first chunk is the fallback.
            best, best_rho = current, (float("-inf") if np.isnan(rho) else rho)
    return best, history


# --------------------------------------------------------------- save, load


def save_scorer(
    directory: str | os.PathLike,
    scorer: Scorer,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Saves a scorer with its configs and ``metadata`` (host; never overwrites).

    Args:
      directory: a new directory.
      scorer: the ``Scorer``.
      metadata: JSON-serialisable facts, e.g. the source model, dataset and
        IRP config, and the training history.

    Example:
      >>> save_scorer("runs/autos", scorer, metadata={"source_model": "lenet300_100"})
    """
    meta = {
        **dict(metadata or {}),
        "kind": _KIND,
        "scorer_config": dataclasses.asdict(scorer.config),
        "feature_config": dataclasses.asdict(scorer.feature_config),
    }
    checkpoint.save(directory, scorer.variables, metadata=meta)


def load_scorer(directory: str | os.PathLike) -> Scorer:
    """Loads a scorer written by ``save_scorer`` (host).

    Its metadata (source model, IRP config, ...) is
    ``checkpoint.load_metadata(directory)``.

    Raises:
      ValueError: ``directory`` holds something else, or its stored width does
        not match its feature set.
    """
    meta = checkpoint.load_metadata(directory)
    if meta.get("kind") != _KIND:
        raise ValueError(
            f"{directory} is not a saved scorer (kind={meta.get('kind')!r}); "
            "write one with scorer.save_scorer."
        )
    sc = dict(meta["scorer_config"])
    sc["hidden_sizes"] = tuple(sc["hidden_sizes"])
    scorer = Scorer(
        variables=checkpoint.restore(directory),
        config=ScorerConfig(**sc),
        feature_config=features.FeatureConfig(**meta["feature_config"]),
    )
    _check_width(scorer, features.num_features(scorer.feature_config.feature_set))
    return scorer
