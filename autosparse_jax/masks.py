"""Boolean masks parallel to params: prunable predicates, top-k masks, statistics."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autosparse_jax.types import Mask, Params, PrunableFn, Scope, Scores

OUTPUT_LAYER_NAME = "head"
"""The name every model in the project gives its final classifier layer."""

_SCOPES = ("global", "layerwise")


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def leaf_name(path: tuple[Any, ...]) -> str:
    """A leaf's ``"/"``-joined key names, e.g. ``"Dense_0/kernel"``."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _flatten(tree: Any, prunable: PrunableFn, what: str) -> tuple[list, list, Any]:
    """``[(path, leaf)]``, per-leaf ``prunable`` flags and the treedef of ``tree``."""
    items, treedef = jax.tree_util.tree_flatten_with_path(tree)
    flags = [bool(prunable(path, leaf)) for path, leaf in items]
    sizes = [math.prod(np.shape(leaf)) for _, leaf in items]
    if not any(f and n for f, n in zip(flags, sizes, strict=True)):
        shapes = {leaf_name(p): np.shape(x) for p, x in items}
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
            f"mask leaf {leaf_name(path)!r} has dtype {dtype}, expected bool. "
            "Build masks with masks.dense_mask(params) or convert with .astype(bool)."
        )


def _check_params(params: Any, what: str = "params", *, finite: bool = True) -> None:
    """Floating-point leaves (always); finite ones (when concrete and ``finite``)."""
    items = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in items:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{what} must be floating-point arrays, but leaf {leaf_name(path)!r} "
                f"has dtype {dtype}; cast with jax.tree.map(lambda p: "
                f"p.astype(jnp.float32), {what})."
            )
    concrete = [(p, x) for p, x in items if finite and _is_concrete(x)]
    if not concrete:
        return
    with jax.ensure_compile_time_eval():
        flags = jax.device_get([jnp.isfinite(x).all() for _, x in concrete])
    bad = [leaf_name(p) for (p, _), ok in zip(concrete, flags, strict=True) if not ok]
    if bad:
        raise ValueError(
            f"{what} hold NaN or inf in the leaves {bad}; re-initialise them (a "
            "diverged training run or a bad checkpoint gives such weights)."
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
                f"mask leaf {leaf_name(path)!r} has shape {np.shape(m)} but the "
                f"{ref_name} leaf has shape {np.shape(x)}; a mask has the leaf "
                "shapes of params."
            )
    return leaves


def _check_sparsity(value: Any, where: str = "") -> None:
    if isinstance(value, dict | list | tuple):
        raise ValueError(
            f"sparsity{where} must be one number in [0, 1), got a "
            f"{type(value).__name__}; for per-layer sparsities pass an allocation "
            "(allocation.uniform(), allocation.erk(), ...) to criteria.prune_at_init."
        )
    if isinstance(value, str | bytes | bool) or value is None:
        raise ValueError(
            f"sparsity{where} must be a number in [0, 1) (the fraction of prunable "
            f"weights removed), got {value!r} of type {type(value).__name__}."
        )
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
    """Raises if a concrete prunable score leaf holds NaN or inf.

    Concrete leaves are checked even inside a ``jax.jit`` trace (scores closed
    over as constants); traced leaves cannot be, and follow the ranking rule of
    ``mask_from_scores`` instead (NaN ranks lowest).
    """
    items = [(p, x) for (p, x), f in zip(items, flags, strict=True) if f]
    items = [(p, x) for p, x in items if _is_concrete(x)]
    if not items:
        return
    with jax.ensure_compile_time_eval():
        finite = np.asarray(jnp.stack([jnp.isfinite(x).all() for _, x in items]))
    bad = [leaf_name(p) for (p, _), ok in zip(items, finite, strict=True) if not ok]
    if bad:
        raise ValueError(
            f"scores must be finite, but the prunable leaves {bad} contain NaN or "
            "inf. Fix the criterion (or the params it scored: NaN weights give NaN "
            "scores); to keep weights pruned pass mask= instead of -inf scores."
        )


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
    # A traced sparsity cannot raise: clip it into [0, 1]; NaN removes everything.
    s = jnp.where(jnp.isnan(s), jnp.float32(1), jnp.clip(s, 0.0, 1.0))
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
    sparsity: float | jax.Array,
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
    requested all alive ones are kept. Non-prunable leaves are all ``True``. A
    higher sparsity gives a subset.

    Bad values under ``jax.jit``: concrete scores (arguments of an eager call,
    or constants closed over by a jitted function) and a concrete sparsity are
    checked and raise. Traced values cannot raise, so they follow fixed rules
    instead: a NaN score ranks below every other score (as ``-inf``), so a
    NaN-scored weight is never kept before a finite-scored one; a traced
    sparsity outside ``[0, 1]`` is clipped into it (below 0 keeps everything,
    above 1 keeps nothing) and a NaN sparsity removes every prunable weight,
    so a bad sparsity gives a visibly broken mask rather than a plausible one.

    Args:
      scores: pytree parallel to params; higher means keep.
      sparsity: fraction of prunable weights removed, in ``[0, 1)``; a Python
        float or scalar array, possibly traced (``jax.jit``, ``jax.vmap``).
      scope: ``"global"`` or ``"layerwise"``. Static.
      prunable: predicate ``(path, leaf) -> bool``. Static.
      mask: optional ``bool`` pytree; weights it prunes stay pruned.

    Returns:
      A ``bool`` pytree with the structure and leaf shapes of ``scores``.

    Other per-layer allocations (ERK, learned, another criterion's densities)
    are ``allocation`` functions passed to ``criteria.prune_at_init``.

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
    _check_sparsity(sparsity)
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
        keeps = [_keep_top(x, _num_keep(sparsity, x.size)) for x in flat]
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
"""Alias of ``sparsity``."""


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
        leaf_name(p): 1.0 - int(c) / m.size if m.size else 0.0
        for (p, m), c in zip(chosen, counts, strict=True)
    }


SCHEDULES = ("geometric", "linear")
"""Sparsity schedules of multi-round pruning (IRP and ``prune_at_init``)."""
_SCHEDULE_ALIASES = {"exponential": "geometric"}  # SynFlow's paper's name


def schedule_sparsity(
    sparsity: float | jax.Array, round_index: Any, num_rounds: int, schedule: str
) -> Any:
    """Sparsity to reach after round ``round_index`` (0-based) of ``num_rounds``.

    ``"geometric"`` keeps the same fraction of the remaining weights every
    round: density ``(1 - s) ** ((r + 1) / R)`` (SynFlow calls it
    "exponential", accepted as a synonym); ``"linear"`` removes the same number
    every round: sparsity ``s * (r + 1) / R``. Both end exactly at ``s``. The
    one schedule formula of the library (IRP's rounds and multi-round
    pruning at initialisation).

    Args:
      sparsity: final sparsity ``s`` in ``[0, 1)``; Python float or traced.
      round_index: ``r``, Python int or traced int.
      num_rounds: ``R >= 1``. Static.
      schedule: one of ``SCHEDULES``. Static.

    Returns:
      The sparsity after round ``r`` (a Python float for Python inputs).

    Raises:
      ValueError: on an unknown schedule.

    Example:
      >>> schedule_sparsity(0.99, 0, 2, "geometric")   # 1 - 0.01 ** 0.5
      0.9
    """
    name = _SCHEDULE_ALIASES.get(schedule, schedule)
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    frac = (round_index + 1) / num_rounds
    if name == "geometric":
        return 1.0 - (1.0 - sparsity) ** frac
    return sparsity * frac
