"""Datasets through TFDS as host numpy arrays, and pure JAX preprocessing.

MNIST-1D is the exception to TFDS: the ``mnist1d`` package generates it offline.
"""

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autosparse_jax.types import PRNGKey

_AUGMENTED = ("cifar10", "cifar100")


class DatasetInfo(NamedTuple):
    """Static facts about a dataset.

    Attributes:
      num_classes: number of labels, ``0 .. num_classes - 1``.
      input_shape: ``(H, W, C)`` of one example.
      mean: per-channel mean, in [0, 1]-pixel units (raw inputs / ``scale``).
      std: per-channel standard deviation, in the same units as ``mean``.
      scale: raw inputs are divided by ``scale`` to reach [0, 1]-pixel units
        before ``mean``/``std`` are applied (255 for uint8 images).
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        "fashion_mnist": DatasetInfo(10, (28, 28, 1), (0.2860,), (0.3530,)),
        "mnist": DatasetInfo(10, (28, 28, 1), (0.1307,), (0.3081,)),
        "cifar10": DatasetInfo(
            10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
        ),
        "cifar100": DatasetInfo(
            100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
        ),
        # Float signals of length 40, already roughly standardised; mean and std
        # measured on the generated train split (4000 examples).
        "mnist1d": DatasetInfo(10, (40, 1, 1), (-0.0003,), (0.9976,), scale=1.0),
    }
)
"""Supported datasets (read-only): name -> ``DatasetInfo``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """How ``preprocess`` treats images; hashable, so usable as a static jit arg.

    Attributes:
      mean: per-channel mean in [0, 1] pixel units, length C (or 1).
      std: per-channel standard deviation in [0, 1] pixel units, length C (or 1).
      augment: apply ``random_crop_flip`` when ``preprocess(..., train=True)``.
      scale: raw inputs are divided by it before ``mean``/``std`` (255 for uint8
        images, 1 for mnist1d's float signals).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    scale: float = 255.0


def _check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}; supported datasets are {sorted(DATASETS)}."
        )
    return DATASETS[name]


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Loads a whole split as host numpy arrays (host function).

    Data are prepared once in ``data_dir`` (TFDS array_record files) and reused
    afterwards. Reading needs neither TensorFlow nor the network; preparing a TFDS
    builder that encodes images (mnist, cifar) needs TensorFlow
    (``pip install autosparse_jax[data]``). ``fashion_mnist`` is prepared offline
    from the four IDX files found in, in order: ``source_dir``, the directory in
    ``$AUTOSPARSE_FASHION_MNIST_DIR``, ``/usr/share/datasets/fashion-mnist``
    (``apt-get install dataset-fashion-mnist``); without them TFDS downloads it.

    ``mnist1d`` does not use TFDS: the ``mnist1d`` package generates the standard
    dataset (4000 train and 1000 test signals of length 40, seed 42) offline in
    about a second, cached once in ``<data_dir>/mnist1d/`` as an .npz file.
    Its splits are ``"train"``, ``"test"`` or a TFDS-style slice of one with int
    or percent bounds (``"train[:1000]"``, ``"train[1000:]"``, ``"test[:50%]"``;
    percents round to the closest index, as TFDS does).

    Args:
      name: one of ``sorted(DATASETS)``.
      split: a TFDS split string, e.g. ``"train"``, ``"test"``, ``"train[:1000]"``.
      data_dir: TFDS data directory (also holds the mnist1d cache); ``None`` is
        TFDS's default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      source_dir: directory with the Fashion-MNIST IDX files (``fashion_mnist``
        only).

    Returns:
      ``{"image": [N, H, W, C] uint8, "label": [N] int32}``, in TFDS's order; for
      ``mnist1d``, ``{"image": [N, 40, 1, 1] float32, "label": [N] int32}`` in the
      package's order (raw signals: normalise with ``scale=1``, see
      ``preprocess_config``).

    Raises:
      ValueError: unknown ``name``, ``source_dir`` given for another dataset, or
        a ``mnist1d`` split that is not one of the forms above.
      FileNotFoundError: ``fashion_mnist`` has no local files and the download
        failed; the message says how to install them.
      ImportError: ``mnist1d`` is not cached yet and the ``mnist1d`` package is
        not installed (``pip install mnist1d``).

    Example:
      >>> train = data.load_dataset("fashion_mnist", "train")  # doctest: +SKIP
      >>> train["image"].shape, train["label"].dtype  # doctest: +SKIP
      ((60000, 28, 28, 1), dtype('int32'))
      >>> data.load_dataset("mnist1d", "test[:50%]")["image"].shape  # doctest: +SKIP
      (500, 40, 1, 1)
    """
    _check_name(name)
    if source_dir is not None and name != "fashion_mnist":
        raise ValueError(
            f"source_dir is only used for 'fashion_mnist', not {name!r}; "
            "drop it (TFDS downloads this dataset into data_dir)."
        )
    data_dir = None if data_dir is None else os.fspath(data_dir)
    if name == "mnist1d":
        from autosparse_jax import _mnist1d

        return _mnist1d.load(split, data_dir, DATASETS["mnist1d"].input_shape)
    from autosparse_jax import _tfds_datasets  # Imports TFDS (not TensorFlow).

    if name == "fashion_mnist":
        builder = _tfds_datasets.fashion_mnist_builder(
            data_dir=data_dir, source_dir=source_dir
        )
    else:
        builder = _tfds_datasets.tfds_builder(name, data_dir=data_dir)
    return _tfds_datasets.read_split(builder, split)


def preprocess_config(name: str, *, augment: bool | None = None) -> PreprocessConfig:
    """The ``PreprocessConfig`` of a dataset in ``DATASETS``.

    Args:
      name: one of ``sorted(DATASETS)``.
      augment: crop+flip in training; ``None`` means True for cifar10/cifar100
        and False otherwise.

    Returns:
      A ``PreprocessConfig`` with the dataset's per-channel mean, std and scale.

    Raises:
      ValueError: unknown ``name``.

    Example:
      >>> data.preprocess_config("cifar10").augment
      True
    """
    info = _check_name(name)
    if augment is None:
        augment = name in _AUGMENTED
    return PreprocessConfig(
        mean=info.mean, std=info.std, augment=augment, scale=info.scale
    )


def _channel_vector(
    values: Sequence[float] | jax.Array, num_channels: int, what: str
) -> jax.Array:
    values = jnp.asarray(values, jnp.float32).reshape(-1)
    if values.shape[0] not in (1, num_channels):
        raise ValueError(
            f"{what} has {values.shape[0]} entries but images have {num_channels} "
            f"channels; pass 1 or {num_channels} values, e.g. "
            "data.preprocess_config(name).mean."
        )
    return values


def normalize(
    images: jax.Array,
    mean: Sequence[float] | jax.Array,
    std: Sequence[float] | jax.Array,
    *,
    scale: float = 255.0,
) -> jax.Array:
    """Scales pixels to [0, 1] and standardises each channel.

    ``(images / scale - mean) / std``, with ``mean`` and ``std`` broadcast over
    the last (channel) axis.

    Args:
      images: ``[..., H, W, C]`` uint8 (or float in [0, 255]); with ``scale=1``,
        float inputs such as mnist1d's signals.
      mean: ``C`` (or 1) per-channel means in [0, 1] pixel units.
      std: ``C`` (or 1) per-channel standard deviations in [0, 1] pixel units.
      scale: raw inputs are divided by it first; ``DatasetInfo.scale``.

    Returns:
      ``images.shape`` float32.

    Raises:
      ValueError: ``mean`` or ``std`` length is neither 1 nor C, or ``scale`` is
        not a positive number.

    Example:
      >>> data.normalize(jnp.full((1, 1, 1, 1), 255, jnp.uint8), (0.5,), (0.5,))
      Array([[[[1.]]]], dtype=float32)
    """
    if not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(
            f"scale must be a positive number, got {scale!r}; use 255.0 for uint8 "
            "images or data.DATASETS[name].scale."
        )
    num_channels = images.shape[-1]
    lead = (1,) * (images.ndim - 1)
    mean = _channel_vector(mean, num_channels, "mean").reshape(lead + (-1,))
    std = _channel_vector(std, num_channels, "std").reshape(lead + (-1,))
    return (images.astype(jnp.float32) / scale - mean) / std


def _crop_flip_one(
    image: jax.Array, offset: jax.Array, flip: jax.Array, size: tuple[int, int]
) -> jax.Array:
    crop = lax.dynamic_slice(image, (offset[0], offset[1], 0), (*size, image.shape[2]))
    return jnp.where(flip, crop[:, ::-1], crop)


def random_crop_flip(key: PRNGKey, images: jax.Array, *, padding: int = 4) -> jax.Array:
    """Standard CIFAR augmentation: random crop of a zero-padded image, random flip.

    Each image is independently zero-padded by ``padding`` pixels on every side,
    cropped back to ``H x W`` at a uniform random offset in ``[0, 2 * padding]``
    and flipped left-right with probability 1/2.

    Args:
      key: PRNG key.
      images: ``[B, H, W, C]`` any dtype (typically uint8, before ``normalize``).
      padding: pixels of zero padding per side (static int >= 0).

    Returns:
      ``[B, H, W, C]`` with the dtype of ``images``.

    Raises:
      ValueError: ``images`` is not 4-D or ``padding`` is negative.

    Example:
      >>> out = data.random_crop_flip(jax.random.key(0), images)  # doctest: +SKIP
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}.")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}.")
    batch, height, width, _ = images.shape
    offset_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(offset_key, (batch, 2), 0, 2 * padding + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
    pad = (padding, padding)
    padded = jnp.pad(images, ((0, 0), pad, pad, (0, 0)))
    crop_flip = jax.vmap(_crop_flip_one, in_axes=(0, 0, 0, None))
    return crop_flip(padded, offsets, flips, (height, width))


def preprocess(
    key: PRNGKey | None,
    images: jax.Array,
    config: PreprocessConfig,
    *,
    train: bool,
) -> jax.Array:
    """Augments (if ``train and config.augment``) then normalises a batch.

    Augmentation runs on the raw pixels, so crop padding is black, as in the
    usual torchvision recipe. Jit with ``config`` and ``train`` static.

    Args:
      key: PRNG key; may be ``None`` when no augmentation is applied.
      images: ``[B, H, W, C]`` raw inputs: uint8 pixels, or float32 for mnist1d.
      config: from ``preprocess_config``.
      train: whether this is a training batch.

    Returns:
      ``[B, H, W, C]`` float32.

    Raises:
      ValueError: augmentation is requested but ``key`` is None.

    Example:
      >>> config = data.preprocess_config("cifar10")
      >>> x = data.preprocess(key, batch["image"], config, train=True)  # doctest: +SKIP
    """
    if train and config.augment:
        if key is None:
            raise ValueError(
                "preprocess(train=True) augments with this config but key is None; "
                "pass a PRNG key, e.g. jax.random.fold_in(key, step), or use "
                "dataclasses.replace(config, augment=False)."
            )
        images = random_crop_flip(key, images)
    return normalize(images, config.mean, config.std, scale=config.scale)


def _num_examples(data: Mapping[str, np.ndarray], batch_size: int) -> int:
    sizes = {k: len(v) for k, v in data.items()}
    if not sizes or len(set(sizes.values())) != 1:
        raise ValueError(
            f"data must map names to arrays with equal leading sizes, got {sizes}."
        )
    num_examples = next(iter(sizes.values()))
    if not isinstance(batch_size, int) or not 0 < batch_size <= num_examples:
        raise ValueError(
            f"batch_size must be an int in [1, {num_examples}] (the number of "
            f"examples), got {batch_size!r}; lower it or load a larger split."
        )
    return num_examples


def _batches(
    data: Mapping[str, np.ndarray],
    order: np.ndarray,
    batch_size: int,
    drop_remainder: bool,
) -> Iterator[dict[str, np.ndarray]]:
    stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in data.items()}


def iterate_batches(
    key: PRNGKey,
    data: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """One shuffled pass over ``data`` in host batches (host function).

    Args:
      key: PRNG key for the shuffle; use ``jax.random.fold_in(key, epoch)``.
      data: ``{"image": [N, ...], "label": [N]}`` host arrays (any keys).
      batch_size: examples per batch, in [1, N].
      drop_remainder: drop the last ``N % batch_size`` examples.

    Returns:
      An iterator of ``{name: [batch_size, ...]}`` numpy arrays (the last one
      smaller if ``drop_remainder`` is False).

    Raises:
      ValueError: ``batch_size`` outside [1, N] or arrays of unequal lengths.

    Example:
      >>> for batch in data.iterate_batches(key, train, 128):  # doctest: +SKIP
      ...     state, metrics = train_step(state, batch)
    """
    num_examples = _num_examples(data, batch_size)
    order = np.asarray(jax.random.permutation(key, num_examples))
    return _batches(data, order, batch_size, drop_remainder)


def sample_batch(
    key: PRNGKey, data: Mapping[str, np.ndarray], batch_size: int
) -> dict[str, jax.Array]:
    """A uniformly random subset of ``data`` (no repeats), as device arrays.

    Args:
      key: PRNG key.
      data: ``{"image": [N, ...], "label": [N]}`` host arrays (any keys).
      batch_size: number of examples, in [1, N].

    Returns:
      ``{name: [batch_size, ...]}`` jax arrays with the dtypes of ``data``.

    Raises:
      ValueError: ``batch_size`` outside [1, N] or arrays of unequal lengths.

    Example:
      >>> batch = data.sample_batch(key, train, 256)  # doctest: +SKIP
    """
    num_examples = _num_examples(data, batch_size)
    idx = np.asarray(jax.random.permutation(key, num_examples)[:batch_size])
    return {k: jnp.asarray(v[idx]) for k, v in data.items()}
