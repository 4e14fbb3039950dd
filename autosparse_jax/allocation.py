"""Allocations: how many weights each prunable layer keeps.

Every mask of the library is built the same way: scores, then an
*allocation* that turns them into a kept count per prunable layer, then the
``count`` highest scores inside each layer (``mask_from_counts``). An
allocation is a plain callable ``(scores, sparsity, context) -> counts``
(``[L]`` int32, tree order of the prunable leaves) passed to
``criteria.prune_at_init``, so the number kept per layer and which weights
are kept are chosen separately (Liu, Cheng et al. 2024, arXiv 2408.14757,
rank globally; a global threshold can empty a layer, "layer collapse"). The
built-in allocations are small frozen dataclasses (hashable, so static under
``jax.jit``): ``global_topk`` (one threshold over all layers, the paper's),
``uniform``, ``erk``, ``like(criterion)`` (the densities another criterion's
global ranking would choose) and ``learned(model)`` (a model fitted on an IRP
run's per-layer densities, ``fit_allocation``, or on several runs' in
scale-free layer terms, ``fit_allocation_sources``). Each keeps exactly
``round((1 - sparsity) * N)`` weights with a traced ``sparsity`` and, unless
asked (``global_topk(min_per_layer=0)``), at least one in every layer.
"""

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import layers, masks
from autosparse_jax.types import (
    ApplyFn,
    Batch,
    Mask,
    Params,
    PRNGKey,
    PrunableFn,
    Scores,
)

LAYER_FEATURE_NAMES = (
    "log fan_in",
    "log fan_out",
    "log kernel size",
    "size fraction",
    "relative depth",
    "is first",
    "is output",
)
SCALE_FREE_FEATURE_NAMES = (
    "log fan_in / largest fan_in",
    "log fan_out / largest fan_out",
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


class AllocationContext(NamedTuple):
    """What an allocation may read about the network being pruned.

    Attributes:
      key: PRNG key for the allocation's own randomness (independent of the
        criterion's key).
      params: the params being pruned.
      batch: the pruning batch (one batch or ``K`` stacked batches).
      apply_fn: ``apply_fn(params, x) -> logits``.
      mask: the current mask (dense in one-shot pruning; in round ``r`` of
        multi-round pruning, the mask after round ``r - 1``).
      layers: static ``layers.LeafContext`` of each prunable leaf, tree order.
      prunable: the predicate in use. Static.
    """

    key: PRNGKey
    params: Params
    batch: Batch
    apply_fn: ApplyFn
    mask: Mask
    layers: tuple[layers.LeafContext, ...]
    prunable: PrunableFn

    @property
    def sizes(self) -> np.ndarray:
        """``[L]`` number of weights of each prunable layer (host ints)."""
        return np.array([c.size for c in self.layers])

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The shape of each prunable leaf (tree order)."""
        items, flags, _ = masks._flatten(self.params, self.prunable, "params")
        return [np.shape(x) for (_, x), f in zip(items, flags, strict=True) if f]

    @property
    def alive(self) -> jax.Array:
        """``[L]`` int32 weights of each prunable layer alive in ``mask``."""
        leaves = masks._prunable_mask_leaves(self.mask, self.prunable)
        return jnp.stack([jnp.sum(m, dtype=jnp.int32) for _, m in leaves])


Allocation = Callable[[Scores, Any, AllocationContext], jax.Array]
"""``allocation(scores, sparsity, context) -> [L] int32`` kept per layer."""


def input_shape_of(batch: Batch) -> tuple[int, ...]:
    """One example's shape from a batch ``[B, ...]`` or stacked ``[K, B, ...]``."""
    lead = np.ndim(batch["label"])
    if lead not in (1, 2):
        raise ValueError(
            f"batch['label'] must be [B] (one batch) or [K, B] (K batches), got "
            f"shape {np.shape(batch['label'])}."
        )
    return tuple(np.shape(batch["image"])[lead:])


def make_context(
    key: PRNGKey,
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    mask: Mask | None = None,
    prunable: PrunableFn = masks.is_prunable,
) -> AllocationContext:
    """The ``AllocationContext`` of a network (layer context read from shapes).

    Depth follows the forward pass on ``batch``'s input shape; with
    ``batch=None`` (data-free criteria) it is the tree order.

    Example:
      >>> ctx = make_context(key, params, batch, apply_fn=apply_fn)
      >>> counts = erk()(scores, 0.99, ctx)
    """
    abstract = jax.tree.map(
        lambda p: jax.ShapeDtypeStruct(np.shape(p), p.dtype), params
    )
    if batch is None:  # Data-free criteria: depth in tree order.
        contexts = layers.tree_order_contexts(abstract, prunable=prunable)
    else:
        contexts = layers.layer_contexts(
            abstract,
            apply_fn=apply_fn,
            input_shape=input_shape_of(batch),
            prunable=prunable,
        )
    return AllocationContext(
        key=key,
        params=params,
        batch=batch,
        apply_fn=apply_fn,
        mask=masks.dense_mask(params) if mask is None else mask,
        layers=tuple(c for c in contexts if c is not None),
        prunable=prunable,
    )


def criterion_kwargs(criterion: Callable[..., Scores], prunable: PrunableFn) -> dict:
    """``{"prunable": prunable}`` if ``criterion`` takes that keyword, else ``{}``.

    Criteria whose scores depend on which leaves are prunable (GraSP, SynFlow,
    AutoS) take the predicate in use, so one predicate holds everywhere.
    """
    try:
        params = inspect.signature(criterion).parameters
    except (TypeError, ValueError):
        return {}
    return {"prunable": prunable} if "prunable" in params else {}


# ------------------------------------------------------------ layer context


def context_features(contexts: Sequence[layers.LeafContext]) -> np.ndarray:
    """``[L, 7]`` ``LAYER_FEATURE_NAMES`` of prunable layers' contexts (host)."""
    total = sum(c.size for c in contexts)
    rows = []
    for c in contexts:
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


def scale_free_features(contexts: Sequence[layers.LeafContext]) -> np.ndarray:
    """``[L, 7]`` ``SCALE_FREE_FEATURE_NAMES`` of prunable layers' contexts (host).

    ``context_features`` with fan-in and fan-out measured against the
    network's largest (``log(fan_in / max fan_in)``): a layer is described
    by where it stands in its own network, not by its input size, so rows of
    networks with other input sizes can be fitted together
    (``fit_allocation_sources``).

    Example:
      >>> allocation=learned(model, layer_features=scale_free_features)
    """
    phi = context_features(contexts)
    phi[:, :2] -= phi[:, :2].max(0)
    return phi


def layer_features(
    params: Params,
    *,
    apply_fn: ApplyFn,
    input_shape: Sequence[int],
    prunable: PrunableFn = masks.is_prunable,
) -> np.ndarray:
    """``[L, 7]`` context of each prunable layer (``LAYER_FEATURE_NAMES``), host.

    Layers are in ``jax.tree.leaves`` order; depth follows the forward pass
    (``layers.layer_contexts``).

    Example:
      >>> phi = layer_features(params, apply_fn=apply_fn, input_shape=(28, 28, 1))
    """
    contexts = layers.layer_contexts(
        params, apply_fn=apply_fn, input_shape=input_shape, prunable=prunable
    )
    return context_features([c for c in contexts if c is not None])


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


class AllocationSource(NamedTuple):
    """One labelled run's layers, as ``fit_allocation`` reads them.

    Attributes:
      phi: ``[L, F]`` layer features of the run's network.
      densities: ``[E, L]`` kept fraction of each layer after each IRP round.
      sizes: ``[L]`` layer sizes.
    """

    phi: np.ndarray
    densities: np.ndarray
    sizes: np.ndarray


def _checked(source: AllocationSource) -> AllocationSource:
    phi = np.asarray(source.phi, np.float64)
    densities = np.asarray(source.densities, np.float64)
    num_layers = phi.shape[0]
    if densities.ndim != 2 or densities.shape[1] != num_layers:
        raise ValueError(
            f"densities must be [E, L] with L = {num_layers} layers, got "
            f"{densities.shape}."
        )
    outside = densities[~((densities >= 0) & (densities <= 1))]
    if outside.size:
        raise ValueError(
            f"densities must be finite fractions in [0, 1] (kept weights per "
            f"layer), got {outside[:3].tolist()}; pass allocation.layer_densities("
            "masks), not sparsities, percentages or NaN."
        )
    if not np.isfinite(phi).all():
        raise ValueError(
            "phi (the layer features) holds NaN or inf; compute it with "
            "allocation.layer_features(params, ...)."
        )
    sizes = np.asarray(source.sizes)
    if sizes.shape != (num_layers,) or not (sizes > 0).all():
        raise ValueError(
            f"sizes must be [L] = [{num_layers}] positive layer sizes, got "
            f"{sizes.tolist()}; pass allocation.layer_sizes(params)."
        )
    return AllocationSource(phi, densities, sizes)


def _round_rows(x: np.ndarray, densities: np.ndarray, sizes: np.ndarray) -> tuple:
    """One run's weighted, layer-centred design rows and targets (one block per
    round; each round's weights ``n_l / N`` sum to one)."""
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
    return rows, targets


def _solve(rows, targets, l2, num, mean, std, metadata) -> AllocationModel:
    a, b = np.concatenate(rows), np.concatenate(targets)
    theta = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ b)
    return AllocationModel(
        weights=tuple(float(t) for t in theta[:num]),
        slopes=tuple(float(t) for t in theta[num:]),
        feature_mean=tuple(float(m) for m in mean),
        feature_std=tuple(float(s) for s in std),
        metadata=tuple(metadata),
    )


def _standardisation(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = phi.mean(0)
    std = np.where(phi.std(0) > 0, phi.std(0), 1.0)
    return mean, std


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
    phi, densities, sizes = _checked(AllocationSource(phi, densities, sizes))
    mean, std = _standardisation(phi)
    rows, targets = _round_rows((phi - mean) / std, densities, sizes)
    return _solve(rows, targets, l2, phi.shape[1], mean, std, metadata)


def fit_allocation_sources(
    sources: Sequence[AllocationSource],
    *,
    l2: float = 1e-2,
    metadata: Sequence[tuple[str, Any]] = (),
) -> AllocationModel:
    """Fits one ``AllocationModel`` to several runs' per-layer densities (host).

    ``fit_allocation``'s regression over the stacked rounds of every source:
    the features are standardised over all sources' layers, each round is
    centred over its own network's layers, and every round of every source
    weighs the same. Networks of different sizes only fit together in
    scale-free layer terms (``scale_free_features``). With one source it is
    ``fit_allocation``.

    Args:
      sources: ``AllocationSource`` of each run, features of one kind (``F``).
      l2: ridge penalty (features are standardised).
      metadata: key-value pairs stored in the model.

    Returns:
      The fitted ``AllocationModel``.

    Raises:
      ValueError: on no source, mismatched shapes or feature counts.

    Example:
      >>> model = fit_allocation_sources([AllocationSource(phi_a, d_a, n_a),
      ...                                 AllocationSource(phi_b, d_b, n_b)])
    """
    sources = [_checked(AllocationSource(*s)) for s in sources]
    widths = {s.phi.shape[1] for s in sources}
    if len(widths) != 1:
        raise ValueError(
            f"every source needs the same layer features; got {len(sources)} "
            f"sources with {sorted(widths)} features (empty: no source)."
        )
    mean, std = _standardisation(np.concatenate([s.phi for s in sources]))
    rows, targets = [], []
    for s in sources:
        r, t = _round_rows((s.phi - mean) / std, s.densities, s.sizes)
        rows, targets = rows + r, targets + t
    return _solve(rows, targets, l2, widths.pop(), mean, std, metadata)


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


def integer_counts(
    kept: jax.Array, capacity: Any, total: Any, *, minimum: int = 1
) -> jax.Array:
    """Rounds real per-layer kept counts to integers with an exact total.

    Each layer keeps between ``minimum`` and ``capacity`` weights. After
    flooring and clipping, missing weights go to the layers with the largest
    fractional parts, and surplus ones (from layers raised to ``minimum``)
    are taken back from those with the smallest, as many per layer as it can
    give (ties to the lower layer index).

    Args:
      kept: ``[L]`` real counts, roughly summing to ``total``.
      capacity: ``[L]`` most each layer can keep (its size, or its alive
        weights), static or traced.
      total: the exact number to keep, between ``minimum * L`` and
        ``sum(capacity)``.
      minimum: fewest weights a layer keeps (1: never an empty layer).

    Returns:
      ``[L]`` int32 counts summing to ``total``.

    Example:
      >>> integer_counts(jnp.array([2.6, 1.2, 0.2]), np.array([10, 10, 10]), 4)
      Array([2, 1, 1], dtype=int32)
    """
    n = jnp.asarray(capacity, jnp.int32)
    kept = jnp.asarray(kept, jnp.float32)
    frac = kept - jnp.floor(kept)
    counts = jnp.clip(jnp.floor(kept).astype(jnp.int32), minimum, n)
    rest = total - jnp.sum(counts)
    add = _fill(jnp.maximum(rest, 0), n - counts, -frac)
    remove = _fill(jnp.maximum(-rest, 0), counts - minimum, frac)
    return counts + add - remove


def num_keep(sparsity: Any, ctx: AllocationContext) -> Any:
    """``round((1 - sparsity) * N)``: the total every allocation must keep.

    A concrete ``sparsity`` outside ``[0, 1)`` raises ``ValueError``; a traced
    one follows ``masks.mask_from_scores``'s rule (clipped into ``[0, 1]``, NaN
    keeps nothing).
    """
    masks._check_sparsity(sparsity)
    return masks._num_keep(sparsity, int(ctx.sizes.sum()))


def _total(ctx: AllocationContext, sparsity: Any, minimum: int) -> jax.Array:
    """``num_keep``; refuses (concretely) a total below ``minimum`` per layer."""
    total = num_keep(sparsity, ctx)
    num_layers, n = len(ctx.layers), int(ctx.sizes.sum())
    if masks._is_concrete(total) and total < minimum * num_layers:
        raise ValueError(
            f"sparsity {float(sparsity)} keeps {total} weights, fewer than "
            f"{minimum} in each of the {num_layers} prunable layers; lower the "
            "sparsity or use allocation.global_topk(min_per_layer=0)."
        )
    return jnp.clip(jnp.asarray(total, jnp.int32), minimum * num_layers, n)


def counts_from_logits(
    logits: jax.Array, sparsity: Any, ctx: AllocationContext
) -> jax.Array:
    """Per-layer counts with density ``sigmoid(logit_l + t)``, ``t`` solved."""
    n = jnp.asarray(ctx.sizes, jnp.float32)
    total = _total(ctx, sparsity, 1)
    lo, hi = -jnp.max(logits) - 40.0, -jnp.min(logits) + 40.0
    t = _solve_shift(lambda t: jax.nn.sigmoid(logits + t), n, total, lo, hi)
    return integer_counts(n * jax.nn.sigmoid(logits + t), ctx.alive, total)


def _kept_by_layer(mask: Mask, prunable: PrunableFn) -> jax.Array:
    leaves = masks._prunable_mask_leaves(mask, prunable)
    return jnp.stack([jnp.sum(m, dtype=jnp.int32) for _, m in leaves])


# -------------------------------------------------------------- allocations


@dataclasses.dataclass(frozen=True)
class _GlobalTopK:
    min_per_layer: int

    def __call__(self, scores: Scores, sparsity: Any, ctx: AllocationContext):
        mask = masks.mask_from_scores(
            scores, sparsity, prunable=ctx.prunable, mask=ctx.mask
        )
        kept = _kept_by_layer(mask, ctx.prunable)
        if self.min_per_layer == 0:
            return kept
        total = _total(ctx, sparsity, self.min_per_layer)
        return integer_counts(
            kept.astype(jnp.float32), ctx.alive, total, minimum=self.min_per_layer
        )


def global_topk(*, min_per_layer: int = 1) -> Allocation:
    """One threshold over all prunable layers (the paper's global ranking).

    Each layer keeps as many weights as a global top-k of the scores keeps
    there. With ``min_per_layer >= 1`` a layer the threshold would leave with
    fewer gets that many back (its best-scoring weights), taken from the
    layers with the fewest (``integer_counts``); ``min_per_layer=0`` is the
    plain global top-k, which can empty a layer (the published baselines).

    Example:
      >>> mask = criteria.prune_at_init(key, CRITERIA["snip"], params, batch,
      ...     apply_fn=apply_fn, sparsity=0.99, allocation=global_topk())
    """
    if not isinstance(min_per_layer, int) or min_per_layer < 0:
        raise ValueError(f"min_per_layer must be an int >= 0, got {min_per_layer!r}.")
    return _GlobalTopK(min_per_layer)


@dataclasses.dataclass(frozen=True)
class _ERK:
    power_scale: float

    def __call__(self, scores: Scores, sparsity: Any, ctx: AllocationContext):
        del scores
        raw = [(sum(s) / math.prod(s)) ** self.power_scale for s in ctx.shapes]
        raw = jnp.asarray(raw, jnp.float32)
        n = jnp.asarray(ctx.sizes, jnp.float32)
        total = _total(ctx, sparsity, 1)
        lo, hi = -jnp.log(jnp.max(raw)) - 40.0, -jnp.log(jnp.min(raw)) + 1.0

        def density(t):
            return jnp.minimum(1.0, jnp.exp(t) * raw)

        t = _solve_shift(density, n, total, lo, hi)
        return integer_counts(n * density(t), ctx.alive, total)


def erk(*, power_scale: float = 1.0) -> Allocation:
    """Erdős–Rényi-Kernel densities: ``min(1, eps * (sum(shape) / prod(shape)))``.

    A prunable leaf of shape ``(d_1, ..., d_k)`` (dense ``(in, out)``, conv
    ``(kh, kw, cin, cout)``) gets density ``min(1, eps * r_l ** power_scale)``
    with ``r_l = (d_1 + ... + d_k) / (d_1 * ... * d_k)`` and ``eps`` solved (by
    bisection) so the total is exact; a leaf that would exceed density 1 is
    dense, as in the RigL reference code. ``power_scale=0`` is ``uniform``.

    Example:
      >>> mask = criteria.prune_at_init(key, CRITERIA["random"], params, batch,
      ...     apply_fn=apply_fn, sparsity=0.99, allocation=erk())

    References:
      Evci et al., 2020, "Rigging the Lottery: Making All Tickets Winners", ICML
      (arXiv:1911.11134), Sec. 3. Mocanu et al., 2018, "Scalable training of
      artificial neural networks with adaptive sparse connectivity inspired by
      network science", Nature Communications.
    """
    if (
        not isinstance(power_scale, numbers.Real)
        or isinstance(power_scale, bool)
        or not math.isfinite(power_scale)
    ):
        raise ValueError(
            f"power_scale must be a finite number (1: ERK, 0: uniform), got "
            f"{power_scale!r}."
        )
    return _ERK(float(power_scale))


def uniform() -> Allocation:
    """The same sparsity in every prunable layer (``erk(power_scale=0)``).

    Example:
      >>> allocation=uniform()   # as the old scope="layerwise"
    """
    return _ERK(0.0)


@dataclasses.dataclass(frozen=True)
class _Like:
    criterion: Callable[..., Scores]

    def __call__(self, scores: Scores, sparsity: Any, ctx: AllocationContext):
        del scores
        reference = self.criterion(
            ctx.key,
            ctx.params,
            ctx.batch,
            apply_fn=ctx.apply_fn,
            mask=ctx.mask,
            **criterion_kwargs(self.criterion, ctx.prunable),
        )
        reference = jax.tree.map(lambda s: s.astype(jnp.float32), reference)
        return _GlobalTopK(1)(reference, sparsity, ctx)


def like(criterion: Callable[..., Scores]) -> Allocation:
    """The per-layer counts a global threshold on ``criterion``'s scores keeps.

    ``criterion`` is called on the context's network (its key, params, batch
    and mask) with the uniform criterion signature; every layer keeps at
    least one weight (``global_topk()``). The scores being allocated only
    rank the weights inside each layer, so e.g. AutoS ranking inside SNIP's
    layer densities is ``prune_at_init(key, autos_criterion, ...,
    allocation=like(CRITERIA["snip"]))``.

    Example:
      >>> allocation=like(criteria.CRITERIA["snip"])
    """
    if not callable(criterion):
        raise ValueError(f"like() needs a criterion (a callable), got {criterion!r}.")
    return _Like(criterion)


@dataclasses.dataclass(frozen=True)
class _Learned:
    model: AllocationModel
    layer_features: Callable[[Sequence[layers.LeafContext]], np.ndarray]

    def __call__(self, scores: Scores, sparsity: Any, ctx: AllocationContext):
        del scores
        phi = self.layer_features(ctx.layers)
        if np.shape(phi) != (len(ctx.layers), len(self.model.weights)):
            raise ValueError(
                f"the allocation model has {len(self.model.weights)} layer "
                f"features, but {self.layer_features.__name__} gives "
                f"{np.shape(phi)} for {len(ctx.layers)} layers; pass the "
                "layer_features the model was fitted with."
            )
        return counts_from_logits(
            predict_logits(self.model, phi, sparsity), sparsity, ctx
        )


def learned(
    model: AllocationModel,
    *,
    layer_features: Callable[
        [Sequence[layers.LeafContext]], np.ndarray
    ] = context_features,
) -> Allocation:
    """Per-layer densities predicted by a fitted ``AllocationModel``.

    The model maps each layer's context (``layer_features`` of the prunable
    layers: ``LAYER_FEATURE_NAMES`` by default, or the features it was fitted
    on, e.g. ``scale_free_features``) and the global sparsity to a density
    logit; the shift is solved so the total is exact, and every layer keeps at
    least one weight.

    Example:
      >>> allocation=learned(fit_allocation(phi, densities, sizes))
    """
    if not isinstance(model, AllocationModel):
        raise ValueError(
            f"learned() needs an AllocationModel (fit_allocation), got {type(model)}."
        )
    if not callable(layer_features):
        raise ValueError(
            f"layer_features must map layer contexts to [L, F], got {layer_features!r}."
        )
    return _Learned(model, layer_features)


# --------------------------------------------------------------------- masks


def check_counts(counts: Any, ctx: AllocationContext, sparsity: Any) -> jax.Array:
    """Validates an allocation's output; returns it as int32 ``[L]``.

    The shape and dtype are checked when tracing. The values (the total is
    exactly ``num_keep(sparsity)``, each count within ``0 .. alive``) are
    checked on the spot when concrete, and by a host callback under
    ``jax.jit`` (the error then surfaces when the result is read).

    Raises:
      ValueError: naming what is wrong and the allocation that returned it.
    """
    num_layers = len(ctx.layers)
    if np.shape(counts) != (num_layers,) or not jnp.issubdtype(
        jnp.asarray(counts).dtype, jnp.integer
    ):
        raise ValueError(
            f"an allocation must return [L] = [{num_layers}] integer counts (one per "
            f"prunable layer, tree order), got shape {np.shape(counts)} and dtype "
            f"{jnp.asarray(counts).dtype}."
        )
    counts = jnp.asarray(counts, jnp.int32)
    total, alive = num_keep(sparsity, ctx), ctx.alive
    if all(masks._is_concrete(x) for x in (counts, total, alive)):
        _raise_on_bad_counts(counts, total, alive)
    else:
        jax.debug.callback(_raise_on_bad_counts, counts, total, alive)
    return counts


def _raise_on_bad_counts(counts, total, alive) -> None:
    counts, total, alive = np.asarray(counts), int(total), np.asarray(alive)
    if int(counts.sum()) != total:
        raise ValueError(
            f"the allocation's counts {counts.tolist()} sum to {int(counts.sum())}, "
            f"but the sparsity keeps exactly {total} weights; an allocation must "
            "return counts with that total (see allocation.integer_counts)."
        )
    bad = np.flatnonzero((counts < 0) | (counts > alive))
    if bad.size:
        raise ValueError(
            f"the allocation's counts {counts.tolist()} are outside 0 .. alive "
            f"weights {alive.tolist()} in layers {bad.tolist()}."
        )


def mask_from_counts(
    scores: Scores,
    counts: jax.Array,
    *,
    prunable: PrunableFn = masks.is_prunable,
    mask: Mask | None = None,
) -> Mask:
    """Keeps the ``counts[l]`` highest scores of each prunable layer (ties by index).

    Weights already pruned in ``mask`` rank lowest and stay pruned.

    Example:
      >>> mask = mask_from_counts(scores, jnp.array([1200, 1100, 360]))
    """
    items, flags, treedef = masks._flatten(scores, prunable, "scores")
    masks._check_finite(items, flags)
    alive = (
        [None] * len(items)
        if mask is None
        else masks._mask_leaves(mask, scores, "scores")
    )
    chosen = iter(range(int(np.sum(flags))))
    out = []
    for (_, x), f, a in zip(items, flags, alive, strict=True):
        if f:
            flat = masks._flat_scores(x, a)
            keep = masks._keep_top(flat, counts[next(chosen)]).reshape(np.shape(x))
            out.append(keep if a is None else keep & a)
        else:
            out.append(jnp.ones(np.shape(x), jnp.bool_))
    return jax.tree.unflatten(treedef, out)


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
