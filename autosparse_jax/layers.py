"""Static per-layer context of a network's prunable leaves (host, from shapes).

Which prunable leaf sits where in the forward pass, and its fan-in, fan-out and
size: what the per-weight features and the per-layer allocations read. Depth
is the order in which ``apply_fn`` first reads each leaf (from its jaxpr), not
the alphabetical tree order, which puts ``Conv_10`` before ``Conv_2``.
"""

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from autosparse_jax import masks
from autosparse_jax.types import ApplyFn, Params, PrunableFn


class LeafContext(NamedTuple):
    """Static context of one prunable leaf (Python ints).

    Attributes:
      layer_index: position among the prunable leaves in the order the forward
        pass first uses them (0 = nearest the input).
      num_layers: number of prunable leaves.
      fan_in: inputs per output unit, ``prod(shape[:-1])``.
      fan_out: outputs per input unit, ``shape[-1] * prod(shape[:-2])``.
      size: number of weights in the leaf.
    """

    layer_index: int
    num_layers: int
    fan_in: int
    fan_out: int
    size: int


def _first_use_order(jaxpr: Any, leaf_of: dict, order: list) -> None:
    """Appends leaf ids to ``order`` in the order ``jaxpr`` first reads them."""
    for eqn in jaxpr.eqns:
        used = [leaf_of[v] for v in eqn.invars if _is_var(v) and v in leaf_of]
        subs = list(jax_core.jaxprs_in_params(eqn.params))
        for sub in subs:
            if len(sub.invars) == len(eqn.invars):
                inner = {
                    iv: leaf_of[ov]
                    for ov, iv in zip(eqn.invars, sub.invars, strict=True)
                    if _is_var(ov) and ov in leaf_of
                }
                _first_use_order(sub, inner, order)
        order.extend(sorted(set(used)))  # read by an opaque call: tree order


def _is_var(v: Any) -> bool:
    return not isinstance(v, jax_core.Literal)


def layer_contexts(
    params: Params,
    *,
    apply_fn: ApplyFn,
    input_shape: Sequence[int],
    prunable: PrunableFn = masks.is_prunable,
) -> list[LeafContext | None]:
    """The ``LeafContext`` of every leaf of ``params`` (host; ``None``: not prunable).

    Depth is the order in which ``apply_fn`` first reads each prunable leaf
    (from its jaxpr), not the alphabetical tree order, which puts ``Conv_10``
    before ``Conv_2``.

    Args:
      params: the params (only shapes are read).
      apply_fn: ``apply_fn(params, x) -> logits``.
      input_shape: one example's shape, e.g. ``(28, 28, 1)``.
      prunable: predicate ``(path, leaf) -> bool``.

    Returns:
      One entry per leaf, in ``jax.tree.leaves`` order.

    Example:
      >>> layer_contexts(params, apply_fn=apply_fn, input_shape=(28, 28, 1))[0]
      LeafContext(layer_index=0, num_layers=3, fan_in=784, fan_out=300, ...)
    """
    items, flags, _ = masks._flatten(params, prunable, "params")
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    closed = jax.make_jaxpr(apply_fn)(params, x)
    invars = closed.jaxpr.invars[: len(items)]
    order: list[int] = []
    _first_use_order(closed.jaxpr, {v: i for i, v in enumerate(invars)}, order)
    seen = list(dict.fromkeys(i for i in order if flags[i]))
    seen += [i for i, f in enumerate(flags) if f and i not in seen]  # unused leaves
    depth = {i: d for d, i in enumerate(seen)}
    out: list[LeafContext | None] = []
    for i, (_, leaf) in enumerate(items):
        shape = np.shape(leaf)
        out.append(
            LeafContext(
                layer_index=depth[i],
                num_layers=len(seen),
                fan_in=math.prod(shape[:-1]),
                fan_out=shape[-1] * math.prod(shape[:-2]),
                size=math.prod(shape),
            )
            if flags[i]
            else None
        )
    return out


def tree_order_contexts(
    params: Params, *, prunable: PrunableFn = masks.is_prunable
) -> list[LeafContext | None]:
    """``layer_contexts`` without a forward pass: depth is the tree order (host).

    Example:
      >>> tree_order_contexts(params)[1].layer_index
      0
    """
    items, flags, _ = masks._flatten(params, prunable, "params")
    num = int(sum(flags))
    out: list[LeafContext | None] = []
    depth = 0
    for (_, leaf), flag in zip(items, flags, strict=True):
        if not flag:
            out.append(None)
            continue
        shape = np.shape(leaf)
        out.append(
            LeafContext(
                layer_index=depth,
                num_layers=num,
                fan_in=math.prod(shape[:-1]),
                fan_out=shape[-1] * math.prod(shape[:-2]),
                size=math.prod(shape),
            )
        )
        depth += 1
    return out
