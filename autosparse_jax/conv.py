"""Convolutions that train fast on XLA:CPU, with the params and gradients of nn.Conv.

Two independent tools:

* ``conv_general_dilated``: a drop-in for ``flax.linen.Conv(conv_general_dilated=
  ...)`` whose gradients are canonical-layout convolutions. Inside a
  ``lax.scan`` (the jitted training epoch), XLA:CPU leaves the two convolutions
  that reverse-mode autodiff derives for a conv (``f01b_i01o->01bf`` for the
  kernel gradient, ``b01f_01oi->b01f`` for the input gradient) in their
  non-canonical layouts and runs them several times slower than outside a loop;
  the custom VJP here states them directly in the canonical ``NHWC``/``HWIO``
  form. It supports reverse mode (``jax.grad``, also twice) but not forward mode
  (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``), which is why models only use
  it when built with ``fast_conv_grad=True``.
* The batch-minor layer set (``to_batch_minor``, ``Conv``, ``max_pool``,
  ``from_batch_minor``; ``materialize`` for the first layer's input): the
  conv trunk of a small network computed on ``[C, H, W, B]`` arrays, batch
  last. A convolution is one gather of input windows (contiguous rows of ``B``
  floats) and one matmul: plain patches (im2col), or by default 2x2 output
  tiles whose windows overlap less (``default_tile``); max pooling is a reshape
  and a max. With few channels (LeNet-5's 1 and 6) XLA:CPU vectorises these
  along the batch, where its native convolution and ``reduce_window`` pooling
  vectorise along the channels and stall. Plain JAX
  ops only, so forward mode works too. Models use it when built with
  ``batch_minor=True``; XLA's native convolution stays the default everywhere
  else (GPU, TPU). Measured on LeNet-5 / Fashion-MNIST on 2 CPU cores: see
  ``experiments/bench_train.py``.

Both give the same params tree as ``nn.Conv`` and the same outputs and
gradients to float32 rounding.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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


# ------------------------------------------------------------- batch-minor layers


def to_batch_minor(x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` images to the batch-minor ``[C, H, W, B]`` layout."""
    if x.ndim != 4:
        raise ValueError(
            f"to_batch_minor expects images [B, H, W, C], got shape {x.shape}."
        )
    return x.transpose(3, 1, 2, 0)


def materialize(x: jax.Array) -> jax.Array:
    """``x [..., B]`` itself, computed once: a matmul with the identity.

    XLA fuses cheap producers into their consumers. A convolution's patch
    gather reads every input element ``kh * kw`` times, so a first layer's
    input (the batch's gather from the dataset, preprocessing, the transpose
    to batch-minor) would be recomputed for each read: a LeNet-5 training
    step ran about 1.3x slower. A dot is never fused into a gather, and
    multiplying by the identity is exact for finite values (a NaN or inf in
    one example makes NaN the block of up to ``_MATERIALIZE_BLOCK``
    examples it shares a row with). The identity is ``gcd(B, 128)`` wide, so
    the cost stays linear in the batch (one as wide as an evaluation batch of
    2,000 cost 8 GFLOP a batch; at 16 wide, LeNet-5's 10k-image evaluation
    took 0.54 s against 0.63 s at 128). Below 16 wide (a batch of 125 gets 1:
    its evaluation ran 2x slower) the rows span examples instead:
    ``gcd(x.size, 128)``.
    """
    block = math.gcd(x.shape[-1], _MATERIALIZE_BLOCK)
    if block < 16:
        block = math.gcd(x.size, _MATERIALIZE_BLOCK)
    rows = x.reshape(-1, block)
    return (rows @ jnp.eye(block, dtype=x.dtype)).reshape(x.shape)


_MATERIALIZE_BLOCK = 128  # the training batch of the recipes: measured there


def from_batch_minor(x: jax.Array) -> jax.Array:
    """``[C, H, W, B]`` back to ``[B, H, W, C]`` (so flattening matches NHWC)."""
    return x.transpose(3, 1, 2, 0)


@functools.lru_cache(maxsize=128)
def _patch_index(
    padded: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    tile: tuple[int, int],
) -> np.ndarray:
    """Flat ``h * W + w`` positions of every output tile's input window.

    Window offset major, then the tile's row and column: ``[uh * uw * nh * nw]``
    for ``nh x nw`` tiles whose windows are ``uh x uw``. With a 1x1 tile these
    are the patches of a plain im2col.
    """
    (hp, wp), (kh, kw), (sh, sw), (th, tw) = padded, kernel, strides, tile
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    uh, uw = (th - 1) * sh + kh, (tw - 1) * sw + kw
    a, u, h, w = np.meshgrid(
        np.arange(uh), np.arange(uw), np.arange(ho // th), np.arange(wo // tw),
        indexing="ij",
    )  # fmt: skip
    index = (h * th * sh + a) * wp + (w * tw * sw + u)
    index = index.astype(np.int32).reshape(-1)
    index.flags.writeable = False
    return index


@functools.lru_cache(maxsize=128)
def _tile_kernel_index(
    kernel_shape: tuple[int, int, int, int],
    strides: tuple[int, int],
    tile: tuple[int, int],
) -> np.ndarray:
    """Where each entry of the tile matrix sits in the flat kernel.

    The matrix maps a tile's input window ``[C, uh, uw]`` to its outputs
    ``[O, th, tw]``: entry ``[(o, y, z), (c, a, u)]`` is ``kernel[a - y * sh,
    u - z * sw, c, o]`` where that offset lies inside the kernel, else zero
    (index ``kernel.size``, a zero appended to the flat kernel).
    """
    (kh, kw, c, o), (sh, sw), (th, tw) = kernel_shape, strides, tile
    uh, uw = (th - 1) * sh + kh, (tw - 1) * sw + kw
    oo, y, z, cc, a, u = np.meshgrid(
        np.arange(o), np.arange(th), np.arange(tw), np.arange(c), np.arange(uh),
        np.arange(uw), indexing="ij",
    )  # fmt: skip
    i, j = a - y * sh, u - z * sw
    inside = (i >= 0) & (i < kh) & (j >= 0) & (j < kw)
    flat = ((i * kw + j) * c + cc) * o + oo
    index = np.where(inside, flat, kh * kw * c * o).astype(np.int32)
    index = index.reshape(o * th * tw, c * uh * uw)
    index.flags.writeable = False
    return index


def default_tile(kernel_shape: Sequence[int], out_hw: Sequence[int]) -> tuple[int, int]:
    """The output tile ``batch_minor_conv`` uses unless told: 2x2 where it pays.

    A ``th x tw`` tile multiplies a ``[O * th * tw, C * uh * uw]`` matrix with
    each tile's ``uh x uw`` input window, one column per tile and example: the
    gather copies each input ``uh * uw / (th * tw)`` times instead of ``kh *
    kw``, at the price of multiplying by the zeros of the tile matrix
    (``uh * uw / (kh * kw)`` times the FLOPs). On XLA:CPU the im2col matmul of a
    small conv is bound by that copy, not by FLOPs, so 2x2 tiles ran LeNet-5's
    training step about 1.3x faster, Conv-4's 1.1x, ResNet-20's 1.2x
    (``experiments/bench_train.py``). Where the contraction ``C * kh * kw`` is
    shorter than ``O`` (a first layer with many filters: Conv-2's 1 -> 64 at
    3x3) the output write dominates and tiles ran slower, so they stay 1x1;
    so does an axis the kernel does not span or whose output length is odd.
    """
    kh, kw, c, o = kernel_shape
    if kh * kw * c < o:
        return (1, 1)
    return tuple(
        2 if k > 1 and n % 2 == 0 else 1 for k, n in zip((kh, kw), out_hw, strict=True)
    )


def batch_minor_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
    *,
    materialize_input: bool = False,
    tile: Sequence[int] | None = None,
) -> jax.Array:
    """2-D convolution of batch-minor ``x [C, H, W, B]`` with ``kernel [kh, kw, C, O]``.

    Equal to ``lax.conv_general_dilated`` on the NHWC transpose of ``x`` (same
    ``strides`` and ``padding``: "SAME", "VALID" or explicit pairs), returned
    as ``[O, H', W', B]``. The outputs are computed in ``tile = (th, tw)``
    blocks: each block's input window is gathered (``[C * uh * uw, blocks *
    B]``, contiguous rows of ``B`` floats) and multiplied by one ``[O * th *
    tw, C * uh * uw]`` matrix built from the kernel; a 1x1 tile is the plain
    patches-and-matmul (im2col). ``tile`` must divide ``(H', W')``; None takes
    ``default_tile``. With ``materialize_input`` the padded input goes through
    ``materialize`` first (for a network's first layer).
    """
    c, h, w, b = x.shape
    kh, kw, kc, o = kernel.shape
    if kc != c:
        raise ValueError(
            f"kernel {kernel.shape} expects {kc} input channels, but x {x.shape} "
            f"(batch-minor [C, H, W, B]) has {c}."
        )
    strides = tuple(int(s) for s in strides)
    pads = _explicit_pads((b, h, w, c), kernel.shape, strides, padding)
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    if materialize_input:
        xp = materialize(xp)
    hp, wp = xp.shape[1:3]
    ho, wo = (hp - kh) // strides[0] + 1, (wp - kw) // strides[1] + 1
    tile = default_tile(kernel.shape, (ho, wo)) if tile is None else tuple(tile)
    th, tw = tile
    if ho % th or wo % tw:
        raise ValueError(
            f"tile {tile} does not divide the output size {(ho, wo)}; pass a tile "
            f"whose sides divide it, or tile=None for the default."
        )
    index = _patch_index((hp, wp), (kh, kw), strides, tile)
    # Every index is in range: "clip" skips the out-of-bounds masking.
    patches = jnp.take(xp.reshape(c, hp * wp, b), index, axis=1, mode="clip")
    if tile == (1, 1):
        matrix = kernel.transpose(2, 0, 1, 3).reshape(c * kh * kw, o).T
    else:
        flat = jnp.concatenate([kernel.reshape(-1), jnp.zeros((1,), kernel.dtype)])
        matrix = flat[_tile_kernel_index(kernel.shape, strides, tile)]
    out = matrix @ patches.reshape(matrix.shape[1], -1)
    out = out.reshape(o, th, tw, ho // th, wo // tw, b).transpose(0, 3, 1, 4, 2, 5)
    return out.reshape(o, ho, wo, b)


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, of batch-minor ``x [C, H, W, B]`` (odd edges dropped).

    Equal to ``nn.max_pool(x, (2, 2), strides=(2, 2))`` in NHWC. Its gradient
    splits a tie between the tied inputs, where ``nn.max_pool``'s gives it to
    one of them; models pool before the ReLU, whose gradient zeroes the
    all-zero windows where ties are common.
    """
    c, h, w, b = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(c, h // 2, 2, w // 2, 2, b).max(axis=(2, 4))


class Conv(nn.Module):
    """``nn.Conv`` on batch-minor ``[C, H, W, B]`` inputs: same params, same init.

    Declares ``kernel [kh, kw, C, O]`` and ``bias [O]`` exactly as ``nn.Conv``
    does (names, shapes, initialisers, RNG streams), so a model whose conv
    layers carry ``nn.Conv``'s names gets the same params tree either way.

    Attributes:
        features: Output channels.
        kernel_size: ``(kh, kw)``.
        strides: ``(sh, sw)``.
        padding: "SAME", "VALID", an int, or ``((lo, hi), (lo, hi))``.
        use_bias: Whether to add a bias.
        kernel_init, bias_init: As for ``nn.Conv``.
        materialize_input: ``batch_minor_conv``'s option: set it on a
            network's first convolution.
        tile: ``batch_minor_conv``'s output tile; None takes ``default_tile``.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: str | int | Sequence[tuple[int, int]] = "SAME"
    use_bias: bool = True
    kernel_init: Any = nn.linear.default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()
    materialize_input: bool = False
    tile: Sequence[int] | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[C, H, W, B] -> [features, H', W', B]``."""
        shape = (*self.kernel_size, x.shape[0], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        padding = self.padding
        if isinstance(padding, int):
            padding = ((padding, padding), (padding, padding))
        y = batch_minor_conv(
            x,
            kernel,
            self.strides,
            padding,
            materialize_input=self.materialize_input,
            tile=self.tile,
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias[:, None, None, None]
        return y
