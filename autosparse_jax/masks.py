"""Boolean masks parallel to params: prunable predicates, top-k masks, statistics."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autosparse_jax.types import Mask, Params, PrunableFn, Scope, Scores

LayerSparsities = Any
"""A pytree parallel to ``Params`` of per-leaf sparsities (floats or scalars).

Entries of non-prunable leaves are ignored (``uniform`` and ``erk`` set them to
``0.0``) but must be present, so the tree structure equals that of ``Params``.
"""

OUTPUT_LAYER_NAME = "head"
"""The name every model in the project gives its final classifier layer."""

_SCOPES = ("global", "layerwise")


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _path_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _flatten(tree: Any, prunable: PrunableFn, what: str) -> tuple[list, list, Any]:
    """``[(path, leaf)]``, per-leaf ``prunable`` flags and the treedef of ``tree``."""
    items, treedef = jax.tree_util.tree_flatten_with_path(tree)
    flags = [bool(prunable(path, leaf)) for path, leaf in items]
    sizes = [math.prod(np.shape(leaf)) for _, leaf in items]
    if not any(f and n for f, n in zip(flags, sizes, strict=True)):
        shapes = {_path_name(p): np.shape(x) for p, x in items}
        raise ValueError(
            f"{what} has no prunable weights: prunable={prunable!r} selected no "
            f"non-empty leaf among {shapes}. The default is_prunable selects "
            "leaves with ndim >= 2 (kernels); pass another predicate as prunable=."
        )
    return items, flags, treedef


def _check_structure(tree: Any, ref_treedef: Any, name: str, ref: str) -> None:
    treedef = jax.tree.structure(tree)
    if treedef != ref_treedef:
        raise ValueError(
            f"{name} and {ref} must have the same tree structure.\n"
            f"  {ref}: {ref_treedef}\n  {name}: {treedef}\n"
            f"Build {name} from the same params, e.g. masks.dense_mask(params)."
        )


def _check_bool(leaf: Any, path: tuple[Any, ...]) -> None:
    dtype = getattr(leaf, "dtype", None)
    if dtype != jnp.bool_:
        raise ValueError(
            f"mask leaf {_path_name(path)!r} has dtype {dtype}, expected bool. "
            "Build masks with masks.dense_mask(params) or convert with .astype(bool)."
        )


def _mask_leaves(mask: Mask, ref: Any, ref_name: str) -> list:
    """Checks ``mask`` against ``ref`` (structure, bool dtype, shapes); its leaves."""
    items, treedef = jax.tree_util.tree_flatten_with_path(ref)
    _check_structure(mask, treedef, "mask", ref_name)
    leaves = jax.tree.leaves(mask)
    for (path, x), m in zip(items, leaves, strict=True):
        _check_bool(m, path)
        if np.shape(m) != np.shape(x):
            raise ValueError(
                f"mask leaf {_path_name(path)!r} has shape {np.shape(m)} but the "
                f"{ref_name} leaf has shape {np.shape(x)}; a mask has the leaf "
                "shapes of params."
            )
    return leaves


def _check_sparsity(value: Any, where: str = "") -> None:
    if np.ndim(value) != 0:
        raise ValueError(
            f"sparsity{where} must be a scalar, got shape {np.shape(value)}. "
            "To sweep several sparsities, jax.vmap over mask_from_scores."
        )
    if _is_concrete(value) and not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"sparsity{where} must be in [0, 1) (the fraction of prunable weights "
            f"removed), got {float(value)}."
        )


def _check_finite(items: list, flags: list[bool]) -> None:
    """Raises if a concrete prunable score leaf holds NaN or inf (tracers skipped)."""
    items = [(p, x) for (p, x), f in zip(items, flags, strict=True) if f]
    items = [(p, x) for p, x in items if _is_concrete(x)]
    if not items:
        return
    finite = np.asarray(jnp.stack([jnp.isfinite(x).all() for _, x in items]))
    bad = [_path_name(p) for (p, _), ok in zip(items, finite, strict=True) if not ok]
    if bad:
        raise ValueError(
            f"scores must be finite, but the prunable leaves {bad} contain NaN or "
            "inf. Fix the criterion; to keep weights pruned pass mask= instead of "
            "-inf scores."
        )


def _leaf_sparsities(sparsity: Any, scope: str, items: list, flags: list, treedef):
    """Validates ``sparsity``; one value per leaf (scalar or ``LayerSparsities``)."""
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(sparsity)):
        _check_sparsity(sparsity)
        return [sparsity] * len(items)
    if scope != "layerwise":
        raise ValueError(
            "A pytree of per-leaf sparsities needs scope='layerwise'; with "
            "scope='global' pass one scalar sparsity."
        )
    _check_structure(sparsity, treedef, "sparsity", "scores")
    values = jax.tree.leaves(sparsity)
    for (path, _), value, flag in zip(items, values, flags, strict=True):
        if flag:
            _check_sparsity(value, f" of leaf {_path_name(path)!r}")
    return values


def _num_keep(sparsity: Any, n: int) -> Any:
    """``round((1 - sparsity) * n)`` in float32, half to even.

    A concrete sparsity goes through the same float32 operations on the host as
    a traced one on device, so a Python loop over sparsities and a ``jax.vmap``
    over them give identical masks.
    """
    if _is_concrete(sparsity):
        keep = (np.float32(1.0) - np.float32(sparsity)) * np.float32(n)
        return int(np.round(keep))
    s = jnp.asarray(sparsity, jnp.float32)
    return jnp.round((1.0 - s) * jnp.float32(n)).astype(jnp.int32)


def _order_keys(x: jax.Array) -> jax.Array:
    """uint32 keys with the order of the float32 values ``x`` (-inf lowest)."""
    x = x.astype(jnp.float32)
    x = jnp.where(x == 0, jnp.float32(0), x)  # -0.0 ties with +0.0, as in floats.
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _kth_largest_key(keys: jax.Array, num_keep: Any) -> jax.Array:
    """The largest key ``t`` with ``count(keys >= t) >= num_keep`` (bisection).

    32 counting passes over ``keys`` instead of a sort: exact, and several times
    faster than ``jnp.sort`` on CPU for large ``n``.
    """

    def step(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2 + (hi > lo).astype(jnp.uint32)
        ok = jnp.sum(keys >= mid, dtype=jnp.int32) >= num_keep
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    bounds = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
    return lax.fori_loop(0, 32, step, bounds)[0]


# Jitted so that eager calls reuse the compiled loop (cached per shape); under an
# outer jit it is inlined.
_kth_largest_key_jit = jax.jit(_kth_largest_key)


def _keep_top(flat_scores: jax.Array, num_keep: Any) -> jax.Array:
    """``[n]`` bool: the ``num_keep`` highest scores, ties to the lower index.

    Equal to taking the first ``num_keep`` entries of a stable ``argsort`` of
    ``-flat_scores``: keep everything above the ``num_keep``-th largest score
    (found by bisection on order-preserving integer keys), then the
    lowest-index entries tied with it until ``num_keep`` are kept.
    """
    keys = _order_keys(flat_scores)
    threshold = _kth_largest_key_jit(keys, num_keep)
    above = keys > threshold
    tied = keys == threshold
    room = num_keep - jnp.sum(above, dtype=jnp.int32)
    keep = above | (tied & (jnp.cumsum(tied, dtype=jnp.int32) <= room))
    return keep & (num_keep > 0)


def _flat_scores(x: Any, alive: jax.Array | None) -> jax.Array:
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    dead = jnp.isnan(x) if alive is None else jnp.isnan(x) | ~alive
    return jnp.where(dead, -jnp.inf, x).ravel()


def is_prunable(path: tuple[Any, ...], leaf: jax.Array) -> bool:
    """Default predicate: conv and dense kernels (``leaf.ndim >= 2``) are prunable.

    Args:
      path: key path of the leaf (unused).
      leaf: the parameter, or a score or mask leaf of the same shape.

    Returns:
      ``True`` for leaves with at least two dimensions; biases and normalisation
      parameters are never pruned.

    Example:
      >>> is_prunable((), jnp.zeros((4, 3)))
      True
    """
    del path
    return np.ndim(leaf) >= 2


def is_prunable_except_output(path: tuple[Any, ...], leaf: jax.Array) -> bool:
    """``is_prunable``, except leaves under a key named ``OUTPUT_LAYER_NAME``.

    Every model in the project names its classifier ``"head"``, so with this
    predicate ``params["head"]["kernel"]`` stays dense.

    Args:
      path: key path of the leaf, as from ``jax.tree_util.tree_flatten_with_path``.
      leaf: the parameter, or a score or mask leaf of the same shape.

    Returns:
      ``True`` for kernels outside the output layer.

    Example:
      >>> mask = mask_from_scores(scores, 0.9, prunable=is_prunable_except_output)
    """
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return OUTPUT_LAYER_NAME not in names and is_prunable(path, leaf)


def dense_mask(params: Params) -> Mask:
    """An all-``True`` mask with the structure and leaf shapes of ``params``.

    Args:
      params: pytree of arrays.

    Returns:
      A pytree of ``bool`` arrays, ``jnp.ones(leaf.shape, bool)`` per leaf.

    Example:
      >>> mask = dense_mask(params)
    """
    return jax.tree.map(lambda p: jnp.ones(np.shape(p), jnp.bool_), params)


def apply_mask(params: Params, mask: Mask) -> Params:
    """Zeroes pruned entries, ``where(mask, params, 0)`` per leaf; idempotent.

    Keeps each leaf's dtype. Works on any tree shaped like params (gradients,
    optimizer updates).

    Args:
      params: pytree of arrays.
      mask: ``bool`` pytree with the structure and leaf shapes of ``params``.

    Returns:
      ``params`` with the entries where ``mask`` is ``False`` set to zero.

    Raises:
      ValueError: if structures or shapes differ or a mask leaf is not bool.

    Example:
      >>> sparse_params = apply_mask(params, mask)
    """
    _mask_leaves(mask, params, "params")
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def mask_from_scores(
    scores: Scores,
    sparsity: float | jax.Array | LayerSparsities,
    *,
    scope: Scope = "global",
    prunable: PrunableFn = is_prunable,
    mask: Mask | None = None,
) -> Mask:
    """Keeps the highest-scoring prunable weights: exact count, deterministic ties.

    With ``N`` prunable weights, ``scope="global"`` keeps exactly
    ``round((1 - sparsity) * N)``: the first entries of a stable ``argsort`` of
    ``-scores`` over the concatenated prunable leaves (``jax.tree.leaves``
    order), so ties keep the lower flat index (computed with one sort of values
    and a cumsum). ``scope="layerwise"`` keeps ``round((1 - s_l) * n_l)`` in each
    prunable leaf. The count is evaluated in float32 and rounded half to even,
    identically for concrete and traced sparsities (a Python loop and a
    ``jax.vmap`` give the same masks); it differs from float64 arithmetic by one
    weight only when ``(1 - s) * N`` is within float32 error of a half-integer
    or ``N > 2**24``. ``sparsity`` counts all prunable weights, so with ``mask`` it is
    the total target, not a fraction of the survivors: weights pruned in ``mask``
    score ``-inf``, the result is ANDed with ``mask``, and if fewer are alive than
    requested all alive ones are kept. Traced NaN scores rank lowest. Non-prunable
    leaves are all ``True``. A higher sparsity gives a subset.

    Args:
      scores: pytree parallel to params; higher means keep.
      sparsity: fraction of prunable weights removed, in ``[0, 1)``; a Python
        float or scalar array, possibly traced (``jax.jit``, ``jax.vmap``). With
        ``scope="layerwise"`` also a ``LayerSparsities`` pytree (``uniform``,
        ``erk``).
      scope: ``"global"`` or ``"layerwise"``. Static.
      prunable: predicate ``(path, leaf) -> bool``. Static.
      mask: optional ``bool`` pytree; weights it prunes stay pruned.

    Returns:
      A ``bool`` pytree with the structure and leaf shapes of ``scores``.

    Raises:
      ValueError: on an unknown ``scope``, mismatched trees, a concrete
        ``sparsity`` outside ``[0, 1)``, concrete non-finite prunable scores, a
        non-bool mask leaf, or no prunable leaves.

    Example:
      >>> mask = mask_from_scores(jax.tree.map(jnp.abs, params), 0.9)
      >>> sweep = jax.vmap(lambda s: mask_from_scores(scores, s))(
      ...     jnp.array([0.5, 0.9]))
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}.")
    items, flags, treedef = _flatten(scores, prunable, "scores")
    sparsities = _leaf_sparsities(sparsity, scope, items, flags, treedef)
    _check_finite(items, flags)
    alive = (
        [None] * len(items) if mask is None else _mask_leaves(mask, scores, "scores")
    )
    idx = [i for i, f in enumerate(flags) if f]
    flat = [_flat_scores(items[i][1], alive[i]) for i in idx]
    if scope == "global":
        sizes = [x.size for x in flat]
        keep = _keep_top(jnp.concatenate(flat), _num_keep(sparsity, sum(sizes)))
        keeps = jnp.split(keep, np.cumsum(sizes)[:-1].tolist())
    else:
        keeps = [
            _keep_top(x, _num_keep(sparsities[i], x.size))
            for i, x in zip(idx, flat, strict=True)
        ]
    out = [jnp.ones(np.shape(x), jnp.bool_) for _, x in items]
    for i, keep in zip(idx, keeps, strict=True):
        out[i] = keep.reshape(out[i].shape)
    if mask is not None:
        out = [m & a for m, a in zip(out, alive, strict=True)]
    return jax.tree.unflatten(treedef, out)


def _prunable_mask_leaves(mask: Mask, prunable: PrunableFn) -> list:
    items, flags, _ = _flatten(mask, prunable, "mask")
    for path, leaf in items:
        _check_bool(leaf, path)
    return [(p, m) for (p, m), f in zip(items, flags, strict=True) if f]


def sparsity(mask: Mask, *, prunable: PrunableFn = is_prunable) -> jax.Array:
    """Fraction of prunable weights removed, ``1 - kept / N``; jit-compatible.

    Args:
      mask: ``bool`` pytree parallel to params.
      prunable: predicate ``(path, leaf) -> bool``. Static.

    Returns:
      A float32 scalar in ``[0, 1]``.

    Raises:
      ValueError: if a mask leaf is not bool or no leaf is prunable.

    Example:
      >>> sparsity(mask_from_scores(scores, 0.9))  # 0.9 up to rounding
    """
    chosen = [m for _, m in _prunable_mask_leaves(mask, prunable)]
    kept = sum(jnp.sum(m, dtype=jnp.int32) for m in chosen)
    return (1.0 - kept / sum(m.size for m in chosen)).astype(jnp.float32)


mask_sparsity = sparsity
"""Alias of ``sparsity`` (the name STYLE.md uses)."""


def sparsity_by_layer(
    mask: Mask, *, prunable: PrunableFn = is_prunable
) -> dict[str, float]:
    """Host function: the sparsity of each prunable leaf, keyed by its path.

    Args:
      mask: concrete ``bool`` pytree parallel to params.
      prunable: predicate ``(path, leaf) -> bool``.

    Returns:
      ``{"Dense_0/kernel": 0.75, ...}`` (``"/"``-joined key names) in
      ``jax.tree.leaves`` order, prunable leaves only.

    Raises:
      ValueError: if a mask leaf is not bool or no leaf is prunable.

    Example:
      >>> sparsity_by_layer(mask)
      {'Dense_0/kernel': 0.75, 'Dense_1/kernel': 0.5}
    """
    chosen = _prunable_mask_leaves(mask, prunable)
    counts = jax.device_get([jnp.sum(m, dtype=jnp.int32) for _, m in chosen])
    return {
        _path_name(p): 1.0 - int(c) / m.size if m.size else 0.0
        for (p, m), c in zip(chosen, counts, strict=True)
    }


def uniform(
    params: Params, sparsity: float | jax.Array, *, prunable: PrunableFn = is_prunable
) -> LayerSparsities:
    """The same sparsity for every prunable leaf (non-prunable leaves ``0.0``).

    Args:
      params: pytree of arrays (only paths and shapes are read).
      sparsity: in ``[0, 1)``; Python float or scalar array.
      prunable: predicate ``(path, leaf) -> bool``.

    Returns:
      ``LayerSparsities`` for ``mask_from_scores(..., scope="layerwise")``.

    Raises:
      ValueError: if ``sparsity`` is outside ``[0, 1)`` or nothing is prunable.

    Example:
      >>> mask = mask_from_scores(scores, uniform(params, 0.9), scope="layerwise")
    """
    _, flags, treedef = _flatten(params, prunable, "params")
    _check_sparsity(sparsity)
    return jax.tree.unflatten(treedef, [sparsity if f else 0.0 for f in flags])


def _erk_densities(sizes: np.ndarray, raw: np.ndarray, target: float) -> np.ndarray:
    """Solves ``sum(min(eps * raw, 1) * sizes) = target`` for per-layer densities."""
    dense = np.zeros(sizes.shape, bool)
    while True:
        divisor = (raw * sizes)[~dense].sum()
        if divisor <= 0.0:  # everything dense: only possible at sparsity 0
            return np.ones_like(sizes)
        eps = (target - sizes[dense].sum()) / divisor
        exceeds = ~dense & (eps * raw > 1.0)
        if not exceeds.any():
            return np.where(dense, 1.0, eps * raw)
        dense |= exceeds


def erk(
    params: Params,
    sparsity: float,
    *,
    prunable: PrunableFn = is_prunable,
    power_scale: float = 1.0,
) -> LayerSparsities:
    """Erdős–Rényi-Kernel layerwise sparsities (host function).

    A prunable leaf of shape ``(d_1, ..., d_k)`` (dense ``(in, out)``, conv
    ``(kh, kw, cin, cout)``) gets density
    ``eps * ((d_1 + ... + d_k) / (d_1 * ... * d_k)) ** power_scale``, with ``eps``
    such that ``sum_l density_l * n_l = (1 - sparsity) * N``. Leaves whose
    density would exceed 1 are made dense and ``eps`` is re-solved over the rest
    until none exceeds 1, as in the RigL reference code (which densifies the
    largest ratio per pass; ``eps`` only grows, so densifying every exceeding
    leaf at once gives the same result).

    Args:
      params: pytree of arrays (only paths and shapes are read).
      sparsity: overall sparsity in ``[0, 1)``, a concrete Python float.
      prunable: predicate ``(path, leaf) -> bool``.
      power_scale: exponent on the ERK ratio (RigL's ``erk_power_scale``); ``0.0``
        gives uniform sparsity.

    Returns:
      ``LayerSparsities`` of Python floats (non-prunable leaves ``0.0``).

    Raises:
      ValueError: if ``sparsity`` is traced or outside ``[0, 1)``, or nothing is
        prunable.

    Example:
      >>> mask = mask_from_scores(scores, erk(params, 0.99), scope="layerwise")

    References:
      Evci et al., 2020, "Rigging the Lottery: Making All Tickets Winners", ICML
      (arXiv:1911.11134), Sec. 3; code: ``rigl/sparse_utils.py``,
      ``get_sparsities_erdos_renyi``. Mocanu et al., 2018, "Scalable training of
      artificial neural networks with adaptive sparse connectivity inspired by
      network science", Nature Communications (the Erdős–Rényi dense case).
    """
    if not _is_concrete(sparsity):
        raise ValueError(
            "erk is a host function: pass a concrete Python float sparsity and "
            "compute the allocation outside jax.jit / jax.vmap."
        )
    items, flags, treedef = _flatten(params, prunable, "params")
    _check_sparsity(sparsity)
    shapes = [np.shape(x) for (_, x), f in zip(items, flags, strict=True) if f]
    sizes = np.array([math.prod(s) for s in shapes], np.float64)
    raw = np.array([(sum(s) / max(math.prod(s), 1)) ** power_scale for s in shapes])
    densities = _erk_densities(sizes, raw, (1.0 - float(sparsity)) * sizes.sum())
    per_leaf = iter(max(0.0, 1.0 - float(d)) for d in densities)
    return jax.tree.unflatten(treedef, [next(per_leaf) if f else 0.0 for f in flags])
