"""Datasets through TFDS as host numpy arrays, and pure JAX preprocessing.

MNIST-1D is the exception to TFDS: the ``mnist1d`` package generates it offline.
Your own arrays enter through ``from_arrays`` (validated, in ``load_dataset``'s
form), with a ``PreprocessConfig`` fitted to them by ``fit_preprocess``.
"""

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autosparse_jax import _names
from autosparse_jax._checks import is_int
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


DATASETS: Mapping[str, DatasetInfo] = _names.NameTable(
    "dataset",
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
    },
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
      input_shape: ``(H, W, C)`` of the images it was made for, or ``None``
        (any shape); ``preprocess`` refuses images of another shape, so one
        dataset's statistics are never applied to another's inputs.

    Raises:
      ValueError: non-finite ``mean``, ``std`` not positive and finite,
        ``scale`` not positive, or ``input_shape`` not three positive ints.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    scale: float = 255.0
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        mean, std = np.asarray(self.mean, float), np.asarray(self.std, float)
        if mean.ndim != 1 or not mean.size or not np.isfinite(mean).all():
            raise ValueError(
                f"mean must be a non-empty sequence of finite numbers (one per "
                f"channel), got {self.mean!r}."
            )
        if std.ndim != 1 or not std.size or not (np.isfinite(std) & (std > 0)).all():
            raise ValueError(
                f"std must be a non-empty sequence of positive finite numbers (one "
                f"per channel), got {self.std!r}."
            )
        if not (isinstance(self.scale, int | float) and 0 < self.scale < np.inf):
            raise ValueError(
                f"scale must be a positive number, got {self.scale!r}; use 255.0 "
                "for uint8 images, 1.0 for float inputs."
            )
        shape = self.input_shape
        if shape is not None and not (
            isinstance(shape, tuple)
            and len(shape) == 3
            and all(isinstance(d, int) and d > 0 for d in shape)
        ):
            raise ValueError(
                f"input_shape must be None or three positive ints (H, W, C), got "
                f"{shape!r}."
            )


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
      ValueError: unknown ``name``, ``source_dir`` given for another dataset,
        a ``mnist1d`` split that is not one of the forms above, or a split
        with no examples (``"train[:0]"``).
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

        arrays = _mnist1d.load(split, data_dir, DATASETS["mnist1d"].input_shape)
    else:
        from autosparse_jax import _tfds_datasets  # Imports TFDS, not TensorFlow.

        if name == "fashion_mnist":
            builder = _tfds_datasets.fashion_mnist_builder(
                data_dir=data_dir, source_dir=source_dir
            )
        else:
            builder = _tfds_datasets.tfds_builder(name, data_dir=data_dir)
        arrays = _tfds_datasets.read_split(builder, split)
    if not len(arrays["label"]):
        raise ValueError(
            f"split {split!r} of {name} holds no examples; widen the slice, e.g. "
            "'train[:1000]'."
        )
    return arrays


def generated_like(
    name: str, num_examples: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random data shaped and typed like dataset ``name`` (host; for speed checks).

    Images are uniform ``uint8`` for image datasets (``scale`` 255) and standard
    normal ``float32`` otherwise; labels are uniform over the classes. Nothing
    is learnable: use it to time or size a run where the dataset is not
    available (e.g. an accelerator machine without network), never for accuracy.

    Example:
      >>> host = generated_like("cifar10", 50_000)  # image uint8[50000, 32, 32, 3]
    """
    info = _check_name(name)
    if not is_int(num_examples):
        raise ValueError(f"num_examples must be an int, got {num_examples!r}.")
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
    rng = np.random.default_rng(seed)
    shape = (num_examples, *info.input_shape)
    if info.scale == 255.0:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        images = rng.standard_normal(shape, dtype=np.float32)
    labels = rng.integers(0, info.num_classes, num_examples).astype(np.int32)
    return {"image": images, "label": labels}


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
        mean=info.mean,
        std=info.std,
        augment=augment,
        scale=info.scale,
        input_shape=info.input_shape,
    )


# ------------------------------------------------------- bring your own arrays

_FIT_CHUNK_ELEMENTS = 1 << 22  # float64 values per chunk in fit_preprocess (32 MiB)


def _labels_as_int32(labels: np.ndarray, num_classes: int | None) -> np.ndarray:
    """Validated ``[N]`` int32 class indices (see ``from_arrays``)."""
    if labels.dtype == np.bool_ or not (
        np.issubdtype(labels.dtype, np.integer)
        or np.issubdtype(labels.dtype, np.floating)
    ):
        raise ValueError(
            f"labels must be integer class indices, got dtype {labels.dtype}; "
            "map classes to 0 .. num_classes - 1 and pass labels.astype(np.int32)."
        )
    if np.issubdtype(labels.dtype, np.floating) and not np.all(
        labels == np.round(labels)
    ):
        raise ValueError(
            "labels must be whole numbers (class indices), but some float labels "
            "are fractional or not finite; pass integer class indices, e.g. "
            "np.round(labels).astype(np.int32) if they are rounding noise."
        )
    low, high = labels.min(), labels.max()
    if low < 0:
        raise ValueError(
            f"labels must be >= 0, got a minimum of {low}; map classes to "
            "0 .. num_classes - 1, e.g. np.unique(labels, return_inverse=True)[1]."
        )
    limit = np.iinfo(np.int32).max if num_classes is None else num_classes - 1
    if high > limit:
        raise ValueError(
            f"labels must be < num_classes={num_classes}, got a maximum of {high}; "
            "pass a larger num_classes or map classes to 0 .. num_classes - 1."
            if num_classes is not None
            else f"labels must fit in int32, got a maximum of {high}; map classes "
            "to 0 .. num_classes - 1, e.g. np.unique(labels, return_inverse=True)[1]."
        )
    return labels.astype(np.int32)


def _images_as_nhwc(images: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` uint8 or float32 images (see ``from_arrays``)."""
    if images.ndim == 2:
        images = images[:, :, None, None]
    elif images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        return images
    if images.dtype != np.bool_ and not (
        np.issubdtype(images.dtype, np.integer)
        or np.issubdtype(images.dtype, np.floating)
    ):
        raise ValueError(
            f"images must hold real numbers, got dtype {images.dtype}; pass uint8 "
            "pixels or float values (e.g. images.astype(np.float32))."
        )
    with np.errstate(over="ignore"):  # Overflow to inf is reported just below.
        images = np.asarray(images, np.float32)
    if not np.isfinite(images).all():
        raise ValueError(
            "images hold NaN or infinite values (after conversion to float32); "
            "clean or clip them first, e.g. np.nan_to_num(images)."
        )
    return images


def from_arrays(
    images: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None
) -> dict[str, np.ndarray]:
    """Your own arrays, validated, in the form ``load_dataset`` returns (host).

    uint8 images stay uint8 (normalise them with a ``PreprocessConfig``, e.g.
    ``fit_preprocess``); any other real dtype becomes float32 (``scale=1``).
    Integer pixels in 0 .. 255 of another dtype should be cast to uint8 first
    to be treated as pixels. Arrays already in the right form are not copied.

    Args:
      images: ``[N, H, W, C]`` images, ``[N, H, W]`` (one channel added) or
        ``[N, D]`` vectors (stored as ``[N, D, 1, 1]``, like mnist1d's signals).
      labels: ``[N]`` class indices in ``0 .. num_classes - 1``: integers, or
        floats that are whole numbers.
      num_classes: if given, every label must be below it.

    Returns:
      ``{"image": [N, H, W, C] uint8 or float32, "label": [N] int32}`` numpy
      arrays.

    Raises:
      ValueError: labels not 1-D, not integer or negative (or ``>= num_classes``);
        images of another rank, not real or not finite; different numbers of
        images and labels; no examples; ``num_classes`` not a positive int.

    Example:
      >>> x = np.random.default_rng(0).normal(size=(100, 40)).astype(np.float32)
      >>> train = data.from_arrays(x, np.arange(100) % 10, num_classes=10)
      >>> train["image"].shape, train["label"].dtype
      ((100, 40, 1, 1), dtype('int32'))
    """
    if num_classes is not None and (not is_int(num_classes) or num_classes < 1):
        raise ValueError(
            f"num_classes must be a positive int, got {num_classes!r}; pass e.g. "
            "num_classes=10, or None to skip the check."
        )
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"labels must be 1-D [N] class indices, got shape {labels.shape}; for "
            "one-hot labels pass labels.argmax(-1), for [N, 1] labels.reshape(-1)."
        )
    if images.ndim not in (2, 3, 4):
        raise ValueError(
            f"images must be [N, H, W, C], [N, H, W] or [N, D], got shape "
            f"{images.shape}; add a batch axis with images[None] for one example."
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"got {images.shape[0]} images but {labels.shape[0]} labels; pass one "
            "label per image, in the same order."
        )
    if images.size == 0:
        raise ValueError(
            f"images are empty (shape {images.shape}); pass at least one example "
            "with at least one value."
        )
    return {
        "image": _images_as_nhwc(images),
        "label": _labels_as_int32(labels, num_classes),
    }


def _channel_moments(images: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 mean and population variance of ``images / scale``.

    Chunks of rows are reduced separately and merged with Chan et al.'s
    pairwise update, so no float copy larger than one chunk is made.
    """
    num_channels = images.shape[-1]
    per_example = max(1, images[0].size)
    rows = max(1, _FIT_CHUNK_ELEMENTS // per_example)
    count, mean, m2 = 0, np.zeros(num_channels), np.zeros(num_channels)
    for start in range(0, images.shape[0], rows):
        chunk = images[start : start + rows].reshape(-1, num_channels)
        chunk = chunk.astype(np.float64) / scale
        n = chunk.shape[0]
        chunk_mean = chunk.mean(axis=0)
        chunk_m2 = np.square(chunk - chunk_mean).sum(axis=0)
        delta = chunk_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + chunk_m2 + np.square(delta) * (count * n / total)
        count = total
    return mean, m2 / count


def fit_preprocess(
    train_data: Mapping[str, np.ndarray], *, augment: bool = False
) -> PreprocessConfig:
    """A ``PreprocessConfig`` standardising each channel of the training split.

    ``mean`` and ``std`` are the per-channel mean and population standard
    deviation of ``image / scale`` over all examples and pixels, with
    ``scale = 255`` for uint8 images and 1 for float images, so that
    ``preprocess(None, images, config, train=False)`` has per-channel mean 0
    and std 1 on ``train_data``. They are computed in float64, in chunks. A
    constant channel (std 0, up to float32 rounding) gets std 1. Fit on the
    training split only and reuse the config for the test split.

    Args:
      train_data: ``{"image": [N, H, W, C] uint8 or float, ...}`` host arrays,
        e.g. from ``from_arrays``.
      augment: apply ``random_crop_flip`` in training (``[N, H, W, C]`` images
        with spatial structure only).

    Returns:
      A ``PreprocessConfig`` with ``C`` means and stds.

    Raises:
      ValueError: no ``"image"`` entry, images not ``[N, H, W, C]`` uint8 or
        float with at least one value, or non-finite statistics (NaN or
        infinite images).

    Example:
      >>> pixels = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3))
      >>> train = data.from_arrays(pixels.astype(np.uint8), np.arange(64) % 10)
      >>> config = data.fit_preprocess(train)
      >>> config.scale, len(config.mean)
      (255.0, 3)
      >>> x = data.preprocess(None, train["image"], config, train=False)
    """
    if "image" not in train_data:
        raise ValueError(
            f"train_data has no 'image' entry (keys {sorted(train_data)}); pass "
            "data.from_arrays(images, labels) or load_dataset(...)."
        )
    images = np.asarray(train_data["image"])
    is_float = np.issubdtype(images.dtype, np.floating)
    if (
        images.ndim != 4
        or images.size == 0
        or not (is_float or images.dtype == np.uint8)
    ):
        raise ValueError(
            f"train_data['image'] must be non-empty [N, H, W, C] uint8 or float, "
            f"got shape {images.shape} and dtype {images.dtype}; convert it with "
            "data.from_arrays(images, labels)."
        )
    scale = 1.0 if is_float else 255.0
    mean, var = _channel_moments(images, scale)
    std = np.sqrt(var)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError(
            "train_data['image'] gave non-finite statistics: the images hold NaN "
            "or infinite values; data.from_arrays(images, labels) reports them."
        )
    constant = std <= np.finfo(np.float32).eps * np.abs(mean)
    std = np.where(constant, 1.0, std)
    return PreprocessConfig(
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        augment=augment,
        scale=scale,
        input_shape=tuple(int(d) for d in images.shape[1:]),
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
      ValueError: augmentation is requested but ``key`` is None, or the images
        are not ``[B, *config.input_shape]`` (e.g. MNIST-1D signals through
        Fashion-MNIST's config).

    Example:
      >>> config = data.preprocess_config("cifar10")
      >>> x = data.preprocess(key, batch["image"], config, train=True)  # doctest: +SKIP
    """
    expected = config.input_shape
    if expected is not None and tuple(images.shape[1:]) != tuple(expected):
        raise ValueError(
            f"preprocess got images of shape {tuple(images.shape[1:])} (batch shape "
            f"{tuple(images.shape)}), but this PreprocessConfig is for "
            f"{tuple(expected)} images; use the config of these images' dataset "
            "(data.preprocess_config(name) or data.fit_preprocess(train))."
        )
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


def sample_batches(
    key: PRNGKey,
    data: Mapping[str, np.ndarray],
    num_batches: int,
    batch_size: int,
    config: PreprocessConfig,
) -> dict[str, jax.Array]:
    """``num_batches`` stacked preprocessed batches, drawn without repeats.

    What the criteria and the AutoS features are computed on: one
    ``sample_batch`` of ``num_batches * batch_size`` examples, normalised
    (never augmented) and split into batches.

    Args:
      key: PRNG key.
      data: ``{"image": [N, H, W, C], "label": [N]}`` host arrays.
      num_batches: ``K >= 1``.
      batch_size: ``B``; ``K * B`` must not exceed ``N``.
      config: the preprocessing (``preprocess_config(name)`` or
        ``fit_preprocess(train)``).

    Returns:
      ``{"image": float32 [K, B, H, W, C], "label": [K, B]}``.

    Example:
      >>> batches = sample_batches(key, train, 4, 256, preprocess_config(name))
    """
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be an int >= 1, got {num_batches!r}.")
    batch = sample_batch(key, data, num_batches * batch_size)
    images = preprocess(None, batch["image"], config, train=False)
    return {
        "image": images.reshape(num_batches, batch_size, *images.shape[1:]),
        "label": batch["label"].reshape(num_batches, batch_size),
    }
