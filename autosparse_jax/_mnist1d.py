"""MNIST-1D, generated offline by the ``mnist1d`` package and cached as .npz.

Private helper of ``data.load_dataset("mnist1d", ...)``.
"""

import os
import random
import re
import tempfile
from collections.abc import Mapping

import numpy as np

_MNIST1D_SPLIT_RE = re.compile(r"(train|test)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?")
_MNIST1D_SPLIT_FORMS = (
    '"train", "test", or a slice of one with int or percent bounds, e.g. '
    '"train[:1000]", "train[1000:]", "test[10:-10]", "test[:50%]"'
)
_MNIST1D_FILE = os.path.join("mnist1d", "mnist1d_standard.npz")


def _mnist1d_split(split: str) -> tuple[str, str | None, str | None]:
    match = _MNIST1D_SPLIT_RE.fullmatch(split)
    if match is None:
        raise ValueError(
            f"Unsupported mnist1d split {split!r}; use {_MNIST1D_SPLIT_FORMS}."
        )
    start, stop = match.group(2), match.group(3)
    if start and stop and start.endswith("%") != stop.endswith("%"):
        raise ValueError(
            f"mnist1d split {split!r} mixes int and percent bounds; give both "
            'bounds in the same unit, e.g. "train[10%:50%]".'
        )
    return match.group(1), start, stop


def _slice_bound(bound: str | None, num_examples: int, split: str) -> int | None:
    """A TFDS slice bound as an index: ints as given, percents rounded."""
    if bound is None:
        return None
    limit = 100 if bound.endswith("%") else num_examples
    value = int(bound.rstrip("%"))
    if abs(value) > limit:
        raise ValueError(
            f"Slice bound {bound!r} of split {split!r} is outside [-{limit}, "
            f"{limit}] (the split has {num_examples} examples)."
        )
    return round(value * num_examples / 100) if bound.endswith("%") else value


def _generate(input_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError(
            "load_dataset('mnist1d', ...) generates the data with the mnist1d "
            f"package, which could not be imported ({err}); install it with "
            "`pip install mnist1d` (or `pip install -e .` in this repository)."
        ) from err
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset seeds the global RNGs; leave the caller's untouched.
        raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    image_shape = (-1, *input_shape)
    return {
        "train_image": np.asarray(raw["x"], np.float32).reshape(image_shape),
        "train_label": np.asarray(raw["y"], np.int32),
        "test_image": np.asarray(raw["x_test"], np.float32).reshape(image_shape),
        "test_label": np.asarray(raw["y_test"], np.int32),
    }


def _write_atomically(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(
    split: str, data_dir: str | None, input_shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """One split of MNIST-1D, generated once and cached (``data.load_dataset``)."""
    which, start, stop = _mnist1d_split(split)
    if data_dir is None:  # TFDS's default, computed as TFDS does (no import).
        default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
        data_dir = os.environ.get("TFDS_DATA_DIR", default)
    path = os.path.join(data_dir, _MNIST1D_FILE)
    keys = (f"{which}_image", f"{which}_label")
    if os.path.exists(path):
        with np.load(path) as cached:
            if not set(keys) <= set(cached.files):
                raise ValueError(
                    f"The mnist1d cache {path} lacks {keys}; delete the file and "
                    "load again to regenerate it."
                )
            arrays = {k: cached[k] for k in keys}
    else:
        arrays = _generate(input_shape)
        _write_atomically(path, arrays)
    images, labels = arrays[keys[0]], arrays[keys[1]]
    num = len(labels)
    index = slice(_slice_bound(start, num, split), _slice_bound(stop, num, split))
    return {"image": images[index], "label": labels[index]}
