"""A 2-D convolution whose gradients are canonical-layout convolutions.

Inside a ``lax.scan`` (the jitted training epoch), XLA:CPU leaves the two
convolutions that reverse-mode autodiff derives for a conv (``f01b_i01o->01bf``
for the kernel gradient, ``b01f_01oi->b01f`` for the input gradient) in their
non-canonical layouts and runs them several times slower than outside a loop.
``conv_general_dilated`` here computes the same gradients with a custom VJP
that states them directly in the canonical ``NHWC``/``HWIO`` form. Measured on
LeNet-5 / Fashion-MNIST on 2 CPU cores: see ``experiments/bench_train.py``.

The custom VJP supports reverse mode (``jax.grad``, also twice) but not forward
mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``), which is why models only use
it when built with ``fast_conv_grad=True``: training uses it, criteria and
features that need forward-over-reverse products use the plain model. Both
give the same params tree.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _explicit_pads(x_shape, k_shape, strides, padding) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(x_shape[1:3], k_shape[:2], strides, padding)
    else:
        pads = padding
    return tuple((int(lo), int(hi)) for lo, hi in pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC)


def _conv_fwd(x, kernel, strides, pads):
    return _conv(x, kernel, strides, pads), (x, kernel)


def _conv_bwd(strides, pads, residuals, dy):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    # Kernel gradient: dk[i, j, c, o] = sum_{b, h, w} x_pad[b, s*h + i, s*w + j, c]
    # * dy[b, h, w, o], a convolution with batch and feature axes swapped and the
    # output gradient dilated by the stride.
    dk = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),  # [C, H, W, B]
        dy.transpose(1, 2, 0, 3),  # [h, w, B, O]
        (1, 1),
        pads,
        rhs_dilation=strides,
        dimension_numbers=_NHWC,
    )[:, :kh, :kw, :].transpose(1, 2, 0, 3)
    # Input gradient: full correlation of the stride-dilated output gradient with
    # the flipped kernel, its in/out axes swapped, cropped back to x's size.
    back_pads = []
    for size, k, s, (lo, hi), out in zip(
        x.shape[1:3], (kh, kw), strides, pads, dy.shape[1:3], strict=True
    ):
        rest = size + lo + hi - (s * (out - 1) + k)
        back_pads.append((k - 1 - lo, k - 1 - hi + rest))
    dx = lax.conv_general_dilated(
        dy,
        kernel[::-1, ::-1].transpose(0, 1, 3, 2),
        (1, 1),
        back_pads,
        lhs_dilation=strides,
        dimension_numbers=_NHWC,
    )
    return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated`` with canonical-layout gradients where it can.

    A drop-in for ``flax.linen.Conv(conv_general_dilated=...)``. 2-D NHWC/HWIO
    convolutions with any strides and padding, no dilation and one feature
    group take the custom-VJP path; anything else calls
    ``lax.conv_general_dilated`` unchanged.

    Args:
      lhs: input ``[B, H, W, C]``.
      rhs: kernel ``[kh, kw, C, O]``.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision: as for ``lax.conv_general_dilated``.
      **kwargs: passed to ``lax.conv_general_dilated`` on the fallback path.

    Returns:
      ``[B, H', W', O]``, equal to ``lax.conv_general_dilated``'s output.
    """
    plain = functools.partial(
        lax.conv_general_dilated,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
    canonical = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if (
        lhs.ndim != 4
        or numbers != canonical
        or not undilated
        or feature_group_count != 1
        or precision is not None
        or kwargs
    ):
        return plain()
    strides = tuple(int(s) for s in window_strides)
    pads = _explicit_pads(lhs.shape, rhs.shape, strides, padding)
    return _conv(lhs, rhs, strides, pads)
