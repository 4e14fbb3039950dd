"""Statistics of a weight's input and output unit, for the context features.

A kernel ``W`` of shape ``(..., J, I)`` connects input unit ``j`` to output
unit ``i``: for a Dense kernel ``(J, I)`` the input feature and the output
neuron; for a conv kernel ``(kh, kw, C_in, C_out)`` the input channel and the
output channel (the spatial taps ``...`` belong to both). The statistics here
are per unit, broadcast back to the kernel's shape so that each weight reads
its own units' values (``features.WeightInputs``):

* ``input_rms``: the root mean square of the layer's input activation ``x_j``
  over the examples (and, for a conv, the positions) of the scoring batches,
  ``‖x_j‖`` in Wanda's score ``|w| ‖x_j‖`` (Sun et al. 2024), here at
  initialisation.
* ``input_row_rms`` / ``unit_column_rms``: the root mean square of any
  kernel-shaped array over the weights leaving input ``j`` (``W[..., j, :]``)
  or entering output unit ``i`` (``W[..., :, i]``).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from autosparse_jax import masks
from autosparse_jax.types import ApplyFn, Batch, Params, PrunableFn


def input_row_rms(w: jax.Array) -> jax.Array:
    """RMS over the weights leaving each input unit, broadcast to ``w.shape``.

    Args:
      w: a kernel ``(..., J, I)``.

    Returns:
      ``r`` with ``r[..., j, i] = sqrt(mean(w[..., j, :] ** 2))`` (the mean also
      runs over the leading spatial axes).

    Example:
      >>> input_row_rms(jnp.array([[3.0, 4.0], [0.0, 0.0]]))[:, 0]
      Array([3.535534, 0.      ], dtype=float32)
    """
    axes = tuple(a for a in range(w.ndim) if a != w.ndim - 2)
    return jnp.broadcast_to(jnp.sqrt(jnp.mean(w * w, axes, keepdims=True)), w.shape)


def unit_column_rms(w: jax.Array) -> jax.Array:
    """RMS over the weights entering each output unit, broadcast to ``w.shape``.

    Args:
      w: a kernel ``(..., J, I)``.

    Returns:
      ``c`` with ``c[..., j, i] = sqrt(mean(w[..., :, i] ** 2))``.

    Example:
      >>> unit_column_rms(jnp.array([[3.0, 0.0], [4.0, 0.0]]))[0]
      Array([3.535534, 0.      ], dtype=float32)
    """
    axes = tuple(range(w.ndim - 1))
    return jnp.broadcast_to(jnp.sqrt(jnp.mean(w * w, axes, keepdims=True)), w.shape)


def _kernel_paths(params: Params, prunable: PrunableFn) -> dict[tuple, Any]:
    """``{(module, ..., leaf name): leaf}`` of the prunable leaves."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if prunable(path, leaf):
            out[tuple(getattr(k, "key", getattr(k, "name", k)) for k in path)] = leaf
    return out


def _mean_squares(
    params: Params, images: jax.Array, apply_fn: ApplyFn, kernels: dict
) -> dict[tuple, jax.Array]:
    """The mean square of each prunable kernel's input per input unit, ``[J]``."""
    found: dict[tuple, jax.Array] = {}

    def record(next_fun, args, kwargs, context):
        path = (*context.module.path, "kernel")
        if context.method_name == "__call__" and args and path in kernels:
            if path not in found:  # a shared module: its first call
                x = jnp.asarray(args[0], jnp.float32)
                found[path] = jnp.mean(x * x, tuple(range(x.ndim - 1)))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        apply_fn(params, images)
    return found


def input_rms(
    params: Params,
    batches: Batch,
    *,
    apply_fn: ApplyFn,
    prunable: PrunableFn = masks.is_prunable,
) -> Params:
    """Each weight's input-unit activation RMS over the batches, like ``params``.

    The input of every prunable kernel is read while ``apply_fn`` runs, with
    ``flax.linen.intercept_methods`` on the Linen module that owns the kernel
    (its first call argument); the mean square is averaged over the ``K``
    batches (each batch weighs the same), then square-rooted.

    Args:
      params: the params.
      batches: ``K`` stacked batches, ``image [K, B, ...]``.
      apply_fn: ``apply_fn(params, x) -> logits`` that runs Linen modules
        (``models.make_apply_fn``).
      prunable: predicate ``(path, leaf) -> bool``.

    Returns:
      float32, leaf shape ``param.shape``: ``‖x_j‖`` broadcast along the
      output axis (and the spatial taps) of each prunable kernel; zeros for
      the other leaves.

    Raises:
      ValueError: a prunable kernel's input was not seen (``apply_fn`` is not
        built from Linen modules, or the kernel is not a module's ``kernel``),
        or the input's last axis is not the kernel's input axis.

    Example:
      >>> rms = input_rms(params, batches, apply_fn=apply_fn)
      >>> rms["Dense_0"]["kernel"].shape     # LeNet-300-100
      (784, 300)
    """
    kernels = _kernel_paths(params, prunable)
    per_batch = jax.lax.map(
        lambda x: _mean_squares(params, x, apply_fn, kernels), batches["image"]
    )
    missing = sorted("/".join(map(str, p)) for p in set(kernels) - set(per_batch))
    if missing:
        raise ValueError(
            f"no input was seen for the prunable kernels {missing}: input_rms reads "
            "each kernel's input from the Linen module that owns it, so apply_fn "
            "must run flax.linen modules (models.make_apply_fn) whose first call "
            "argument is the layer's input."
        )

    def leaf(path, p):
        name = tuple(getattr(k, "key", getattr(k, "name", k)) for k in path)
        if name not in kernels:
            return jnp.zeros(jnp.shape(p), jnp.float32)
        ms = jnp.mean(per_batch[name], 0)
        if ms.shape != (p.shape[-2],):
            raise ValueError(
                f"the input of {'/'.join(map(str, name))} has {ms.shape[0]} units "
                f"on its last axis, but the kernel {p.shape} has {p.shape[-2]} "
                "inputs; input_rms supports kernels (..., inputs, outputs)."
            )
        return jnp.broadcast_to(jnp.sqrt(ms)[:, None], p.shape)

    return jax.tree_util.tree_map_with_path(leaf, params)
