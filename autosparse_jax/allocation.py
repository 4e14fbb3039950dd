"""Per-layer allocation of kept weights, and masks with an exact count per layer.

AutoS ranked globally (the paper) lets the scale of each layer's features
decide how many of its weights survive, which can remove whole layers at high
sparsity ("layer collapse"). This module splits the decision in two: how many
weights each prunable layer keeps (an *allocation*: ``"global"``, ``"learned"``
from an IRP run's per-layer densities, ``"erk"``, ``"uniform"``, or the
densities another criterion's global ranking would choose), and which ones
(any score, ranked within the layer). Every allocation keeps exactly
``round((1 - sparsity) * N)`` weights, at least one and at most all of every
layer, with a traced ``sparsity`` (one compilation for a sweep).
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import features, masks
from autosparse_jax.types import ApplyFn, Mask, Params, PrunableFn, Scores

ALLOCATIONS = ("global", "learned", "erk", "uniform", "scores")
LAYER_FEATURE_NAMES = (
    "log fan_in",
    "log fan_out",
    "log kernel size",
    "size fraction",
    "relative depth",
    "is first",
    "is output",
)
_BISECTION_STEPS = 64
_LOGIT_EPS = 1e-6


@dataclasses.dataclass(frozen=True, kw_only=True)
class AllocationModel:
    """A fitted map from layer context and global density to layer-density logits.

    ``logit(d_l) = t + w . phi_l + z (v . phi_l)`` with ``phi_l`` the layer's
    standardised ``LAYER_FEATURE_NAMES`` and ``z = -logit(D)`` for the global
    density ``D``; ``t`` is solved at prune time so the total is exact, so only
    the differences between layers are learned. Plain tuples: hashable (a
    static argument under ``jax.jit``) and JSON-serialisable.

    Attributes:
      weights: ``w``, one per layer feature.
      slopes: ``v``, one per layer feature.
      feature_mean: mean of each layer feature over the training layers.
      feature_std: their standard deviation (1 where constant).
      metadata: the source run, e.g. ``(("model", "lenet300_100"),)``.
    """

    weights: tuple[float, ...]
    slopes: tuple[float, ...]
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    metadata: tuple[tuple[str, Any], ...] = ()


# ------------------------------------------------------------ layer context


def layer_features(
    params: Params,
    *,
    apply_fn: ApplyFn,
    input_shape: Sequence[int],
    prunable: PrunableFn = masks.is_prunable,
) -> np.ndarray:
    """``[L, 7]`` context of each prunable layer (``LAYER_FEATURE_NAMES``), host.

    Layers are in ``jax.tree.leaves`` order (as ``features.layer_ids``); depth
    follows the forward pass (``features.layer_contexts``).

    Example:
      >>> phi = layer_features(params, apply_fn=apply_fn, input_shape=(28, 28, 1))
    """
    contexts = features.layer_contexts(
        params, apply_fn=apply_fn, input_shape=input_shape, prunable=prunable
    )
    chosen = [c for c in contexts if c is not None]
    total = sum(c.size for c in chosen)
    rows = []
    for c in chosen:
        receptive = c.fan_in * c.fan_out // c.size  # kh * kw; 1 for a dense kernel
        rows.append(
            [
                math.log(c.fan_in),
                math.log(c.fan_out),
                math.log(receptive),
                c.size / total,
                c.layer_index / max(c.num_layers - 1, 1),
                float(c.layer_index == 0),
                float(c.layer_index == c.num_layers - 1),
            ]
        )
    return np.asarray(rows, np.float64)


def layer_sizes(
    params: Params, *, prunable: PrunableFn = masks.is_prunable
) -> np.ndarray:
    """``[L]`` number of weights of each prunable layer (tree order), host."""
    items, flags, _ = masks._flatten(params, prunable, "params")
    return np.array(
        [math.prod(np.shape(x)) for (_, x), f in zip(items, flags, strict=True) if f]
    )


# ------------------------------------------------------------------ fitting


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _LOGIT_EPS, 1 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def fit_allocation(
    phi: np.ndarray,
    densities: np.ndarray,
    sizes: np.ndarray,
    *,
    l2: float = 1e-2,
    metadata: Sequence[tuple[str, Any]] = (),
) -> AllocationModel:
    """Fits an ``AllocationModel`` to observed per-layer densities (host).

    Weighted ridge regression in closed form: for every round ``e`` and layer
    ``l``, the residual ``w . phi_l + z_e (v . phi_l) - logit(d_el)`` is
    centred over the layers of its round (weights ``n_l / N``; the shift ``t``
    absorbs the mean) and its squares are minimised plus ``l2 (|w|^2 + |v|^2)``.

    Args:
      phi: ``[L, 7]`` layer features of the source network.
      densities: ``[E, L]`` kept fraction of each layer after each IRP round.
      sizes: ``[L]`` layer sizes.
      l2: ridge penalty (features are standardised).
      metadata: key-value pairs stored in the model.

    Returns:
      The fitted ``AllocationModel``.

    Raises:
      ValueError: on mismatched shapes.

    Example:
      >>> model = fit_allocation(phi, round_densities, sizes)
    """
    phi, densities = np.asarray(phi, np.float64), np.asarray(densities, np.float64)
    num_layers = phi.shape[0]
    if densities.ndim != 2 or densities.shape[1] != num_layers:
        raise ValueError(
            f"densities must be [E, L] with L = {num_layers} layers, got "
            f"{densities.shape}."
        )
    mean = phi.mean(0)
    std = np.where(phi.std(0) > 0, phi.std(0), 1.0)
    x = (phi - mean) / std
    weight = np.asarray(sizes, np.float64) / np.sum(sizes)
    global_density = densities @ weight
    rows, targets = [], []
    for d_e, big_d in zip(densities, global_density, strict=True):
        z = -_logit(np.array(big_d))
        design = np.concatenate([x, z * x], axis=1)  # [L, 2F]
        y = _logit(d_e)
        design = design - weight @ design  # centre over layers
        y = y - weight @ y
        rows.append(design * np.sqrt(weight)[:, None])
        targets.append(y * np.sqrt(weight))
    a, b = np.concatenate(rows), np.concatenate(targets)
    theta = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ b)
    num = phi.shape[1]
    return AllocationModel(
        weights=tuple(float(t) for t in theta[:num]),
        slopes=tuple(float(t) for t in theta[num:]),
        feature_mean=tuple(float(m) for m in mean),
        feature_std=tuple(float(s) for s in std),
        metadata=tuple(metadata),
    )


def predict_logits(
    model: AllocationModel, phi: np.ndarray, sparsity: float | jax.Array
) -> jax.Array:
    """``[L]`` relative layer-density logits at ``sparsity`` (up to a shift)."""
    x = (jnp.asarray(phi, jnp.float32) - jnp.asarray(model.feature_mean)[None, :]) / (
        jnp.asarray(model.feature_std)[None, :]
    )
    s = jnp.clip(jnp.asarray(sparsity, jnp.float32), _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    z = jnp.log(s) - jnp.log1p(-s)  # -logit(global density)
    return x @ jnp.asarray(model.weights) + z * (x @ jnp.asarray(model.slopes))


# ------------------------------------------------------------------- counts


def _solve_shift(
    density_fn, sizes: jax.Array, total: jax.Array, lo: jax.Array, hi: jax.Array
) -> jax.Array:
    """``t`` in ``[lo, hi]`` with ``sum(sizes * density_fn(t)) = total`` (bisection)."""

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        over = jnp.sum(sizes * density_fn(mid)) > total
        return jnp.where(over, lo, mid), jnp.where(over, mid, hi)

    bounds = (jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, step, bounds)
    return 0.5 * (lo + hi)


def _fill(amount: jax.Array, capacity: jax.Array, priority: jax.Array) -> jax.Array:
    """Spreads ``amount`` over layers in ``priority`` order (ties to the lower
    index): one each first (largest remainder), then up to each ``capacity``."""
    order = jnp.lexsort((jnp.arange(priority.shape[0]), priority))

    def take(amount, cap):
        cap = cap[order]
        taken = jnp.clip(amount - (jnp.cumsum(cap) - cap), 0, cap)
        return jnp.zeros_like(capacity).at[order].set(taken)

    first = take(amount, jnp.minimum(capacity, 1))
    return first + take(amount - jnp.sum(first), capacity - first)


def integer_counts(kept: jax.Array, sizes: np.ndarray, total: jax.Array) -> jax.Array:
    """Rounds real per-layer kept counts to integers with an exact total.

    Each layer keeps between 1 and all of its weights. After flooring and
    clipping, missing weights go to the layers with the largest fractional
    parts, and surplus ones (from layers raised to 1) are taken back from those
    with the smallest, as many per layer as it can give (ties to the lower
    layer index).

    Args:
      kept: ``[L]`` real counts, roughly summing to ``total``.
      sizes: ``[L]`` layer sizes (static).
      total: the exact number to keep, between ``L`` and ``sum(sizes)``.

    Returns:
      ``[L]`` int32 counts summing to ``total``.

    Example:
      >>> integer_counts(jnp.array([2.6, 1.2, 0.2]), np.array([10, 10, 10]), 4)
      Array([2, 1, 1], dtype=int32)
    """
    n = jnp.asarray(sizes, jnp.int32)
    kept = jnp.asarray(kept, jnp.float32)
    frac = kept - jnp.floor(kept)
    counts = jnp.clip(jnp.floor(kept).astype(jnp.int32), 1, n)
    rest = total - jnp.sum(counts)
    add = _fill(jnp.maximum(rest, 0), n - counts, -frac)
    remove = _fill(jnp.maximum(-rest, 0), counts - 1, frac)
    return counts + add - remove


def _total(sizes: np.ndarray, sparsity: float | jax.Array) -> jax.Array:
    total = masks._num_keep(sparsity, int(np.sum(sizes)))
    total = jnp.asarray(total, jnp.int32)
    return jnp.clip(total, len(sizes), int(np.sum(sizes)))


def counts_from_logits(
    logits: jax.Array, sizes: np.ndarray, sparsity: float | jax.Array
) -> jax.Array:
    """Per-layer counts with density ``sigmoid(logit_l + t)``, ``t`` solved."""
    n = jnp.asarray(sizes, jnp.float32)
    total = _total(sizes, sparsity)
    lo, hi = -jnp.max(logits) - 40.0, -jnp.min(logits) + 40.0
    t = _solve_shift(lambda t: jax.nn.sigmoid(logits + t), n, total, lo, hi)
    return integer_counts(n * jax.nn.sigmoid(logits + t), sizes, total)


def counts_erk(
    shapes: Sequence[tuple[int, ...]], sparsity: float | jax.Array, *, power: float
) -> jax.Array:
    """ERK (``power=1``) or uniform (``power=0``) counts: ``min(1, e^t raw_l)``."""
    sizes = np.array([math.prod(s) for s in shapes])
    raw = jnp.asarray([(sum(s) / math.prod(s)) ** power for s in shapes], jnp.float32)
    n = jnp.asarray(sizes, jnp.float32)
    total = _total(sizes, sparsity)
    lo, hi = -jnp.log(jnp.max(raw)) - 40.0, -jnp.log(jnp.min(raw)) + 1.0
    t = _solve_shift(lambda t: jnp.minimum(1.0, jnp.exp(t) * raw), n, total, lo, hi)
    return integer_counts(n * jnp.minimum(1.0, jnp.exp(t) * raw), sizes, total)


def counts_from_scores(
    scores: Scores, sparsity: float | jax.Array, *, prunable: PrunableFn
) -> jax.Array:
    """The per-layer counts a global top-k of ``scores`` keeps (each >= 1)."""
    mask = masks.mask_from_scores(scores, sparsity, prunable=prunable)
    kept = jnp.stack(
        [jnp.sum(m) for _, m in masks._prunable_mask_leaves(mask, prunable)]
    )
    sizes = layer_sizes(scores, prunable=prunable)
    return integer_counts(kept.astype(jnp.float32), sizes, _total(sizes, sparsity))


def mask_from_counts(
    scores: Scores, counts: jax.Array, *, prunable: PrunableFn = masks.is_prunable
) -> Mask:
    """Keeps the ``counts[l]`` highest scores of each prunable layer (ties by index).

    Example:
      >>> mask = mask_from_counts(scores, jnp.array([1200, 1100, 360]))
    """
    items, flags, treedef = masks._flatten(scores, prunable, "scores")
    masks._check_finite(items, flags)
    chosen = iter(range(int(np.sum(flags))))
    out = []
    for (_, x), f in zip(items, flags, strict=True):
        if f:
            flat = masks._flat_scores(x, None)
            out.append(masks._keep_top(flat, counts[next(chosen)]).reshape(np.shape(x)))
        else:
            out.append(jnp.ones(np.shape(x), jnp.bool_))
    return jax.tree.unflatten(treedef, out)


def layer_counts(
    scores: Scores,
    sparsity: float | jax.Array,
    *,
    allocation: str,
    prunable: PrunableFn = masks.is_prunable,
    phi: np.ndarray | None = None,
    model: AllocationModel | None = None,
    reference_scores: Scores | None = None,
) -> jax.Array:
    """``[L]`` int32 weights kept per prunable layer under an allocation.

    Allocations: ``"global"`` (as many per layer as a global top-k of
    ``scores`` keeps, the paper's single threshold), ``"learned"`` (``model``
    on the layer features ``phi``), ``"erk"``, ``"uniform"``, and ``"scores"``
    (as many as a global top-k of ``reference_scores`` keeps, e.g. SNIP's
    densities). Every layer keeps at least one weight; the total is exactly
    ``round((1 - sparsity) * N)``.

    Args:
      scores: the within-layer ranking (higher = keep), parallel to params.
      sparsity: fraction of prunable weights removed; may be traced.
      allocation: one of ``ALLOCATIONS``. Static.
      prunable: predicate ``(path, leaf) -> bool``. Static.
      phi: ``[L, 7]`` ``layer_features`` (for ``"learned"``). Static.
      model: an ``AllocationModel`` (for ``"learned"``). Static.
      reference_scores: scores whose global ranking sets the counts (``"scores"``).

    Raises:
      ValueError: on an unknown allocation or a missing argument it needs.

    Example:
      >>> layer_counts(scores, 0.99, allocation="erk")
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"allocation must be one of {ALLOCATIONS}, got {allocation!r}."
        )
    sizes = layer_sizes(scores, prunable=prunable)
    if allocation == "global":
        return counts_from_scores(scores, sparsity, prunable=prunable)
    if allocation == "scores":
        if reference_scores is None:
            raise ValueError('allocation="scores" needs reference_scores=.')
        return counts_from_scores(reference_scores, sparsity, prunable=prunable)
    if allocation == "learned":
        if model is None or phi is None:
            raise ValueError(
                'allocation="learned" needs model= (fit_allocation) and phi= '
                "(layer_features of the network being pruned)."
            )
        if phi.shape[0] != len(sizes):
            raise ValueError(f"phi has {phi.shape[0]} rows for {len(sizes)} layers.")
        return counts_from_logits(predict_logits(model, phi, sparsity), sizes, sparsity)
    items, flags, _ = masks._flatten(scores, prunable, "scores")
    shapes = [np.shape(x) for (_, x), f in zip(items, flags, strict=True) if f]
    return counts_erk(shapes, sparsity, power=1.0 if allocation == "erk" else 0.0)


def allocate(
    scores: Scores,
    sparsity: float | jax.Array,
    *,
    allocation: str,
    prunable: PrunableFn = masks.is_prunable,
    **kwargs: Any,
) -> Mask:
    """``mask_from_counts(scores, layer_counts(...))``: an allocation, ranked within.

    Args:
      scores: the within-layer ranking (higher = keep), parallel to params.
      sparsity: fraction of prunable weights removed; may be traced.
      allocation: one of ``ALLOCATIONS``. Static.
      prunable: predicate ``(path, leaf) -> bool``. Static.
      **kwargs: ``phi``, ``model``, ``reference_scores`` (see ``layer_counts``).

    Returns:
      A ``Mask``: exact total, at least one weight in every prunable layer.

    Raises:
      ValueError: as ``layer_counts``.

    Example:
      >>> mask = allocate(scores, 0.99, allocation="learned", phi=phi, model=model)
    """
    counts = layer_counts(
        scores, sparsity, allocation=allocation, prunable=prunable, **kwargs
    )
    return mask_from_counts(scores, counts, prunable=prunable)


def layer_densities(
    masks_seq: Sequence[Mask], *, prunable: PrunableFn = masks.is_prunable
) -> np.ndarray:
    """``[E, L]`` kept fraction of each prunable layer in each mask (host).

    Example:
      >>> layer_densities(labels.masks[1:])   # one row per IRP round
    """
    rows = []
    for mask in masks_seq:
        leaves = masks._prunable_mask_leaves(mask, prunable)
        rows.append([float(np.mean(np.asarray(m))) for _, m in leaves])
    return np.asarray(rows, np.float64)
