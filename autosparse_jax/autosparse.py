"""AutoSparse as one fitted object: scorers, allocation model and provenance.

``fit`` learns, from ONE labelled IRP run, everything AutoSparse prunes with
(Liu, Cheng et al. 2024, "Learning effective pruning at initialization from
iterative pruning", arXiv 2408.14757): the paper's scorer (raw ``(w0, g0)``
against the fraction of rounds each weight survived, for a global
threshold), a within-layer scorer (layer-normalised ``(w0, g0)`` against the
label's quantile inside its layer) and an ``allocation.AllocationModel`` of
the run's per-layer densities. The ``AutoSparse`` value it returns yields a
criterion and an allocation for ``criteria.prune_at_init``; ``save`` and
``load`` keep it as one checksummed, versioned Orbax artifact.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import allocation as allocation_lib
from autosparse_jax import (
    checkpoint,
    criteria,
    data,
    evaluation,
    features,
    masks,
    models,
)
from autosparse_jax import irp as irp_lib
from autosparse_jax import scorer as scorer_lib
from autosparse_jax.types import ApplyFn, Batch, Mask, Params, PRNGKey, PrunableFn

FORMAT_VERSION = 1
"""Version of the saved artifact's layout; ``load`` refuses any other."""
PAPER_FEATURES = features.FeatureConfig()
"""The paper scorer's features: raw ``(w0, g0)``."""
WITHIN_FEATURES = features.FeatureConfig(normalization="layer")
"""The within-layer scorer's features: ``(w0, g0)`` divided by their layer RMS."""
_KIND = "autosparse"
_SCORERS = ("scorer", "global_scorer")
_PROBE_RTOL, _PROBE_ATOL = 1e-4, 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class AutoSparse:
    """A fitted AutoSparse: what prunes a new network at initialisation.

    Attributes:
      scorer: the within-layer ranking (``WITHIN_FEATURES``), used with the
        learned allocation.
      global_scorer: the paper's scorer (``PAPER_FEATURES``), used with one
        global threshold.
      allocation_model: per-layer densities learned from the IRP run.
      provenance: JSON facts: source model, dataset, IRP config, seed, fit
        settings and held-out metrics.
      criterion: ``scorer`` as a criterion (``scorer.ScorerCriterion``).
      paper_criterion: ``global_scorer`` as a criterion.
      allocation: ``allocation.learned(allocation_model)``.

    The criteria are built once per object (compared by identity), so a
    jitted ``prune_at_init`` compiles once per ``AutoSparse``.
    """

    scorer: scorer_lib.Scorer
    global_scorer: scorer_lib.Scorer
    allocation_model: allocation_lib.AllocationModel
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    criterion: scorer_lib.ScorerCriterion = dataclasses.field(init=False)
    paper_criterion: scorer_lib.ScorerCriterion = dataclasses.field(init=False)
    allocation: allocation_lib.Allocation = dataclasses.field(init=False)

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("criterion", scorer_lib.as_criterion(self.scorer))
        set_("paper_criterion", scorer_lib.as_criterion(self.global_scorer))
        set_("allocation", allocation_lib.learned(self.allocation_model))

    def prune(
        self,
        key: PRNGKey,
        params: Params,
        batch: Batch,
        *,
        apply_fn: ApplyFn,
        sparsity: float | jax.Array,
        num_rounds: int = 1,
        prunable: PrunableFn = masks.is_prunable,
    ) -> Mask:
        """``prune_at_init`` with ``criterion`` and the learned ``allocation``.

        Example:
          >>> mask = autos.prune(key, params, batch, apply_fn=apply_fn,
          ...                    sparsity=0.99)
        """
        return criteria.prune_at_init(
            key,
            self.criterion,
            params,
            batch,
            apply_fn=apply_fn,
            sparsity=sparsity,
            allocation=self.allocation,
            num_rounds=num_rounds,
            prunable=prunable,
        )


# --------------------------------------------------------------------- fit


def _source_model(labels: irp_lib.IRPLabels, model: nn.Module | None) -> nn.Module:
    if model is not None:
        return model
    meta = labels.metadata
    if meta.get("model") not in models.MODELS:
        raise ValueError(
            f"The labelled run names model {meta.get('model')!r}, not one of "
            "models.MODELS; pass model= (the Flax module the IRP run trained)."
        )
    info = data.DATASETS.get(meta.get("dataset"))
    kwargs = {} if info is None else {"num_classes": info.num_classes}
    return models.get_model(meta["model"], **kwargs)


def _stacked_features(params, batches, apply_fn, fc, prunable) -> jax.Array:
    feats = features.compute_features(
        params, batches, apply_fn=apply_fn, prunable=prunable, **dataclasses.asdict(fc)
    )
    return features.stack_features(feats, prunable=prunable)


def fit(
    key: PRNGKey,
    labels: irp_lib.IRPLabels,
    batches: Batch,
    *,
    model: nn.Module | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    scorer_config: scorer_lib.ScorerConfig = scorer_lib.PRESETS["default"],
    prunable: PrunableFn = masks.is_prunable,
    progress: bool | None = None,
) -> AutoSparse:
    """Fits AutoSparse on one labelled IRP run (host).

    Features are computed on the run's initial network (``labels``) over
    ``batches`` of its training data. Both scorers train with ``key`` (they
    differ in features and targets) and keep the checkpoint with the best
    Spearman on the held-out weights ``validation``; the allocation model is
    fitted on the run's per-layer densities after every round.

    Args:
      key: PRNG key of the scorers' initialisation and minibatches.
      labels: a labelled IRP run (``irp.load_labels``).
      batches: one or ``K`` stacked preprocessed batches of the run's
        training data (``data.sample_batches``).
      model: the Flax module of the run; ``None`` builds
        ``labels.metadata["model"]`` from ``models.MODELS``.
      validation: ``(fit_idx, held_out_idx)`` weight indices (stacked order);
        ``None``: a random 10 % held out (``evaluation.split_weights`` with a
        seed drawn from ``key``).
      scorer_config: the scorers' architecture and recipe.
      prunable: predicate ``(path, leaf) -> bool``. Static.
      progress: tqdm bars; ``None``: only on a terminal.

    Returns:
      The fitted ``AutoSparse``.

    Raises:
      ValueError: on labels that do not match the model, or a bad split.

    Example:
      >>> labels = irp.load_labels("experiments/results/irp_fmnist_lenet300/labels")
      >>> autos = fit(key, labels, data.sample_batches(k, train, 4, 256, cfg))
    """
    meta = labels.metadata
    model = _source_model(labels, model)
    apply_fn = models.make_apply_fn(model, labels.init_model_state)
    params = labels.init_params
    y = np.asarray(features.stack_leaves(labels.counts, prunable=prunable))
    y = y / meta["num_rounds"]
    if validation is None:
        seed = int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1))
        validation = evaluation.split_weights(seed, len(y), 0.1)
    fit_idx, val_idx = (np.asarray(i) for i in validation)
    layer_ids = features.layer_ids(params, prunable=prunable)
    targets = {
        "scorer": (WITHIN_FEATURES, scorer_lib.within_layer_targets(y, layer_ids)),
        "global_scorer": (PAPER_FEATURES, y),
    }
    fitted, history = {}, {}
    for name in ("global_scorer", "scorer"):
        fc, target = targets[name]
        x = _stacked_features(params, batches, apply_fn, fc, prunable)
        fitted[name], history[name] = scorer_lib.train_scorer(
            key,
            x[fit_idx],
            target[fit_idx],
            config=scorer_config,
            feature_config=fc,
            validation=(x[val_idx], target[val_idx]),
            progress=progress,
        )
    phi = allocation_lib.layer_features(
        params,
        apply_fn=apply_fn,
        input_shape=allocation_lib.input_shape_of(batches),
        prunable=prunable,
    )
    allocation_model = allocation_lib.fit_allocation(
        phi,
        allocation_lib.layer_densities(labels.masks[1:], prunable=prunable),
        allocation_lib.layer_sizes(params, prunable=prunable),
        metadata=(("model", meta.get("model")), ("seed", meta.get("seed"))),
    )
    provenance = {
        "source_model": meta.get("model", type(model).__name__),
        "dataset": meta.get("dataset"),
        "seed": meta.get("seed"),
        "irp_config": meta.get("irp_config"),
        "num_weights": len(y),
        "num_held_out": len(val_idx),
        "scorer_config": dataclasses.asdict(scorer_config),
        # The selected checkpoint's Spearman on the held-out weights.
        "held_out_spearman": {
            k: max(r["val_spearman"] for r in v) for k, v in history.items()
        },
    }
    return AutoSparse(
        scorer=fitted["scorer"],
        global_scorer=fitted["global_scorer"],
        allocation_model=allocation_model,
        provenance=provenance,
    )


def evaluate(
    autos: AutoSparse,
    labels: irp_lib.IRPLabels,
    batches: Batch,
    *,
    model: nn.Module | None = None,
    prunable: PrunableFn = masks.is_prunable,
) -> dict[str, dict[str, Any]]:
    """Ranking quality of both scorers on another labelled IRP run (host).

    Returns:
      ``{"scorer" | "global_scorer": {"spearman", "within_layer_spearman",
      "per_layer"}}`` against that run's survival counts.

    Example:
      >>> evaluate(autos, irp.load_labels(".../irp_fmnist_lenet300_seed1/labels"),
      ...          batches)["scorer"]["within_layer_spearman"]
    """
    model = _source_model(labels, model)
    apply_fn = models.make_apply_fn(model, labels.init_model_state)
    counts = np.asarray(features.stack_leaves(labels.counts, prunable=prunable))
    layer_ids = features.layer_ids(labels.init_params, prunable=prunable)
    report = {}
    for name in _SCORERS:
        sc = getattr(autos, name)
        fc = sc.feature_config
        x = _stacked_features(labels.init_params, batches, apply_fn, fc, prunable)
        pred = np.asarray(scorer_lib.predict_flat(sc, x, feature_config=fc))
        within = evaluation.within_layer_spearman(pred, counts, layer_ids)
        report[name] = {
            "spearman": evaluation.spearman(pred, counts),
            "within_layer_spearman": within["mean"],
            "per_layer": {str(k): v for k, v in within["per_layer"].items()},
        }
    return report


# --------------------------------------------------------------- save, load


def _probe_inputs():
    """A fixed tiny network and batch (numpy, no initialiser) to probe features."""
    params = {
        "a": {
            "kernel": np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3),
            "bias": np.full((3,), 0.1, np.float32),
        },
        "b": {
            "kernel": np.linspace(0.7, -0.5, 6, dtype=np.float32).reshape(3, 2),
            "bias": np.zeros((2,), np.float32),
        },
    }
    batch = {
        "image": np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(4, 2, 2, 1),
        "label": np.array([0, 1, 1, 0], np.int32),
    }

    def apply_fn(p, x):
        h = x.reshape(x.shape[0], -1) @ p["a"]["kernel"] + p["a"]["bias"][None, :]
        return jnp.tanh(h) @ p["b"]["kernel"] + p["b"]["bias"][None, :]

    return params, batch, apply_fn


def feature_probe(feature_config: features.FeatureConfig) -> np.ndarray:
    """``[18, F]`` features of a fixed tiny network: how this library makes them.

    Saved with an artifact and recomputed on ``load``, so a scorer is never
    fed features that this version of the library computes differently.
    """
    params, batch, apply_fn = _probe_inputs()
    x = _stacked_features(params, batch, apply_fn, feature_config, masks.is_prunable)
    return np.asarray(x, np.float64)


def _variables(autos: AutoSparse) -> dict[str, Any]:
    return {name: getattr(autos, name).variables for name in _SCORERS}


def _metadata(autos: AutoSparse) -> dict[str, Any]:
    scorers = {}
    for name in _SCORERS:
        sc = getattr(autos, name)
        scorers[name] = {
            "scorer_config": dataclasses.asdict(sc.config),
            "feature_config": dataclasses.asdict(sc.feature_config),
            "feature_probe": feature_probe(sc.feature_config).tolist(),
        }
    model = dataclasses.asdict(autos.allocation_model)
    model["metadata"] = [list(kv) for kv in autos.allocation_model.metadata]
    return {
        "kind": _KIND,
        "format_version": FORMAT_VERSION,
        "scorers": scorers,
        "allocation_model": model,
        "provenance": json.loads(json.dumps(dict(autos.provenance))),
    }


def save(directory: str | os.PathLike, autos: AutoSparse) -> None:
    """Saves ``autos`` as one Orbax artifact with a checksum (host; never overwrites).

    Example:
      >>> save("runs/autos_lenet300", autos)
    """
    checkpoint.save(directory, _variables(autos), metadata=_metadata(autos))


def _refuse(directory: Any, problem: str) -> ValueError:
    return ValueError(
        f"Cannot load an AutoSparse artifact from {os.fspath(directory)}: {problem}"
    )


def _read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    try:
        meta = checkpoint.load_metadata(directory)
    except checkpoint.CorruptCheckpointError as err:
        raise _refuse(directory, err.problem) from err
    if meta.get("kind") != _KIND:
        raise _refuse(
            directory,
            f"it holds kind={meta.get('kind')!r}, not an AutoSparse artifact "
            "(write one with autosparse.save).",
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise _refuse(
            directory,
            f"its format version is {meta.get('format_version')!r} but this "
            f"library reads version {FORMAT_VERSION}; refit it with autosparse.fit "
            "or use the library version that wrote it.",
        )
    return meta


def _scorer(directory, name, spec, variables) -> scorer_lib.Scorer:
    sc = dict(spec["scorer_config"])
    sc["hidden_sizes"] = tuple(sc["hidden_sizes"])
    try:
        fc = features.FeatureConfig(**spec["feature_config"])
        config = scorer_lib.ScorerConfig(**sc)
    except (TypeError, ValueError) as err:
        raise _refuse(
            directory, f"its {name} configuration is unknown here ({err})."
        ) from err
    probe = feature_probe(fc)
    saved = np.asarray(spec["feature_probe"], np.float64)
    if saved.shape != probe.shape or not np.allclose(
        probe, saved, rtol=_PROBE_RTOL, atol=_PROBE_ATOL
    ):
        raise _refuse(
            directory,
            f"its {name} was trained on features {fc} that this library version "
            "computes differently (the saved feature probe does not match); "
            "refit it with autosparse.fit.",
        )
    return scorer_lib.Scorer(variables=variables, config=config, feature_config=fc)


def load(directory: str | os.PathLike) -> AutoSparse:
    """Loads an artifact written by ``save``, refusing anything it cannot vouch for.

    Raises:
      ValueError: another kind or format version, a truncated or tampered
        file (checksum), or features this library computes another way.
      FileNotFoundError: no artifact at ``directory``.

    Example:
      >>> autos = load("runs/autos_lenet300")
    """
    meta = _read_metadata(directory)
    try:  # Verifies the checksum of the arrays and the metadata.
        tree = checkpoint.restore(directory, require_checksum=True)
    except checkpoint.CorruptCheckpointError as err:
        raise _refuse(directory, err.problem) from err
    if set(tree) != set(_SCORERS):
        raise _refuse(directory, f"it holds {sorted(tree)}, expected {_SCORERS}.")
    scorers = {
        name: _scorer(directory, name, meta["scorers"][name], tree[name])
        for name in _SCORERS
    }
    model = dict(meta["allocation_model"])
    model = allocation_lib.AllocationModel(
        **{k: tuple(v) for k, v in model.items() if k != "metadata"},
        metadata=tuple(tuple(kv) for kv in model["metadata"]),
    )
    return AutoSparse(**scorers, allocation_model=model, provenance=meta["provenance"])
