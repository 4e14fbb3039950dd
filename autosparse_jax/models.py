"""Flax Linen models used by the pruning experiments, and helpers to apply them.

Every model maps float32 images ``x [B, H, W, C]`` (NHWC) to logits
``[B, num_classes]`` through ``__call__(x, *, train=False)``. Models without
BatchNorm accept and ignore ``train``. The final classifier is always the
``nn.Dense`` named ``"head"``, which ``masks`` uses to find the output layer.
BatchNorm statistics live in the ``batch_stats`` collection (model state), never
in ``params``. The helpers (``init_params``, ``make_apply_fn``, ``apply_model``)
take any other Linen classifier too: they pass ``train`` only to a module whose
``__call__`` has a ``train`` parameter.

Initialisation follows the PyTorch code bases the AutoSparse authors build on
(SynFlow / open_lth): conv and dense kernels are He-normal
(``kaiming_normal_``: variance ``2 / fan_in``, ``2 / fan_out`` for the ResNet
convolutions), biases are zero, BatchNorm scale is one and offset zero.

Example:
    >>> model = models.get_model("resnet20", num_classes=10)
    >>> params, state = models.init_params(key, model, (32, 32, 3))
    >>> apply_fn = models.make_apply_fn(model, state)
    >>> logits = apply_fn(params, images)  # [B, 10]
"""

import functools
import inspect
import itertools
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from autosparse_jax import _names, conv
from autosparse_jax._checks import is_int
from autosparse_jax.types import ApplyFn, ModelState, Params, PRNGKey

_FAN_IN_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_FAN_OUT_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

_BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
_Dense = functools.partial(nn.Dense, kernel_init=_FAN_IN_INIT)


def _check_images(x: jax.Array, model_name: str) -> None:
    """Raises ValueError unless ``x`` is a batch of NHWC images."""
    if x.ndim != 4:
        raise ValueError(
            f"{model_name} expects images of shape [B, H, W, C] (NHWC), got shape "
            f"{x.shape}; add a batch axis with x[None] for a single image."
        )


def _conv(fast_conv_grad: bool, *args: Any, **kwargs: Any) -> nn.Conv:
    """``nn.Conv``; with ``fast_conv_grad``, gradients from ``conv.py``'s VJP."""
    impl = conv.conv_general_dilated if fast_conv_grad else None
    return nn.Conv(*args, conv_general_dilated=impl, **kwargs)


class _Trunk(NamedTuple):
    """The layout-dependent layers of a conv trunk (see ``_trunk``)."""

    enter: Callable[[jax.Array], jax.Array]
    first_conv: Callable[..., nn.Module]
    conv: Callable[..., nn.Module]
    relu_max_pool: Callable[[jax.Array], jax.Array]
    exit: Callable[[jax.Array], jax.Array]
    channel_axis: int  # of the arrays between enter and exit (BatchNorm's axis)


def _identity(x: jax.Array) -> jax.Array:
    return x


def _relu_max_pool(x: jax.Array) -> jax.Array:
    return nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))


def _max_pool_relu(x: jax.Array) -> jax.Array:
    # Equal to ``_relu_max_pool`` (ReLU and max commute), on 4x fewer values:
    # a LeNet-5 training step ~20 % faster batch-minor.
    return nn.relu(conv.max_pool(x))


def _trunk(fast_conv_grad: bool, batch_minor: bool) -> _Trunk:
    """NHWC layers (``nn.Conv``, ``nn.max_pool``) or their batch-minor twins.

    With ``batch_minor`` the trunk runs on ``[C, H, W, B]`` arrays
    (``conv.Conv``, ``conv.max_pool``) between ``enter`` and ``exit``
    (``first_conv`` materialises its input, see ``conv.materialize``); the
    params tree is the same, and ``exit`` returns NHWC, so the flattened
    features reach the dense layers in the same order.
    """
    if batch_minor:
        first = functools.partial(conv.Conv, materialize_input=True)
        return _Trunk(
            conv.to_batch_minor,
            first,
            conv.Conv,
            _max_pool_relu,
            conv.from_batch_minor,
            channel_axis=0,
        )
    nhwc = functools.partial(_conv, fast_conv_grad)
    return _Trunk(_identity, nhwc, nhwc, _relu_max_pool, _identity, channel_axis=-1)


def _flatten(x: jax.Array) -> jax.Array:
    """``[B, ...] -> [B, prod(...)]``."""
    return x.reshape((x.shape[0], -1))


class MLP(nn.Module):
    """Fully connected ReLU network on flattened images.

    Attributes:
        num_classes: Number of logits.
        hidden_sizes: Width of each hidden ``Dense`` layer, input to output.
        fast_conv_grad: Accepted so every model in ``MODELS`` takes it; an MLP
            has no convolutions, so it changes nothing.
    """

    num_classes: int = 10
    hidden_sizes: Sequence[int] = (300, 100)
    fast_conv_grad: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``x [B, H, W, C]`` to logits ``[B, num_classes]``; ignores train."""
        del train
        _check_images(x, "MLP")
        x = _flatten(x)
        for width in self.hidden_sizes:
            x = nn.relu(_Dense(width)(x))
        return _Dense(self.num_classes, name="head")(x)


LeNet300_100 = functools.partial(MLP, hidden_sizes=(300, 100))
"""LeNet-300-100 (LeCun et al. 1998): 266,610 params on 28x28x1 with 10 classes."""

MLP300_200_100_50 = functools.partial(MLP, hidden_sizes=(300, 200, 100, 50))
"""A deeper MLP (five prunable kernels): 321,360 params on 28x28x1, 10 classes.

The CPU-sized architecture-transfer target for scorers trained on
LeNet-300-100.
"""


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling, for 28x28x1 and 32x32x3 inputs.

    conv 6@5x5 'SAME' -> relu -> maxpool 2 -> conv 16@5x5 'VALID' -> relu ->
    maxpool 2 -> flatten -> Dense 120 -> relu -> Dense 84 -> relu -> head.
    The 'SAME' first convolution makes 28x28 MNIST reach the classic 5x5x16 = 400
    features (61,706 params with 10 classes); 32x32x3 CIFAR gives 6x6x16 = 576.
    With ``batch_norm`` each convolution is followed by BatchNorm (before the
    ReLU; 61,750 params, and the running statistics as model state).

    Attributes:
        num_classes: Number of logits.
        batch_norm: Whether to put BatchNorm after each convolution.
        fast_conv_grad: Compute conv gradients with ``conv.conv_general_dilated``
            (canonical layouts; several times faster training on XLA:CPU; no
            forward-mode autodiff). Same params either way.
        batch_minor: Run the conv trunk batch-minor (``conv.Conv``: patches and
            one matmul on ``[C, H, W, B]``), several times faster training on
            XLA:CPU than ``fast_conv_grad``; forward mode works. Same params,
            outputs and gradients (float32 rounding). For CPU; on GPU and TPU
            XLA's native convolution (the default) is the fast one.
    """

    num_classes: int = 10
    batch_norm: bool = False
    fast_conv_grad: bool = False
    batch_minor: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``x [B, H, W, C]`` to logits ``[B, num_classes]``.

        ``train`` selects batch statistics (True) or running averages (False)
        in BatchNorm; it is ignored without BatchNorm.
        """
        _check_images(x, "LeNet5")
        trunk = _trunk(self.fast_conv_grad, self.batch_minor)
        x = trunk.enter(x)
        for conv_fn, features, padding in (
            (trunk.first_conv, 6, "SAME"),
            (trunk.conv, 16, "VALID"),
        ):
            layer = conv_fn(features, (5, 5), padding=padding, kernel_init=_FAN_IN_INIT)
            x = layer(x)
            if self.batch_norm:
                norm = _BatchNorm(
                    use_running_average=not train, axis=trunk.channel_axis
                )
                x = norm(x)
            x = trunk.relu_max_pool(x)
        x = _flatten(trunk.exit(x))
        for width in (120, 84):
            x = nn.relu(_Dense(width)(x))
        return _Dense(self.num_classes, name="head")(x)


LeNet5BN = functools.partial(LeNet5, batch_norm=True)
"""LeNet-5 with BatchNorm after each convolution: 61,750 params on 28x28x1."""


class ConvNet(nn.Module):
    """Conv-2/4/6 of the lottery-ticket paper (Frankle & Carbin 2019, CIFAR-10).

    ``num_blocks`` blocks of two 3x3 'SAME' ReLU convolutions and a 2x2 max pool,
    with widths 64, 128, 256; then flatten -> Dense 256 -> Dense 256 -> head.
    No BatchNorm. Params on 32x32x3 with 10 classes: Conv-2 4,301,642,
    Conv-4 2,425,930, Conv-6 2,262,602 (the paper's table rounds the first two
    to 4.3M and 2.4M but lists 1.7M for Conv-6, which the architecture it
    describes does not give).

    Attributes:
        num_classes: Number of logits.
        num_blocks: 1 (Conv-2), 2 (Conv-4) or 3 (Conv-6).
        fast_conv_grad: Compute conv gradients with ``conv.conv_general_dilated``
            (canonical layouts; several times faster training on XLA:CPU; no
            forward-mode autodiff). Same params either way.
        batch_minor: Run the conv trunk batch-minor (``conv.Conv``: patches and
            one matmul on ``[C, H, W, B]``), several times faster training on
            XLA:CPU than ``fast_conv_grad``; forward mode works. Same params,
            outputs and gradients (float32 rounding). For CPU; on GPU and TPU
            XLA's native convolution (the default) is the fast one.
    """

    num_classes: int = 10
    num_blocks: int = 1
    fast_conv_grad: bool = False
    batch_minor: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``x [B, H, W, C]`` to logits ``[B, num_classes]``; ignores train."""
        del train
        _check_images(x, "ConvNet")
        if self.num_blocks not in (1, 2, 3):
            raise ValueError(
                f"ConvNet num_blocks must be 1, 2 or 3 (Conv-2/4/6), got "
                f"{self.num_blocks}."
            )
        trunk = _trunk(self.fast_conv_grad, self.batch_minor)
        x = trunk.enter(x)
        for block, features in enumerate((64, 128, 256)[: self.num_blocks]):
            for pool in (False, True):
                first = block == 0 and not pool
                conv_fn = trunk.first_conv if first else trunk.conv
                layer = conv_fn(
                    features, (3, 3), padding="SAME", kernel_init=_FAN_IN_INIT
                )
                x = trunk.relu_max_pool(layer(x)) if pool else nn.relu(layer(x))
        x = _flatten(trunk.exit(x))
        for width in (256, 256):
            x = nn.relu(_Dense(width)(x))
        return _Dense(self.num_classes, name="head")(x)


Conv2 = functools.partial(ConvNet, num_blocks=1)
Conv4 = functools.partial(ConvNet, num_blocks=2)
Conv6 = functools.partial(ConvNet, num_blocks=3)

_VGG_PLANS: Mapping[int, tuple[int | str, ...]] = types.MappingProxyType(
    {
        11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
        13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
        16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
        + (512, 512, 512, "M", 512, 512, 512),
        19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")
        + (512, 512, 512, 512, "M", 512, 512, 512, 512),
    }
)


class VGG(nn.Module):
    """CIFAR VGG as in the AutoSparse authors' code (SynFlow's ``lottery_vgg``).

    3x3 convolutions (padding 1, with bias, as in the reference even when followed
    by BatchNorm), each followed by ReLU (BatchNorm then ReLU if ``batch_norm``),
    with 2x2 max pools between stages and none after the last stage; then global
    average pooling to 512 features and a single ``head`` Dense. On 32x32 inputs
    the last stage is 2x2, so the global average equals the reference's
    ``AvgPool2d(2)`` + flatten; unlike it, other input sizes also give 512
    features. Params on 32x32x3 with 10 classes: VGG-11 9,225,610 (9,231,114
    with BN), VGG-16 14,719,818 (14,728,266), VGG-19 20,029,514 (20,040,522).

    Attributes:
        num_classes: Number of logits.
        depth: 11, 13, 16 or 19.
        batch_norm: Whether to put BatchNorm after every convolution.
        fast_conv_grad: Compute conv gradients with ``conv.conv_general_dilated``
            (canonical layouts; several times faster training on XLA:CPU; no
            forward-mode autodiff). Same params either way.
    """

    num_classes: int = 10
    depth: int = 16
    batch_norm: bool = False
    fast_conv_grad: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``x [B, H, W, C]`` to logits ``[B, num_classes]``.

        ``train`` selects batch statistics (True) or running averages (False)
        in BatchNorm; it is ignored without BatchNorm.
        """
        _check_images(x, "VGG")
        if self.depth not in _VGG_PLANS:
            raise ValueError(
                f"VGG depth must be one of {sorted(_VGG_PLANS)}, got {self.depth}."
            )
        for spec in _VGG_PLANS[self.depth]:
            if spec == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = _conv(
                self.fast_conv_grad, spec, (3, 3), padding=1, kernel_init=_FAN_IN_INIT
            )(x)
            if self.batch_norm:
                x = _BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return _Dense(self.num_classes, name="head")(x)


VGG11 = functools.partial(VGG, depth=11)
VGG11BN = functools.partial(VGG, depth=11, batch_norm=True)
VGG16 = functools.partial(VGG, depth=16)
VGG16BN = functools.partial(VGG, depth=16, batch_norm=True)
VGG19 = functools.partial(VGG, depth=19)
VGG19BN = functools.partial(VGG, depth=19, batch_norm=True)


class BasicBlock(nn.Module):
    """Pre-addition ResNet basic block with a 1x1 conv + BN projection shortcut.

    ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``; the shortcut is
    the identity unless the stride or the width changes (He et al. 2016,
    option B). Convolutions have no bias.

    Attributes:
        features: Output channels.
        strides: Stride of the first 3x3 convolution and of the projection.
        fast_conv_grad: Compute conv gradients with ``conv.conv_general_dilated``
            (canonical layouts; several times faster training on XLA:CPU; no
            forward-mode autodiff). Same params either way.
        batch_minor: Take and return batch-minor ``[C, H, W, B]`` arrays
            (``conv.Conv``, BatchNorm on axis 0). Same params.
    """

    features: int
    strides: int = 1
    fast_conv_grad: bool = False
    batch_minor: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Maps ``x [B, H, W, C]`` to ``[B, H / strides, W / strides, features]``
        (``[C, H, W, B]`` arrays batch-minor)."""
        trunk = _trunk(self.fast_conv_grad, self.batch_minor)
        conv = functools.partial(trunk.conv, use_bias=False, kernel_init=_FAN_OUT_INIT)
        norm = functools.partial(
            _BatchNorm, use_running_average=not train, axis=trunk.channel_axis
        )
        s = (self.strides, self.strides)
        y = nn.relu(norm()(conv(self.features, (3, 3), strides=s, padding=1)(x)))
        y = norm()(conv(self.features, (3, 3), padding=1)(y))
        if self.strides != 1 or x.shape[trunk.channel_axis] != self.features:
            x = norm()(conv(self.features, (1, 1), strides=s, padding="VALID")(x))
        return nn.relu(y + x)


class ResNet(nn.Module):
    """CIFAR-style ResNet of basic blocks (He et al. 2016) with BatchNorm.

    3x3 stem convolution (stride 1, width ``stage_widths[0]``) + BN + ReLU, no
    max pool; stage ``i`` has ``stage_sizes[i]`` basic blocks of width
    ``stage_widths[i]``, the first block of every stage after the first with
    stride 2; then global average pooling and the ``head`` Dense. Shortcuts are
    1x1 conv + BN projections where the shape changes (option B), as in both
    references: open_lth's ResNet-20 and the CIFAR ResNet-18 (kuangliu; SynFlow's
    ``tinyimagenet_resnet``, which the AutoSparse authors train on CIFAR-10).
    Params on 32x32x3 with 10 classes: ResNet-20 272,474; ResNet-18 11,173,962.

    Attributes:
        num_classes: Number of logits.
        stage_sizes: Number of blocks per stage.
        stage_widths: Channels per stage, same length as ``stage_sizes``.
        fast_conv_grad: Compute conv gradients with ``conv.conv_general_dilated``
            (canonical layouts; several times faster training on XLA:CPU; no
            forward-mode autodiff). Same params either way.
        batch_minor: Run the network batch-minor (``conv.Conv``: patches and
            one matmul on ``[C, H, W, B]``; BatchNorm on axis 0); forward mode
            works. Same params, outputs, gradients and running statistics
            (float32 rounding). For CPU; on GPU and TPU XLA's native
            convolution (the default) is the fast one.
    """

    num_classes: int = 10
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    fast_conv_grad: bool = False
    batch_minor: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps ``x [B, H, W, C]`` to logits ``[B, num_classes]``.

        ``train`` selects batch statistics (True) or running averages (False)
        in BatchNorm.
        """
        _check_images(x, "ResNet")
        if len(self.stage_sizes) != len(self.stage_widths):
            raise ValueError(
                f"ResNet stage_sizes {tuple(self.stage_sizes)} and stage_widths "
                f"{tuple(self.stage_widths)} must have the same length."
            )
        trunk = _trunk(self.fast_conv_grad, self.batch_minor)
        x = trunk.enter(x)
        x = trunk.first_conv(
            self.stage_widths[0],
            (3, 3),
            padding=1,
            use_bias=False,
            kernel_init=_FAN_OUT_INIT,
        )(x)
        norm = _BatchNorm(use_running_average=not train, axis=trunk.channel_axis)
        x = nn.relu(norm(x))
        for stage, (size, width) in enumerate(
            zip(self.stage_sizes, self.stage_widths, strict=True)
        ):
            for block in range(size):
                strides = 2 if stage > 0 and block == 0 else 1
                block_fn = BasicBlock(
                    width, strides, self.fast_conv_grad, self.batch_minor
                )
                x = block_fn(x, train=train)
        x = jnp.mean(trunk.exit(x), axis=(1, 2))
        return _Dense(self.num_classes, name="head")(x)


ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), stage_widths=(16, 32, 64))
ResNet18 = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), stage_widths=(64, 128, 256, 512)
)


class BatchParts(nn.Module):
    """Runs ``module`` on ``parts`` slices of the batch and concatenates the outputs.

    The slices' forward and backward passes are independent programs, which
    XLA:CPU runs on different cores at once (its ops on small convs and
    matmuls use one core each): a LeNet-5 training epoch on 2 cores ran
    1.03-1.28x faster with ``parts=2`` in four side-by-side runs. The
    outputs, and so the loss and the gradients, equal ``module``'s (float32
    rounding: a gradient is summed per slice); the params tree is
    ``module``'s own (``nn.share_scope``), so masks, checkpoints and
    criteria see the same names.

    Where splitting would change the result, the batch runs whole: in
    training mode a module with model state (BatchNorm batch statistics)
    runs unsplit, since each slice would be normalised by its own
    statistics. A batch smaller than ``parts`` gets one slice per example.
    On GPU and TPU leave models unwrapped: one batched program is the fast
    one there.

    Attributes:
        module: Any Linen classifier ``__call__(x)`` or ``__call__(x, *, train)``
            whose outputs are per example (``[B, ...]``).
        parts: How many slices (>= 1); near-equal sizes when it does not
            divide the batch.

    Example:
        >>> twin = models.BatchParts(models.get_model("lenet5", batch_minor=True))
        >>> logits = twin.apply({"params": params}, images)  # LeNet-5's logits
    """

    module: nn.Module
    parts: int = 2

    def setup(self) -> None:
        if not is_int(self.parts) or self.parts < 1:
            raise ValueError(
                f"BatchParts.parts must be a positive int, got {self.parts!r}; "
                "2 suits a 2-core CPU."
            )
        nn.share_scope(self, self.module)

    def __call__(self, x: jax.Array, *, train: bool = False) -> Any:
        """``module(x)`` (with ``train`` where it takes it), computed per slice."""
        kwargs = _train_kwargs(self.module, train)
        stateful = train and any(c != "params" for c in self.variables)
        parts = 1 if stateful else min(self.parts, x.shape[0])
        if parts == 1:
            return self.module(x, **kwargs)
        bounds = [x.shape[0] * i // parts for i in range(parts + 1)]
        outs = [self.module(x[a:b], **kwargs) for a, b in itertools.pairwise(bounds)]
        return jax.tree.map(lambda *o: jnp.concatenate(o), *outs)


MODELS: Mapping[str, Callable[..., nn.Module]] = _names.NameTable(
    "model",
    {
        "lenet300_100": LeNet300_100,
        "mlp300_200_100_50": MLP300_200_100_50,
        "lenet5": LeNet5,
        "lenet5_bn": LeNet5BN,
        "conv2": Conv2,
        "conv4": Conv4,
        "conv6": Conv6,
        "vgg11": VGG11,
        "vgg11_bn": VGG11BN,
        "vgg16": VGG16,
        "vgg16_bn": VGG16BN,
        "vgg19": VGG19,
        "vgg19_bn": VGG19BN,
        "resnet20": ResNet20,
        "resnet18": ResNet18,
    },
)
"""Read-only mapping from model name to constructor taking ``num_classes=...``."""


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds the model registered under ``name`` in ``MODELS``.

    Args:
        name: A key of ``MODELS``, e.g. ``"resnet18"``.
        **kwargs: Module fields, e.g. ``num_classes=100``.

    Returns:
        The (unbound) Linen module.

    Raises:
        ValueError: If ``name`` is not a key of ``MODELS`` or ``num_classes`` is
            not a positive int.
        TypeError: On a field the model does not have.
    """
    if name not in MODELS:
        raise ValueError(
            f"Unknown model {name!r}; valid names are: {', '.join(sorted(MODELS))}."
        )
    num_classes = kwargs.get("num_classes", 1)
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive int, got {num_classes!r}; e.g. "
            "data.DATASETS[name].num_classes."
        )
    return MODELS[name](**kwargs)


def init_params(
    key: PRNGKey, model: nn.Module, input_shape: Sequence[int]
) -> tuple[Params, ModelState]:
    """Initialises ``model`` on a batch of one all-zeros image.

    Args:
        key: PRNG key for the parameter initialisers.
        model: A Linen module of this file, or any Linen classifier
            (``__call__(x)`` or ``__call__(x, *, train)``).
        input_shape: ``(H, W, C)`` of one image, without the batch axis.

    Returns:
        ``(params, model_state)``: the ``params`` collection, and a dict of the
        other collections (``{"batch_stats": ...}`` with BatchNorm, else ``{}``).

    Raises:
        ValueError: If ``input_shape`` is not three positive ints, or is too
            small for the model (a pooling or strided layer would empty a
            spatial axis; the message gives the smallest square input that
            works).
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(is_int(d) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape must be three positive ints (H, W, C) without the batch "
            f"axis, e.g. (28, 28, 1) or (32, 32, 3); got {input_shape!r}."
        )
    shape = tuple(int(d) for d in shape)
    x = jnp.zeros((1, *shape), jnp.float32)
    try:
        with nn.intercept_methods(_refuse_empty_inputs):
            variables = model.init(key, x, **_train_kwargs(model, False))
    except _EmptyInput as err:
        raise ValueError(
            f"{type(model).__name__} cannot run on inputs of shape {shape}: its "
            f"layer {err.args[0]!r} receives an empty array of shape "
            f"{err.args[1]} (pooling or strides shrank a spatial axis to 0). "
            f"{_minimum_size(key, model, shape)}"
        ) from None
    params = variables["params"]
    model_state = {name: col for name, col in variables.items() if name != "params"}
    return params, model_state


class _EmptyInput(Exception):
    """A submodule was called on an array with a zero-sized axis."""


def _refuse_empty_inputs(next_fun, args, kwargs, context):
    for x in jax.tree.leaves((args, kwargs)):
        if 0 in getattr(x, "shape", (1,)):
            path = "/".join(context.module.path) or type(context.module).__name__
            raise _EmptyInput(path, tuple(x.shape))
    return next_fun(*args, **kwargs)


def _minimum_size(key: PRNGKey, model: nn.Module, shape: tuple[int, ...]) -> str:
    """The smallest square ``(s, s, C)`` input ``model`` initialises on, as a
    sentence (searched with abstract evaluation only, up to 512)."""
    for size in range(1, 513):
        x = jax.ShapeDtypeStruct((1, size, size, shape[2]), jnp.float32)
        try:
            with nn.intercept_methods(_refuse_empty_inputs):
                jax.eval_shape(
                    functools.partial(model.init, **_train_kwargs(model, False)), key, x
                )
        except _EmptyInput:
            continue
        hint = " (an MLP takes 1-D signals)" if min(shape[:2]) == 1 else ""
        return (
            f"It needs inputs of at least {size}x{size} pixels, e.g. "
            f"({size}, {size}, {shape[2]}){hint}."
        )
    return "No square input up to 512x512 works either."


@functools.cache
def _takes_train(module_type: type) -> bool:
    """Whether ``module_type.__call__`` has a parameter named ``train``."""
    try:
        signature = inspect.signature(module_type.__call__)
    except (TypeError, ValueError):  # No introspectable signature (builtins).
        return False
    return "train" in signature.parameters


def _train_kwargs(model: nn.Module, train: bool) -> dict[str, bool]:
    return {"train": train} if _takes_train(type(model)) else {}


def apply_model(
    model: nn.Module,
    variables: Mapping[str, Any],
    x: jax.Array,
    *,
    train: bool,
    mutable: bool | str | Sequence[str] = False,
) -> Any:
    """``model.apply(variables, x, train=train, mutable=mutable)`` for any classifier.

    ``train`` is passed only when the module's ``__call__`` has a parameter named
    ``train`` (as every model of this file does); otherwise it is dropped, so a
    plain ``__call__(self, x)`` works too. A ``__call__(self, *args, **kwargs)``
    (e.g. ``nn.Sequential``) does not get it. The check reads the signature of
    ``type(model).__call__`` once per class.

    Args:
        model: Any Linen module mapping ``x`` to logits.
        variables: ``{"params": ..., **model_state}``.
        x: ``[B, H, W, C]`` float32 images.
        train: Training mode (BatchNorm batch statistics) where the model has one.
        mutable: Collections to update, as in ``nn.Module.apply``.

    Returns:
        ``logits [B, num_classes]``; with ``mutable``, ``(logits, updated)`` as
        ``nn.Module.apply`` returns them.

    Raises:
        ValueError: The params were initialised for inputs of another shape
            (e.g. 3-channel params on 1-channel images).

    Example:
        >>> class Linear(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))
        >>> x = jnp.zeros((2, 4, 4, 1))
        >>> variables = Linear().init(jax.random.key(0), x)
        >>> models.apply_model(Linear(), variables, x, train=True).shape
        (2, 3)
    """
    kwargs = _train_kwargs(model, train)
    try:
        return model.apply(variables, x, mutable=mutable, **kwargs)
    except flax.errors.ScopeParamShapeError as err:
        raise ValueError(
            f"{type(model).__name__}'s params were built for other inputs than "
            f"these of shape {tuple(x.shape[1:])} (batch shape {tuple(x.shape)}): "
            f"{str(err).split(' (https')[0]} Initialise the params for these "
            "inputs (models.init_params(key, model, input_shape)) or feed the "
            "images they were built for (channels, height, width)."
        ) from err


def make_apply_fn(
    model: nn.Module, model_state: ModelState = None, *, train: bool = False
) -> ApplyFn:
    """Returns ``apply_fn(params, x) -> logits`` with the model state bound.

    With ``train=False`` BatchNorm uses the running statistics in
    ``model_state`` (inference mode, deterministic). With ``train=True`` it uses
    the statistics of the batch ``x``, and the updated running statistics are
    discarded (use ``model.apply(..., mutable=["batch_stats"])`` to keep them).
    The returned function is pure and works under ``jax.jit`` and ``jax.grad``
    w.r.t. ``params``.

    Args:
        model: A Linen module of this file, or any Linen classifier; ``train``
            reaches it only if its ``__call__`` has that parameter
            (``apply_model``).
        model_state: Non-parameter collections from ``init_params``; ``None``
            means ``{}``. Required for BatchNorm models when ``train=False``.
        train: Whether BatchNorm uses batch statistics.

    Returns:
        ``apply_fn(params, x [B, H, W, C]) -> logits [B, num_classes]``.
    """
    state = {} if model_state is None else dict(model_state)
    name = type(model).__name__

    def apply_fn(params: Params, x: jax.Array) -> jax.Array:
        variables = {"params": params, **state}
        if train:
            logits, _ = apply_model(
                model, variables, x, train=True, mutable=["batch_stats"]
            )
            return logits
        try:
            return apply_model(model, variables, x, train=False)
        except flax.errors.ScopeCollectionNotFound as err:
            raise ValueError(
                f"{name} needs model state (e.g. batch_stats) for inference but "
                f"make_apply_fn got {sorted(state)}; pass the model_state returned "
                f"by init_params, or train=True to use batch statistics."
            ) from err

    return apply_fn


def count_params(params: Params) -> int:
    """Total number of scalars in ``params`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
