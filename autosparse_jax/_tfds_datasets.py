"""TFDS back end of ``data``: offline Fashion-MNIST builder, TF-free reading."""

import gzip
import os
import struct
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

ENV_VAR = "AUTOSPARSE_FASHION_MNIST_DIR"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_READ_CHUNK = 8192  # records read and decoded at a time (bounds peak memory)
_MISSING_MODULE_FIXES = {
    "tensorflow": "install it with `pip install 'autosparse_jax[data]'` "
    "(tensorflow-cpu); TFDS needs TensorFlow to prepare, not to read.",
    "importlib_resources": "install it with `pip install importlib_resources` "
    "(TFDS bug tensorflow/datasets#11212).",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a uint8 IDX file (optionally gzipped) into an array of its shape."""
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(
            f"{os.fspath(path)} is not a uint8 IDX file (bad magic number "
            f"{data[:4]!r}); expected the original Fashion-MNIST/MNIST IDX files."
        )
    ndim = data[3]
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_path(directory: str | os.PathLike, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def candidate_dirs(source_dir: str | os.PathLike | None) -> list[str]:
    """Directories searched for IDX files: ``source_dir``, env var, Debian path."""
    dirs = [source_dir, os.environ.get(ENV_VAR), DEBIAN_DIR]
    return [os.fspath(d) for d in dirs if d]


def find_source_dir(candidates: Sequence[str]) -> str | None:
    """Returns the first directory holding all four IDX files (``.gz`` or not)."""
    stems = [stem for pair in IDX_FILES.values() for stem in pair]
    for directory in candidates:
        if all(_idx_path(directory, stem) for stem in stems):
            return directory
    return None


class AutosparseFashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Fashion-MNIST (Xiao et al. 2017) prepared from local IDX files.

    Same keys as TFDS's ``fashion_mnist`` (image uint8 ``[28, 28, 1]``, label
    ``ClassLabel`` with 10 names) under a distinct, unregistered name, so its
    prepared files never collide with the built-in dataset's. Images are a
    ``tfds.features.Tensor`` stored as raw bytes: TFDS writes them with
    ``ndarray.tobytes`` and reads them with ``np.frombuffer``, no image codec
    and no TensorFlow.
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release (PNG images).",
        "2.0.0": "Images stored as raw uint8 bytes (same arrays, faster to read).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or "
        "not) in the manual directory, e.g. `apt-get install dataset-fashion-mnist`."
    )

    # Nothing is downloaded, so there are no URL checksums to look up. Looking
    # them up would also hit TFDS bug tensorflow/datasets#11212 (needs the
    # `importlib_resources` backport on Python >= 3.9).
    url_infos = None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST: 28x28 greyscale images of 10 clothing types.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(28, 28, 1),
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.BYTES,
                    ),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        directory = dl_manager.manual_dir
        return {
            split: self._generate_examples(
                _idx_path(directory, images), _idx_path(directory, labels)
            )
            for split, (images, labels) in IDX_FILES.items()
        }

    def _generate_examples(self, images_path: str, labels_path: str) -> Iterator:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{images_path} holds images of shape {images.shape} but "
                f"{labels_path} holds {labels.shape[0]} labels; expected "
                "[N, 28, 28] images and N labels."
            )
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image[..., None], "label": int(label)}


def download_from_tfds(data_dir: str | None) -> tfds.core.DatasetBuilder:
    """Prepares TFDS's own ``fashion_mnist`` (downloads it unless cached)."""
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return builder


def fashion_mnist_builder(
    *, data_dir: str | None, source_dir: str | os.PathLike | None
) -> tfds.core.DatasetBuilder:
    """Returns a prepared Fashion-MNIST builder, preparing or downloading once.

    Raises:
      FileNotFoundError: no local IDX files and the TFDS download failed.
    """
    builder = AutosparseFashionMnist(data_dir=data_dir)
    if builder.data_path.exists() and builder.is_prepared():
        return builder
    candidates = candidate_dirs(source_dir)
    found = find_source_dir(candidates)
    if found is not None:
        config = tfds.download.DownloadConfig(manual_dir=found)
        builder.download_and_prepare(file_format="array_record", download_config=config)
        return builder
    try:
        return download_from_tfds(data_dir)
    except Exception as err:  # Any download failure gets the same advice.
        raise FileNotFoundError(
            "Fashion-MNIST is not available offline and the TFDS download "
            f"failed ({type(err).__name__}: {err}). Searched for the four IDX "
            f"files {sorted(s + '[.gz]' for p in IDX_FILES.values() for s in p)} "
            f"in {candidates}. Fix it with one of: `apt-get install "
            f"dataset-fashion-mnist` (installs them in {DEBIAN_DIR}); set "
            f"{ENV_VAR}=/path/to/dir or pass load_dataset(..., source_dir="
            "'/path/to/dir') pointing at a directory with the four files; or "
            "connect to the internet so TFDS can download them."
        ) from err


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
    """Reads a whole split of a prepared builder into host arrays.

    array_record files are read without TensorFlow, through TFDS's data source
    (its NumPy example parser and feature decoders: ``np.frombuffer`` for raw
    Tensor images, OpenCV or PIL for PNG/JPEG ones); tfrecord files need it.
    """
    try:  # array_record: random access without TensorFlow.
        source = builder.as_data_source(split)
    except NotImplementedError:  # Prepared earlier as tfrecord: needs TensorFlow.
        arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        return {
            "image": np.asarray(arrays["image"], np.uint8),
            "label": np.asarray(arrays["label"], np.int32),
        }
    num_examples = len(source)
    image = np.empty((num_examples, *builder.info.features["image"].shape), np.uint8)
    label = np.empty((num_examples,), np.int32)
    for start in range(0, num_examples, _READ_CHUNK):
        stop = min(start + _READ_CHUNK, num_examples)
        records = source.__getitems__(list(range(start, stop)))
        for i, record in enumerate(records, start):
            image[i] = record["image"]
            label[i] = record["label"]
    return {"image": image, "label": label}


def tfds_builder(name: str, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """TFDS's own builder for ``name``, downloaded and prepared once."""
    builder = tfds.builder(name, data_dir=data_dir)
    try:
        builder.download_and_prepare(file_format="array_record")
    except ModuleNotFoundError as err:
        if err.name not in _MISSING_MODULE_FIXES:
            raise
        raise ModuleNotFoundError(
            f"Preparing TFDS dataset {name!r} needs the module {err.name!r}: "
            f"{_MISSING_MODULE_FIXES[err.name]}",
            name=err.name,
        ) from err
    return builder
