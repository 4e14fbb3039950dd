"""Per-weight features at initialisation for the AutoS scorer.

A feature is a function of ONE weight: its scalars at initialisation
(``WeightInputs``: the weight ``w0``, the loss gradient ``g0``, GraSP's
Hessian-gradient product, the SynFlow score, the look-ahead weight and the
statistics of its input and output units, ``unit_stats``) and the static
context of its layer (``LeafContext``). ``compute_features`` lifts the
per-weight functions of a feature set over every prunable weight with
``jax.vmap`` (Liu, Cheng et al. 2024, "Learning effective pruning at
initialization from iterative pruning", arXiv 2408.14757).
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import _names, criteria, masks, unit_stats
from autosparse_jax.layers import LeafContext, layer_contexts
from autosparse_jax.types import (
    ApplyFn,
    Batch,
    Features,
    Params,
    PrunableFn,
    Scores,
)

Gradient = Literal["mean", "sum"]
Normalization = Literal["none", "network", "layer"]
_GRADIENTS = ("mean", "sum")
_NORMALIZATIONS = ("none", "network", "layer")
_TINY = 1e-30


class WeightInputs(NamedTuple):
    """Traced scalars of one weight at initialisation (each of shape ``()``).

    ``ahead`` is the weight after a few training steps from initialisation
    (``lookahead.train_ahead``); the mask built from it still applies to the
    initial weights. The last five are the context of the weight ``W[..., j,
    i]`` from input unit ``j`` to output unit ``i`` (for a conv kernel the
    input and output channel; ``unit_stats``): ``input_rms`` is ``‖x_j‖``, the
    RMS of the layer's input ``j`` over the scoring batches; ``weight_row`` /
    ``grad_row`` the RMS of ``w0`` / ``g0`` over the weights leaving input
    ``j``; ``weight_col`` / ``grad_col`` over those entering unit ``i``.
    Inputs a feature set does not read are zeros (not computed).
    """

    weight: jax.Array
    grad: jax.Array
    hess_grad: jax.Array
    synflow: jax.Array
    ahead: jax.Array
    input_rms: jax.Array
    weight_row: jax.Array
    weight_col: jax.Array
    grad_row: jax.Array
    grad_col: jax.Array


FeatureFn = Callable[[WeightInputs, LeafContext], jax.Array]
"""``fn(inputs, context) -> [k]`` float32, for one weight."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """How features were computed; a scorer only accepts features made this way.

    Attributes:
      feature_set: a key of ``FEATURE_SETS``.
      gradient: ``"mean"`` of the per-batch mean gradients (default) or their
        ``"sum"`` (the authors' code, summed over the whole training set).
      normalization: ``"none"``; ``"network"`` divides each scalar input by its
        root mean square over all prunable weights of the network; ``"layer"``
        by its root mean square over the weight's layer (scale-free within a
        layer; the between-layer scale is then only in the context features).
    """

    feature_set: str = "paper"
    gradient: Gradient = "mean"
    normalization: Normalization = "none"

    def __post_init__(self):
        _check_choice("feature_set", self.feature_set, tuple(FEATURE_SETS))
        _check_choice("gradient", self.gradient, _GRADIENTS)
        _check_choice("normalization", self.normalization, _NORMALIZATIONS)

    @property
    def names(self) -> tuple[str, ...]:
        """The feature names, one per column."""
        return FEATURE_NAMES[self.feature_set]


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}.")


# ------------------------------------------------------ per-weight features


def initial_weight(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[w0]``."""
    del ctx
    return x.weight[None]


def initial_grad(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[g0]``."""
    del ctx
    return x.grad[None]


def log_snip(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[log |w0 * g0|]``: the SNIP saliency on a log scale."""
    del ctx
    return jnp.log(jnp.maximum(jnp.abs(x.weight * x.grad), _TINY))[None]


def grasp_term(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[w0 * Hg]``: GraSP's keep-score (signed)."""
    del ctx
    return (x.weight * x.hess_grad)[None]


def log_synflow(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[log synflow]``: the one-shot SynFlow score on a log scale."""
    del ctx
    return jnp.log(jnp.maximum(x.synflow, _TINY))[None]


def ahead_weight(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[w_k]``: the weight after the look-ahead steps."""
    del ctx
    return x.ahead[None]


def ahead_growth(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[|w_k| - |w0|]``: how much the weight grew in the look-ahead steps."""
    del ctx
    return (jnp.abs(x.ahead) - jnp.abs(x.weight))[None]


def input_activation(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[‖x_j‖]``: the RMS activation of the weight's input unit."""
    del ctx
    return x.input_rms[None]


def wanda_at_init(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[|w0| ‖x_j‖]``: Wanda's score (Sun et al. 2024) at initialisation."""
    del ctx
    return (jnp.abs(x.weight) * x.input_rms)[None]


def weight_unit_rms(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[rms w0[j, :], rms w0[:, i]]``: the weights of its input and its unit."""
    del ctx
    return jnp.stack([x.weight_row, x.weight_col])


def grad_unit_rms(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[rms g0[j, :], rms g0[:, i]]``: the gradients of its input and its unit."""
    del ctx
    return jnp.stack([x.grad_row, x.grad_col])


def layer_shape(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[log fan_in, log fan_out]`` of the weight's layer."""
    del x
    return jnp.log(jnp.array([ctx.fan_in, ctx.fan_out], jnp.float32))


def relative_depth(x: WeightInputs, ctx: LeafContext) -> jax.Array:
    """``[layer_index / (num_layers - 1)]``: 0 at the input, 1 at the output."""
    del x
    return jnp.array([ctx.layer_index / max(ctx.num_layers - 1, 1)], jnp.float32)


_CONTEXT = (
    initial_weight,
    initial_grad,
    input_activation,
    wanda_at_init,
    weight_unit_rms,
    grad_unit_rms,
    log_synflow,
)
FEATURE_SETS: Mapping[str, tuple[FeatureFn, ...]] = _names.NameTable(
    "feature set",
    {
        "paper": (initial_weight, initial_grad),
        "extended": (
            initial_weight,
            initial_grad,
            log_snip,
            grasp_term,
            log_synflow,
            layer_shape,
            relative_depth,
        ),
        "lookahead": (initial_weight, initial_grad, ahead_weight, ahead_growth),
        "context": _CONTEXT,
        "context_lookahead": (*_CONTEXT, ahead_weight, ahead_growth),
    },
)
"""Read-only: feature set name -> per-weight feature functions."""

_CONTEXT_NAMES = (
    "w0",
    "g0",
    "|x_j|",
    "|w0|*|x_j|",
    "rms w0[j,:]",
    "rms w0[:,i]",
    "rms g0[j,:]",
    "rms g0[:,i]",
    "log synflow",
)
FEATURE_NAMES: Mapping[str, tuple[str, ...]] = _names.NameTable(
    "feature set",
    {
        "paper": ("w0", "g0"),
        "extended": (
            "w0",
            "g0",
            "log|w0*g0|",
            "w0*Hg",
            "log synflow",
            "log fan_in",
            "log fan_out",
            "relative depth",
        ),
        "lookahead": ("w0", "g0", "wk", "|wk|-|w0|"),
        "context": _CONTEXT_NAMES,
        "context_lookahead": (*_CONTEXT_NAMES, "wk", "|wk|-|w0|"),
    },
)
"""Read-only: feature set name -> column names."""

_NEEDS_HESS_GRAD = (grasp_term,)
_NEEDS_SYNFLOW = (log_synflow,)
_NEEDS_AHEAD = (ahead_weight, ahead_growth)
_NEEDS_INPUT_RMS = (input_activation, wanda_at_init)
_NEEDS_UNIT_RMS = (weight_unit_rms, grad_unit_rms)


# ------------------------------------------------------------ computation


def _leaf_features(
    inputs: WeightInputs, ctx: LeafContext, fns: Sequence[FeatureFn]
) -> jax.Array:
    """The features of every weight of one leaf: ``shape + (F,)``."""

    def one(x: WeightInputs) -> jax.Array:
        return jnp.concatenate([f(x, ctx) for f in fns]).astype(jnp.float32)

    flat = jax.tree.map(jnp.ravel, inputs)
    return jax.vmap(one)(flat).reshape(*inputs.weight.shape, -1)


def _weight_inputs(*leaves: jax.Array, units: bool) -> WeightInputs:
    """One leaf's ``WeightInputs``; the unit RMS fields are zeros unless ``units``."""
    w, g = leaves[0], leaves[1]
    if units:
        rows = (unit_stats.input_row_rms(w), unit_stats.unit_column_rms(w))
        stats = (*rows, unit_stats.input_row_rms(g), unit_stats.unit_column_rms(g))
    else:
        stats = (jnp.zeros_like(w),) * 4
    return WeightInputs(*leaves, *stats)


def _rms(xs: Sequence[jax.Array]) -> jax.Array:
    total = sum(jnp.sum(jnp.square(x)) for x in xs)
    return jnp.sqrt(total / sum(x.size for x in xs))


def _normalize(inputs: list[WeightInputs], normalization: str) -> list[WeightInputs]:
    """Divides each scalar input by its RMS over the network or the layer."""
    if normalization == "none":
        return inputs
    fields = range(len(WeightInputs._fields))
    if normalization == "network":
        scales = [_rms([x[f] for x in inputs]) for f in fields]
        per_leaf = [scales] * len(inputs)
    else:
        per_leaf = [[_rms([x[f]]) for f in fields] for x in inputs]
    return [
        WeightInputs(
            *(v / jnp.where(s > 0, s, 1.0) for v, s in zip(x, sc, strict=True))
        )
        for x, sc in zip(inputs, per_leaf, strict=True)
    ]


def compute_features(
    params: Params,
    batches: Batch,
    *,
    apply_fn: ApplyFn,
    feature_set: str = "paper",
    gradient: Gradient = "mean",
    normalization: Normalization = "none",
    ahead_params: Params | None = None,
    prunable: PrunableFn = masks.is_prunable,
) -> Features:
    """Features of every weight at initialisation, parallel to ``params``.

    ``g0`` is the loss gradient averaged (or, with ``gradient="sum"``, summed)
    over the ``K`` batches of ``batches``; BatchNorm runs as ``apply_fn`` does.
    GraSP's ``Hg``, the SynFlow score and the unit statistics are computed only
    when the feature set reads them; the context sets (``"context"``,
    ``"context_lookahead"``) read each layer's input through its Linen module
    (``unit_stats.input_rms``). Each weight's features come from the set's per-weight
    functions, lifted over the leaf with ``jax.vmap``.

    Args:
      params: the params at initialisation.
      batches: one batch ``[B, ...]`` or ``K`` stacked batches ``[K, B, ...]``
        of preprocessed float images.
      apply_fn: ``apply_fn(params, x) -> logits``; for the context sets it
        must run Linen modules (``models.make_apply_fn``).
      feature_set: a key of ``FEATURE_SETS``. Static.
      gradient: ``"mean"`` or ``"sum"`` over the batches. Static.
      normalization: ``"none"``, ``"network"`` or ``"layer"`` (see
        ``FeatureConfig``). Static.
      ahead_params: the params after a few training steps from ``params``
        (``lookahead.train_ahead``), for the feature sets that read them
        (``"lookahead"``); ignored by the others.
      prunable: predicate ``(path, leaf) -> bool``. Static.

    Returns:
      float32 features; leaf shape ``param.shape + (F,)``, zeros for leaves
      that are not prunable (they are never scored).

    Raises:
      ValueError: on an unknown option, uint8 images, labels that are not
        integers in ``[0, C)`` (range checked when concrete), a look-ahead feature
        set without ``ahead_params``, or a context set whose ``apply_fn`` runs
        no Linen module for some prunable kernel.

    Example:
      >>> feats = compute_features(params, batches, apply_fn=apply_fn)
      >>> jax.tree.leaves(feats)[1].shape    # Dense_0/kernel (784, 300) + (2,)
      (784, 300, 2)
    """
    config = FeatureConfig(
        feature_set=feature_set, gradient=gradient, normalization=normalization
    )
    fns = FEATURE_SETS[config.feature_set]
    if any(f in _NEEDS_AHEAD for f in fns):
        if ahead_params is None:
            raise ValueError(
                f"feature set {feature_set!r} reads the weights after a few "
                "training steps; pass ahead_params=lookahead.train_ahead(...)."
            )
        if jax.tree.structure(ahead_params) != jax.tree.structure(params):
            raise ValueError(
                "ahead_params must be a tree like params (the same network "
                "after the look-ahead steps), got another structure."
            )
        ahead = ahead_params
    else:
        ahead = jax.tree.map(jnp.zeros_like, params)
    stacked = criteria._stacked(batches)
    criteria._check_labels(batches, params, apply_fn)
    contexts = layer_contexts(
        params,
        apply_fn=apply_fn,
        input_shape=stacked["image"].shape[2:],
        prunable=prunable,
    )
    mask = masks.dense_mask(params)
    grad = criteria.loss_gradient(params, stacked, apply_fn=apply_fn)
    if gradient == "sum":
        grad = jax.tree.map(lambda g: g * stacked["label"].shape[0], grad)
    zeros = jax.tree.map(jnp.zeros_like, params)
    hess_grad, synflow = zeros, zeros
    if any(f in _NEEDS_HESS_GRAD for f in fns):
        hess_grad = criteria.hessian_gradient_product(
            params, mask, stacked, apply_fn=apply_fn, prunable=prunable
        )
    if any(f in _NEEDS_SYNFLOW for f in fns):
        synflow = criteria.synflow_scores(
            params,
            mask,
            apply_fn=apply_fn,
            input_shape=stacked["image"].shape[2:],
            prunable=prunable,
        )
    act = zeros
    if any(f in _NEEDS_INPUT_RMS for f in fns):
        act = unit_stats.input_rms(
            params, stacked, apply_fn=apply_fn, prunable=prunable
        )
    leaves, treedef = jax.tree.flatten(params)
    trees = (params, grad, hess_grad, synflow, ahead, act)
    columns = [jax.tree.leaves(t) for t in trees]
    chosen = [i for i, c in enumerate(contexts) if c is not None]
    units = any(f in _NEEDS_UNIT_RMS for f in fns)
    inputs = _normalize(
        [_weight_inputs(*(col[i] for col in columns), units=units) for i in chosen],
        normalization,
    )
    out = [jnp.zeros((*np.shape(p), len(config.names)), jnp.float32) for p in leaves]
    for i, x in zip(chosen, inputs, strict=True):
        out[i] = _leaf_features(x, contexts[i], fns)
    return jax.tree.unflatten(treedef, out)


def num_features(feature_set: str) -> int:
    """The width ``F`` of a feature set."""
    _check_choice("feature_set", feature_set, tuple(FEATURE_SETS))
    return len(FEATURE_NAMES[feature_set])


# ------------------------------------------------------- flat <-> pytree


def stack_features(
    features: Features, *, prunable: PrunableFn = masks.is_prunable
) -> jax.Array:
    """The prunable weights' features as one ``[N, F]`` array (tree order).

    ``prunable`` is evaluated on the feature leaves without their last axis.

    Example:
      >>> x = stack_features(feats)      # [266200, 2] for LeNet-300-100
    """
    leaves = _prunable_leaves(features, prunable)
    return jnp.concatenate([x.reshape(-1, x.shape[-1]) for _, x in leaves])


def _prunable_leaves(features: Features, prunable: PrunableFn) -> list:
    items = jax.tree_util.tree_flatten_with_path(features)[0]
    chosen = [
        (i, x)
        for i, (path, x) in enumerate(items)
        if prunable(path, jax.ShapeDtypeStruct(np.shape(x)[:-1], x.dtype))
    ]
    if not chosen:
        raise ValueError("features have no prunable leaves; check prunable=.")
    return chosen


def stack_leaves(tree: Any, *, prunable: PrunableFn = masks.is_prunable) -> jax.Array:
    """The prunable leaves of a params-shaped tree (scores, labels) as ``[N]``.

    Example:
      >>> labels = stack_leaves(irp.survival_scores(result.masks))
    """
    items, flags, _ = masks._flatten(tree, prunable, "tree")
    return jnp.concatenate(
        [jnp.ravel(x) for (_, x), f in zip(items, flags, strict=True) if f]
    )


def layer_ids(
    params: Params, *, prunable: PrunableFn = masks.is_prunable
) -> np.ndarray:
    """The prunable leaf (0, 1, ...) of each weight of ``stack_leaves`` (host).

    Example:
      >>> layer_ids(params)        # [266200] int32 for LeNet-300-100
    """
    items, flags, _ = masks._flatten(params, prunable, "params")
    sizes = [
        math.prod(np.shape(x)) for (_, x), f in zip(items, flags, strict=True) if f
    ]
    return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)


def unstack_scores(
    flat: jax.Array, like: Params, *, prunable: PrunableFn = masks.is_prunable
) -> Scores:
    """Inverse of ``stack_leaves``: ``[N]`` scores back into a params-shaped tree.

    Non-prunable leaves get zeros (they are never scored).

    Raises:
      ValueError: ``flat`` does not have one entry per prunable weight.

    Example:
      >>> scores = unstack_scores(predictions, params)
    """
    items, flags, treedef = masks._flatten(like, prunable, "like")
    sizes = [
        math.prod(np.shape(x)) for (_, x), f in zip(items, flags, strict=True) if f
    ]
    if flat.shape != (sum(sizes),):
        raise ValueError(
            f"flat scores have shape {flat.shape}, expected ({sum(sizes)},): one "
            "per prunable weight of `like`, in stack_leaves order."
        )
    parts = iter(jnp.split(flat, np.cumsum(sizes)[:-1].tolist()))
    out = [
        next(parts).reshape(np.shape(x)) if f else jnp.zeros(np.shape(x), flat.dtype)
        for (_, x), f in zip(items, flags, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)
