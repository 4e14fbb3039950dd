"""Tests for autosparse_jax.data (datasets are GENERATED here unless marked real)."""

import dataclasses
import gzip
import hashlib
import io
import os
import random
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import _tfds_datasets, data

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach the network: any connection attempt fails at once."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def no_local_sources(monkeypatch, tmp_path):
    """Hides the Debian IDX files and the environment variable."""
    monkeypatch.delenv(_tfds_datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(_tfds_datasets, "DEBIAN_DIR", str(tmp_path / "none"))


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def generated_idx(tmp_path_factory):
    """GENERATED random Fashion-MNIST-format IDX files (not real data).

    Train files are gzipped, test files are not, to cover both spellings.
    """
    directory = str(tmp_path_factory.mktemp("generated_idx"))
    rng = np.random.default_rng(0)
    arrays = {}
    for split, num, suffix in (("train", 12, ".gz"), ("test", 5, "")):
        images = rng.integers(0, 256, (num, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (num,), dtype=np.uint8)
        image_stem, label_stem = _tfds_datasets.IDX_FILES[split]
        _write_idx(os.path.join(directory, image_stem + suffix), images)
        _write_idx(os.path.join(directory, label_stem + suffix), labels)
        arrays[split] = (images[..., None], labels.astype(np.int32))
    return directory, arrays


def _sorted_examples(images, labels):
    """Examples in a canonical order, since TFDS shuffles when preparing."""
    flat = [
        img.tobytes() + bytes([lab]) for img, lab in zip(images, labels, strict=True)
    ]
    return sorted(flat)


# ---- load_dataset: arguments and metadata ----------------------------------


def test_import_does_not_import_tensorflow():
    code = (
        "import sys; import autosparse_jax.data; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_datasets')]; print(bad); assert not bad"
    )
    env = {**os.environ, "PYTHONPATH": _REPO_ROOT, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_datasets_table_is_read_only_and_consistent():
    assert sorted(data.DATASETS) == [
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "mnist",
        "mnist1d",
    ]
    with pytest.raises(TypeError):
        data.DATASETS["svhn"] = data.DATASETS["mnist"]  # type: ignore[index]
    for name, info in data.DATASETS.items():
        channels = info.input_shape[-1]
        assert len(info.mean) == len(info.std) == channels
        assert all(s > 0 for s in info.std) and info.scale > 0
        if name != "mnist1d":  # uint8 pixels: stats in (0, 1) after / 255.
            assert info.scale == 255.0
            assert all(0 < m < 1 for m in info.mean)
            assert all(s < 1 for s in info.std)
    assert data.DATASETS["cifar100"].num_classes == 100
    assert data.DATASETS["fashion_mnist"].mean == (0.2860,)
    assert data.DATASETS["mnist1d"].scale == 1.0


def test_load_dataset_unknown_name_lists_supported(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'") as err:
        data.load_dataset("svhn", "train", data_dir=tmp_path)
    for name in data.DATASETS:
        assert name in str(err.value)


def test_load_dataset_source_dir_only_for_fashion_mnist(tmp_path):
    with pytest.raises(ValueError, match="only used for 'fashion_mnist'"):
        data.load_dataset("mnist", "train", data_dir=tmp_path, source_dir=tmp_path)


# ---- fashion_mnist offline builder (GENERATED IDX files) ------------------


def test_fashion_mnist_from_generated_idx(generated_idx, tmp_path, no_local_sources):
    source_dir, arrays = generated_idx
    for split in ("train", "test"):
        got = data.load_dataset(
            "fashion_mnist", split, data_dir=tmp_path, source_dir=source_dir
        )
        images, labels = arrays[split]
        assert got["image"].dtype == np.uint8 and got["label"].dtype == np.int32
        assert got["image"].shape == images.shape
        assert _sorted_examples(got["image"], got["label"]) == _sorted_examples(
            images, labels
        )
    head = data.load_dataset("fashion_mnist", "train[:3]", data_dir=tmp_path)
    assert head["image"].shape == (3, 28, 28, 1)


def test_fashion_mnist_is_prepared_only_once(
    generated_idx, tmp_path, monkeypatch, no_local_sources
):
    source_dir = shutil.copytree(generated_idx[0], tmp_path / "src")
    first = data.load_dataset(
        "fashion_mnist", "train", data_dir=tmp_path / "tfds", source_dir=source_dir
    )
    shutil.rmtree(source_dir)
    builder_cls = _tfds_datasets.AutosparseFashionMnist
    original = builder_cls.download_and_prepare
    calls = []

    def spy(self, **kwargs):
        calls.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(builder_cls, "download_and_prepare", spy)
    monkeypatch.setattr(_tfds_datasets, "download_from_tfds", None)
    second = data.load_dataset("fashion_mnist", "train", data_dir=tmp_path / "tfds")
    assert not calls
    np.testing.assert_array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(first["label"], second["label"])


def test_fashion_mnist_found_through_env_var(
    generated_idx, tmp_path, monkeypatch, no_local_sources
):
    monkeypatch.setenv(_tfds_datasets.ENV_VAR, generated_idx[0])
    got = data.load_dataset("fashion_mnist", "test", data_dir=tmp_path)
    assert got["image"].shape == (5, 28, 28, 1)


def test_fashion_mnist_falls_back_to_tfds_download(
    generated_idx, tmp_path, monkeypatch, no_local_sources
):
    prepared = _tfds_datasets.AutosparseFashionMnist(data_dir=str(tmp_path))
    config = _tfds_datasets.tfds.download.DownloadConfig(manual_dir=generated_idx[0])
    prepared.download_and_prepare(file_format="array_record", download_config=config)
    requested = []

    def fake_download(data_dir):
        requested.append(data_dir)
        return prepared

    monkeypatch.setattr(_tfds_datasets, "download_from_tfds", fake_download)
    empty = tmp_path / "empty"
    empty.mkdir()
    got = data.load_dataset(
        "fashion_mnist", "test", data_dir=tmp_path / "other", source_dir=empty
    )
    assert requested == [str(tmp_path / "other")]
    assert got["image"].shape == (5, 28, 28, 1)


def test_fashion_mnist_offline_error_says_how_to_fix(
    tmp_path, monkeypatch, no_local_sources
):
    def no_network(data_dir):
        raise ConnectionError("simulated: no network")

    monkeypatch.setattr(_tfds_datasets, "download_from_tfds", no_network)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(_tfds_datasets.ENV_VAR, str(empty))
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("fashion_mnist", "train", data_dir=tmp_path, source_dir=empty)
    message = str(err.value)
    for hint in (
        "apt-get install dataset-fashion-mnist",
        "AUTOSPARSE_FASHION_MNIST_DIR",
        "source_dir",
        "simulated: no network",
        str(empty),
    ):
        assert hint in message
    assert isinstance(err.value.__cause__, ConnectionError)


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="not a uint8 IDX file"):
        _tfds_datasets.read_idx(path)


def _permutation_of(got_images, images):
    """Index of each loaded image among the generated ones (all distinct)."""
    where = {img.tobytes(): i for i, img in enumerate(images)}
    assert len(where) == len(images)
    return np.array([where[img.tobytes()] for img in got_images])


def test_fashion_mnist_storage_is_raw_bytes_round_trip(
    generated_idx, tmp_path, no_local_sources
):
    """Each record holds the image's 784 raw bytes; loading is bitwise exact."""
    source_dir, arrays = generated_idx
    builder = _tfds_datasets.fashion_mnist_builder(
        data_dir=str(tmp_path), source_dir=source_dir
    )
    feature = builder.info.features["image"]
    assert isinstance(feature, _tfds_datasets.tfds.features.Tensor)
    assert feature.shape == (28, 28, 1) and feature.dtype == np.uint8
    skip = {"image": _tfds_datasets.tfds.decode.SkipDecoding()}
    for split in ("train", "test"):
        images, labels = arrays[split]
        got = data.load_dataset("fashion_mnist", split, data_dir=tmp_path)
        perm = _permutation_of(got["image"], images)
        assert sorted(perm.tolist()) == list(range(len(images)))
        np.testing.assert_array_equal(got["image"], images[perm])
        np.testing.assert_array_equal(got["label"], labels[perm])
        source = builder.as_data_source(split, decoders=skip)
        stored = [bytes(r["image"]) for r in source.__getitems__(range(len(perm)))]
        assert stored == [img.tobytes() for img in images[perm]]
        head = data.load_dataset("fashion_mnist", f"{split}[:3]", data_dir=tmp_path)
        np.testing.assert_array_equal(head["image"], got["image"][:3])
        np.testing.assert_array_equal(head["label"], got["label"][:3])


def test_fashion_mnist_order_does_not_depend_on_data_dir(
    generated_idx, tmp_path, no_local_sources
):
    source_dir = generated_idx[0]
    first, second = (
        data.load_dataset(
            "fashion_mnist", "train", data_dir=tmp_path / d, source_dir=source_dir
        )
        for d in ("a", "b")
    )
    np.testing.assert_array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(first["label"], second["label"])


def test_fashion_mnist_old_png_dir_is_re_prepared_not_misread(
    generated_idx, tmp_path, no_local_sources
):
    """A data_dir prepared by version 1.0.0 (PNG images) is not read as raw bytes."""
    import tensorflow_datasets as tfds

    class OldPngFashionMnist(_tfds_datasets.AutosparseFashionMnist):
        name = _tfds_datasets.AutosparseFashionMnist.name
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "PNG images."}

        def _info(self):
            features = {
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=_tfds_datasets.CLASS_NAMES),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

    source_dir, arrays = generated_idx
    old = OldPngFashionMnist(data_dir=str(tmp_path))
    config = tfds.download.DownloadConfig(manual_dir=source_dir)
    old.download_and_prepare(file_format="array_record", download_config=config)
    old_dir = tmp_path / old.name / "1.0.0"
    assert isinstance(old.info.features["image"], tfds.features.Image)
    assert (old_dir / "features.json").read_text().count("Image") >= 1
    old_files = sorted(p.name for p in old_dir.iterdir())

    got = data.load_dataset(
        "fashion_mnist", "test", data_dir=tmp_path, source_dir=source_dir
    )
    images, labels = arrays["test"]
    perm = _permutation_of(got["image"], images)
    np.testing.assert_array_equal(got["label"], labels[perm])
    new_dir = tmp_path / old.name / str(_tfds_datasets.AutosparseFashionMnist.VERSION)
    assert new_dir != old_dir and (new_dir / "dataset_info.json").is_file()
    assert sorted(p.name for p in old_dir.iterdir()) == old_files  # Left alone.


def test_fashion_mnist_prepare_and_read_without_tensorflow(generated_idx, tmp_path):
    code = (
        "import sys; from autosparse_jax import data; "
        f"d = data.load_dataset('fashion_mnist', 'train', data_dir={str(tmp_path)!r}, "
        f"source_dir={generated_idx[0]!r}); assert d['image'].shape[0] == 12; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'tensorflow']; "
        "print(bad); assert not bad"
    )
    env = {**os.environ, "PYTHONPATH": _REPO_ROOT, "JAX_PLATFORMS": "cpu"}
    env.pop(_tfds_datasets.ENV_VAR, None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def real_fashion_mnist(tmp_path_factory):
    """The REAL Fashion-MNIST, prepared once per session from the Debian files."""
    source = _tfds_datasets.DEBIAN_DIR
    if _tfds_datasets.find_source_dir([source]) is None:
        pytest.skip(f"needs `apt-get install dataset-fashion-mnist` ({source})")
    data_dir = tmp_path_factory.mktemp("tfds_real")
    return {
        split: data.load_dataset(
            "fashion_mnist", split, data_dir=data_dir, source_dir=source
        )
        for split in ("train", "test", "train[:5000]")
    }


@pytest.mark.slow
def test_real_fashion_mnist(real_fashion_mnist):
    for split, num in (("train", 60_000), ("test", 10_000)):
        got = real_fashion_mnist[split]
        assert got["image"].shape == (num, 28, 28, 1)
        assert got["image"].dtype == np.uint8 and got["label"].dtype == np.int32
        np.testing.assert_array_equal(np.bincount(got["label"]), [num // 10] * 10)
    mean = real_fashion_mnist["train"]["image"].mean() / 255
    assert abs(mean - data.DATASETS["fashion_mnist"].mean[0]) < 5e-4


# sha256 of the (image, label) arrays version 1.0.0 (PNG images) loaded.
_REAL_FASHION_MNIST_SHA256 = {
    "train": (
        "d6f7acb83157a75006f04dbae6822f88b1bb1651cef953707c39831d938776a3",
        "0f719277c94fd64b784df233338874360483009b12c9952b1be69bc7d463ae04",
    ),
    "test": (
        "a84f70bc4eaa1b2c5e671e99525a60f9dbe89328fa62013e4aa30ba11800c4df",
        "85e2be1b62985fe36ef293a029e9559c3f6822643be932622c5042b8a1654a94",
    ),
    "train[:5000]": (
        "60ecc6acf6b3fffcf98c33c76170355f50c9f01c98efd5a1b31865c675dc5d08",
        "f6d0a175c65e4fc00a062c3a5c622eea586695263c1ac34c5a074036a8a7f8b7",
    ),
}


@pytest.mark.slow
def test_real_fashion_mnist_bitwise_as_before(real_fashion_mnist):
    """Same images, labels and order as the PNG-format version 1.0.0 loaded."""
    for split, digests in _REAL_FASHION_MNIST_SHA256.items():
        got = real_fashion_mnist[split]
        hashes = tuple(
            hashlib.sha256(got[k].tobytes()).hexdigest() for k in ("image", "label")
        )
        assert hashes == digests, split


# ---- mnist / cifar through TFDS builders (GENERATED examples) -------------


def _generated_png(rng, shape):
    from PIL import Image

    image = rng.integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if shape[-1] == 1 else image).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _generated_split_generators(self, dl_manager):
    """Replaces TFDS's download with GENERATED random examples (not real data)."""
    import tensorflow_datasets as tfds

    del dl_manager

    def examples(split, num):
        rng = np.random.default_rng(len(split))
        for index in range(num):
            example = {}
            for key, feature in self.info.features.items():
                if isinstance(feature, tfds.features.Image):
                    example[key] = _generated_png(rng, feature.shape)
                elif isinstance(feature, tfds.features.ClassLabel):
                    example[key] = int(rng.integers(feature.num_classes))
                else:  # Text ids of cifar.
                    example[key] = f"generated_{split}_{index}"
            yield index, example

    return {"train": examples("train", 7), "test": examples("test", 4)}


@pytest.fixture
def generated_tfds(monkeypatch):
    """TFDS builders of mnist/cifar that prepare GENERATED data, no download."""
    import tensorflow_datasets as tfds

    patched = []

    def patch(name):
        builder_cls = tfds.builder_cls(name)
        split_generators = _generated_split_generators
        monkeypatch.setattr(builder_cls, "_split_generators", split_generators)
        # No URLs, no checksums. Set by hand: reading the inherited value first
        # (as monkeypatch does) hits TFDS bug tensorflow/datasets#11212.
        assert "url_infos" not in vars(builder_cls)
        builder_cls.url_infos = None
        patched.append(builder_cls)

    yield patch
    for builder_cls in patched:
        del builder_cls.url_infos


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_tfds_dataset_on_generated_data(name, tmp_path, generated_tfds):
    generated_tfds(name)
    info = data.DATASETS[name]
    for split, num in (("train", 7), ("test", 4), ("train[:3]", 3)):
        got = data.load_dataset(name, split, data_dir=tmp_path)
        assert got["image"].shape == (num, *info.input_shape)
        assert got["image"].dtype == np.uint8 and got["label"].dtype == np.int32
        assert got["label"].shape == (num,)
        assert 0 <= got["label"].min() and got["label"].max() < info.num_classes


def test_tfds_dataset_prepared_as_tfrecord_is_read_with_tensorflow(
    tmp_path, generated_tfds
):
    """A dataset already prepared in TFDS's default tfrecord format still loads."""
    import tensorflow_datasets as tfds

    generated_tfds("mnist")
    builder = tfds.builder("mnist", data_dir=tmp_path)
    builder.download_and_prepare(file_format="tfrecord")
    got = data.load_dataset("mnist", "test", data_dir=tmp_path)
    assert got["image"].shape == (4, 28, 28, 1) and got["image"].dtype == np.uint8
    assert got["label"].dtype == np.int32


def test_tfds_missing_module_message(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def missing(self, **kwargs):
        raise ModuleNotFoundError("no importlib_resources", name="importlib_resources")

    monkeypatch.setattr(tfds.builder_cls("mnist"), "download_and_prepare", missing)
    with pytest.raises(ModuleNotFoundError, match="pip install importlib_resources"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


# ---- mnist1d (REAL data, generated offline by the mnist1d package) ----------


@pytest.fixture(scope="session")
def mnist1d_dir(tmp_path_factory):
    """A data_dir holding the REAL MNIST-1D, generated once per session."""
    data_dir = tmp_path_factory.mktemp("mnist1d_real")
    data.load_dataset("mnist1d", "test", data_dir=data_dir)
    return data_dir


def test_mnist1d_splits_shapes_dtypes_labels(mnist1d_dir):
    assert (mnist1d_dir / "mnist1d").is_dir()
    for split, num in (("train", 4000), ("test", 1000)):
        got = data.load_dataset("mnist1d", split, data_dir=mnist1d_dir)
        assert sorted(got) == ["image", "label"]
        assert got["image"].shape == (num, 40, 1, 1) and got["label"].shape == (num,)
        assert got["image"].dtype == np.float32 and got["label"].dtype == np.int32
        assert np.isfinite(got["image"]).all()
        np.testing.assert_array_equal(np.unique(got["label"]), np.arange(10))


def _seed_global_rngs():
    random.seed(123)
    np.random.seed(123)


def test_mnist1d_deterministic_cached_and_leaves_global_rngs(
    mnist1d_dir, tmp_path, monkeypatch
):
    import mnist1d.data

    _seed_global_rngs()
    expected_draws = random.random(), np.random.random()
    _seed_global_rngs()
    first = data.load_dataset("mnist1d", "train", data_dir=tmp_path)  # Generates.
    assert (random.random(), np.random.random()) == expected_draws
    cache = list((tmp_path / "mnist1d").iterdir())
    assert len(cache) == 1 and cache[0].suffix == ".npz"  # No temp file left.

    def regenerate(*args, **kwargs):
        raise AssertionError("mnist1d was generated again despite the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", regenerate)
    second = data.load_dataset("mnist1d", "train", data_dir=tmp_path)  # Cached.
    other = data.load_dataset("mnist1d", "train", data_dir=mnist1d_dir)
    for got in (second, other):  # `other` was generated by another call.
        np.testing.assert_array_equal(got["image"], first["image"])
        np.testing.assert_array_equal(got["label"], first["label"])


def test_mnist1d_slices(mnist1d_dir):
    def load(split):
        return data.load_dataset("mnist1d", split, data_dir=mnist1d_dir)

    train, test = load("train"), load("test")
    for split, full, index in (
        ("train[:100]", train, slice(0, 100)),
        ("train[3900:]", train, slice(3900, 4000)),
        ("train[10%:20%]", train, slice(400, 800)),
        ("test[:50%]", test, slice(0, 500)),
        ("test[-10:]", test, slice(990, 1000)),
    ):
        got = load(split)
        np.testing.assert_array_equal(got["image"], full["image"][index])
        np.testing.assert_array_equal(got["label"], full["label"][index])


@pytest.mark.parametrize(
    "split", ["validation", "train[5]", "train+test", "train[:1.5%]", "Train"]
)
def test_mnist1d_bad_split_names_accepted_forms(split, tmp_path):
    with pytest.raises(ValueError, match="Unsupported mnist1d split") as err:
        data.load_dataset("mnist1d", split, data_dir=tmp_path)
    assert '"train[:1000]"' in str(err.value) and '"test[:50%]"' in str(err.value)
    assert not (tmp_path / "mnist1d").exists()  # Rejected before generating.


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ("train[10:50%]", "mixes int and percent"),
        ("train[:4001]", r"outside \[-4000, 4000\]"),
        ("test[-101%:]", r"outside \[-100, 100\]"),
    ],
)
def test_mnist1d_bad_slice_bounds(split, message, mnist1d_dir):
    with pytest.raises(ValueError, match=message):
        data.load_dataset("mnist1d", split, data_dir=mnist1d_dir)


def test_mnist1d_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # Import fails.
    with pytest.raises(ImportError, match="pip install mnist1d"):
        data.load_dataset("mnist1d", "train", data_dir=tmp_path)


def test_mnist1d_source_dir_rejected(tmp_path):
    with pytest.raises(ValueError, match="only used for 'fashion_mnist'"):
        data.load_dataset("mnist1d", "train", data_dir=tmp_path, source_dir=tmp_path)


def test_mnist1d_preprocess_standardises(mnist1d_dir):
    train = data.load_dataset("mnist1d", "train", data_dir=mnist1d_dir)
    info = data.DATASETS["mnist1d"]
    assert info.input_shape == train["image"].shape[1:]
    np.testing.assert_allclose(train["image"].mean(), info.mean[0], atol=5e-5)
    np.testing.assert_allclose(train["image"].std(), info.std[0], atol=5e-5)
    config = data.preprocess_config("mnist1d")
    assert config.scale == 1.0 and not config.augment
    x = data.preprocess(None, jnp.asarray(train["image"]), config, train=True)
    assert x.dtype == jnp.float32 and x.shape == train["image"].shape
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-3


# ---- preprocessing -----------------------------------------------------------


def test_preprocess_config_defaults_and_validation():
    assert data.preprocess_config("cifar10").augment
    assert data.preprocess_config("cifar100").augment
    assert not data.preprocess_config("mnist").augment
    config = data.preprocess_config("fashion_mnist", augment=True)
    assert config == data.PreprocessConfig(
        mean=(0.2860,), std=(0.3530,), augment=True, input_shape=(28, 28, 1)
    )
    assert config.scale == 255.0
    hash(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.augment = False  # type: ignore[misc]
    with pytest.raises(ValueError, match="supported datasets"):
        data.preprocess_config("imagenet")


def test_normalize_hand_values():
    images = jnp.array([0, 255, 51, 102], jnp.uint8).reshape(1, 2, 2, 1)
    got = data.normalize(images, (0.2,), (0.5,))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        got.reshape(-1), [-0.4, 1.6, 0.0, 0.4], rtol=1e-6, atol=1e-6
    )
    rgb = jnp.full((2, 1, 1, 3), 255, jnp.uint8)
    got = data.normalize(rgb, (0.0, 0.5, 1.0), (1.0, 0.25, 2.0))
    np.testing.assert_allclose(got[0, 0, 0], [1.0, 2.0, 0.0], rtol=1e-6)


def test_normalize_scale_one_hand_values():
    signals = jnp.array([0.5, -1.0, 2.0, 0.0], jnp.float32).reshape(1, 4, 1, 1)
    got = data.normalize(signals, (0.5,), (2.0,), scale=1.0)
    np.testing.assert_allclose(got.reshape(-1), [0.0, -0.75, 0.75, -0.25], rtol=1e-6)
    got = data.normalize(signals, (0.0,), (1.0,), scale=4.0)
    np.testing.assert_allclose(got.reshape(-1), [0.125, -0.25, 0.5, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        data.normalize(signals, (0.0,), (1.0,), scale=0.0)


def test_normalize_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="mean has 2 entries but images have 3"):
        data.normalize(jnp.zeros((1, 2, 2, 3), jnp.uint8), (0.1, 0.2), (1.0,))


def _batch(key, shape=(16, 6, 5, 3)):
    return jax.random.randint(key, shape, 0, 256).astype(jnp.uint8)


def test_random_crop_flip_shape_dtype_determinism(key):
    images = _batch(jax.random.key(1))
    out = data.random_crop_flip(key, images)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(out, data.random_crop_flip(key, images))
    other = data.random_crop_flip(jax.random.key(1), images)
    assert not np.array_equal(out, other)


def test_random_crop_flip_padding_zero_is_flip_or_identity(key):
    images = _batch(jax.random.key(2))
    out = np.asarray(data.random_crop_flip(key, images, padding=0))
    flipped = np.asarray(images)[:, :, ::-1]
    was_flipped = [np.array_equal(o, f) for o, f in zip(out, flipped, strict=True)]
    kept = [np.array_equal(o, x) for o, x in zip(out, np.asarray(images), strict=True)]
    assert all(f or k for f, k in zip(was_flipped, kept, strict=True))
    assert any(was_flipped) and any(kept)  # this key flips some images, not all


def test_random_crop_is_window_of_zero_padded_image(key):
    images = jnp.arange(1, 8 * 4 * 4 + 1, dtype=jnp.int32).reshape(8, 4, 4, 1)
    out = np.asarray(data.random_crop_flip(key, images, padding=2))
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    used = set()
    for i in range(8):
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if np.array_equal(
                out[i],
                padded[i, dy : dy + 4, dx : dx + 4][:, ::-1]
                if flip
                else padded[i, dy : dy + 4, dx : dx + 4],
            )
        ]
        assert matches, f"image {i} is not a (flipped) window of its padded image"
        used.add(matches[0][:2])
    assert len(used) > 1  # offsets differ between images


def test_random_crop_flip_validates():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        data.random_crop_flip(jax.random.key(0), jnp.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="padding"):
        data.random_crop_flip(jax.random.key(0), jnp.zeros((1, 4, 4, 1)), padding=-1)


@pytest.mark.parametrize("train", [True, False])
def test_preprocess_jit_matches_eager(key, train):
    images = _batch(jax.random.key(3), (4, 32, 32, 3))
    config = data.preprocess_config("cifar10")
    eager = data.preprocess(key, images, config, train=train)
    jitted = jax.jit(data.preprocess, static_argnames=("config", "train"))
    got = jitted(key, images, config, train=train)
    assert got.dtype == jnp.float32 and got.shape == images.shape
    np.testing.assert_allclose(got, eager, rtol=1e-6, atol=1e-6)
    if not train:
        expected = data.normalize(images, config.mean, config.std)
        np.testing.assert_array_equal(eager, expected)


def test_preprocess_config_checks_its_fields_and_the_image_shape():
    with pytest.raises(ValueError, match=r"std must be .* positive finite"):
        data.PreprocessConfig(mean=(0.5,), std=(0.0,))
    with pytest.raises(ValueError, match=r"input_shape must be None or three"):
        data.PreprocessConfig(mean=(0.5,), std=(1.0,), input_shape=(40,))
    pixels = np.zeros((3, 5, 5, 1), np.uint8)
    config = data.fit_preprocess(data.from_arrays(pixels, np.zeros(3, int)))
    assert config.input_shape == (5, 5, 1)
    data.preprocess(None, jnp.asarray(pixels), config, train=False)
    with pytest.raises(ValueError, match=r"\(4, 5, 1\).*for \(5, 5, 1\) images"):
        data.preprocess(None, jnp.zeros((3, 4, 5, 1)), config, train=False)


def test_preprocess_key_none():
    images = _batch(jax.random.key(4), (2, 28, 28, 1))
    plain = data.preprocess_config("mnist")
    np.testing.assert_array_equal(
        data.preprocess(None, images, plain, train=True),
        data.normalize(images, plain.mean, plain.std),
    )
    augmented = data.preprocess_config("mnist", augment=True)
    data.preprocess(None, images, augmented, train=False)
    with pytest.raises(ValueError, match="key is None"):
        data.preprocess(None, images, augmented, train=True)


# ---- host batching -----------------------------------------------------------


def _toy_data(num=10):
    return {
        "image": np.arange(num * 4, dtype=np.uint8).reshape(num, 2, 2, 1),
        "label": np.arange(num, dtype=np.int32),
    }


def test_iterate_batches_one_shuffled_epoch(key):
    toy = _toy_data()
    batches = list(data.iterate_batches(key, toy, 3))
    assert len(batches) == 3
    assert all(b["image"].shape == (3, 2, 2, 1) for b in batches)
    labels = np.concatenate([b["label"] for b in batches])
    assert len(set(labels.tolist())) == 9
    assert not np.array_equal(labels, np.arange(9))
    for b in batches:
        np.testing.assert_array_equal(b["image"], toy["image"][b["label"]])
    again = np.concatenate([b["label"] for b in data.iterate_batches(key, toy, 3)])
    np.testing.assert_array_equal(labels, again)
    full = list(data.iterate_batches(key, toy, 3, drop_remainder=False))
    assert [len(b["label"]) for b in full] == [3, 3, 3, 1]
    assert sorted(np.concatenate([b["label"] for b in full])) == list(range(10))


def test_iterate_batches_validates_eagerly(key):
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 10\]"):
        data.iterate_batches(key, _toy_data(), 11)
    bad = {"image": np.zeros((3, 1)), "label": np.zeros((2,))}
    with pytest.raises(ValueError, match="equal leading sizes"):
        data.iterate_batches(key, bad, 1)


def test_sample_batch(key):
    toy = _toy_data()
    batch = data.sample_batch(key, toy, 4)
    assert isinstance(batch["image"], jax.Array)
    assert batch["image"].shape == (4, 2, 2, 1) and batch["label"].dtype == jnp.int32
    assert len(set(np.asarray(batch["label"]).tolist())) == 4
    np.testing.assert_array_equal(
        batch["image"], toy["image"][np.asarray(batch["label"])]
    )
    with pytest.raises(ValueError, match="batch_size"):
        data.sample_batch(key, toy, 0)


# ------------------------------------------------------- bring your own arrays


def test_from_arrays_shapes_and_dtypes():
    labels = np.array([0, 2, 1])
    nhwc = np.zeros((3, 4, 5, 2), np.uint8)
    out = data.from_arrays(nhwc, labels, num_classes=3)
    assert out["image"].shape == (3, 4, 5, 2) and out["image"].dtype == np.uint8
    assert out["label"].dtype == np.int32 and out["label"].tolist() == [0, 2, 1]
    gray = data.from_arrays(np.zeros((3, 4, 5), np.float64), labels)["image"]
    assert gray.shape == (3, 4, 5, 1) and gray.dtype == np.float32
    signals = np.arange(12, dtype=np.int64).reshape(3, 4)
    vec = data.from_arrays(signals, labels)["image"]
    assert vec.shape == (3, 4, 1, 1) and vec.dtype == np.float32
    np.testing.assert_array_equal(vec[:, :, 0, 0], signals)
    whole = data.from_arrays(nhwc, np.array([0.0, 2.0, 1.0]))["label"]
    assert whole.dtype == np.int32 and whole.tolist() == [0, 2, 1]


def test_from_arrays_matches_load_dataset_form(mnist1d_dir):
    train = data.load_dataset("mnist1d", "train[:20]", data_dir=mnist1d_dir)
    signals = train["image"][:, :, 0, 0].astype(np.float64)
    got = data.from_arrays(signals, train["label"].astype(np.int64))
    for k in ("image", "label"):
        assert got[k].shape == train[k].shape and got[k].dtype == train[k].dtype
        np.testing.assert_array_equal(got[k], train[k])


@pytest.mark.parametrize(
    ("images", "labels", "kwargs", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 1), int), {}, "labels must be 1-D"),
        (np.zeros((3, 3)), np.zeros(2, int), {}, "3 images but 2 labels"),
        (np.zeros((0, 3)), np.zeros(0, int), {}, "images are empty"),
        (np.zeros((2, 0)), np.zeros(2, int), {}, "images are empty"),
        (np.zeros((2, 3)), np.array([0.5, 1.0]), {}, "whole numbers"),
        (np.zeros((2, 3)), np.array([0.0, np.nan]), {}, "whole numbers"),
        (np.zeros((2, 3)), np.array(["a", "b"]), {}, "integer class indices"),
        (np.zeros((2, 3)), np.array([True, False]), {}, "integer class indices"),
        (np.zeros((2, 3)), np.array([0, -1]), {}, "labels must be >= 0"),
        (np.zeros((2, 3)), np.array([0, 3]), {"num_classes": 3}, "< num_classes=3"),
        (np.zeros((2, 3)), np.array([0, 1]), {"num_classes": 0}, "positive int"),
        (np.array([[0.0, np.nan]]), np.array([0]), {}, "NaN or infinite"),
        (np.array([[0.0, 1e39]]), np.array([0]), {}, "NaN or infinite"),
        (np.zeros(3), np.zeros(3, int), {}, "images must be"),
        (np.zeros((1, 2, 2, 2, 1)), np.zeros(1, int), {}, "images must be"),
        (np.zeros((1, 2), complex), np.zeros(1, int), {}, "real numbers"),
    ],
)
def test_from_arrays_clear_errors(images, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.from_arrays(images, labels, **kwargs)


def test_fit_preprocess_hand_case():
    # Channel 0: pixels 0 and 255 -> mean 0.5, std 0.5; channel 1: constant 51.
    images = np.array([[[[0, 51]]], [[[255, 51]]]], np.uint8)
    config = data.fit_preprocess({"image": images, "label": np.zeros(2, np.int32)})
    np.testing.assert_allclose(config.mean, (0.5, 0.2), rtol=1e-12)
    assert config.std == (0.5, 1.0)  # zero std replaced by 1
    assert config.scale == 255.0 and config.augment is False
    floats = np.array([1.0, 3.0, 3.0, 5.0], np.float32).reshape(4, 1, 1, 1)
    config = data.fit_preprocess({"image": floats}, augment=True)
    # mean 3, population variance (4 + 0 + 0 + 4) / 4 = 2.
    np.testing.assert_allclose(config.mean, (3.0,), rtol=1e-12)
    np.testing.assert_allclose(config.std, (np.sqrt(2.0),), rtol=1e-12)
    assert config.scale == 1.0 and config.augment is True


def test_fit_preprocess_chunks_match_numpy_float64(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 2, 3), dtype=np.uint8)
    whole = data.fit_preprocess({"image": images})
    monkeypatch.setattr(data, "_FIT_CHUNK_ELEMENTS", 2 * 3 * 2 * 3)  # 2 rows/chunk
    chunked = data.fit_preprocess({"image": images})
    flat = images.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(whole.mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(whole.std, flat.std(0), rtol=1e-12)
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-12)


@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_fit_preprocess_standardises_training_data(kind):
    rng = np.random.default_rng(1)
    if kind == "uint8":
        low = np.array([0, 100, 200])
        raw = rng.integers(low, low + 50, (64, 5, 5, 3)).astype(np.uint8)
    else:
        raw = rng.normal((-2.0, 0.0, 30.0), (0.1, 1.0, 5.0), (64, 5, 5, 3))
    train = data.from_arrays(raw, np.zeros(64, int))
    config = data.fit_preprocess(train)
    x = np.asarray(
        data.preprocess(None, jnp.asarray(train["image"]), config, train=False)
    )
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, rtol=1e-5)


def test_fit_preprocess_constant_float_channel_gets_std_one():
    images = np.full((5, 2, 2, 1), 0.1, np.float32)
    config = data.fit_preprocess({"image": images})
    assert config.std == (1.0,)
    np.testing.assert_allclose(config.mean, (0.1,), rtol=1e-6)


@pytest.mark.parametrize(
    ("train_data", "message"),
    [
        ({"label": np.zeros(2, np.int32)}, "no 'image' entry"),
        ({"image": np.zeros((2, 3), np.float32)}, r"\[N, H, W, C\]"),
        ({"image": np.zeros((0, 2, 2, 1), np.float32)}, "non-empty"),
        ({"image": np.zeros((2, 2, 2, 1), np.int64)}, "from_arrays"),
        ({"image": np.full((2, 1, 1, 1), np.nan, np.float32)}, "non-finite"),
    ],
)
def test_fit_preprocess_clear_errors(train_data, message):
    with pytest.raises(ValueError, match=message):
        data.fit_preprocess(train_data)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "mnist1d"])
def test_generated_like_has_the_datasets_shapes_dtypes_and_label_range(name):
    info = data.DATASETS[name]
    host = data.generated_like(name, 50, seed=3)
    assert host["image"].shape == (50, *info.input_shape)
    assert host["image"].dtype == (np.uint8 if info.scale == 255.0 else np.float32)
    assert host["label"].dtype == np.int32
    assert 0 <= host["label"].min() and host["label"].max() < info.num_classes
    np.testing.assert_array_equal(
        data.generated_like(name, 50, seed=3)["image"], host["image"]
    )
    data.preprocess(None, host["image"], data.preprocess_config(name), train=False)
    with pytest.raises(ValueError, match="num_examples must be >= 1, got 0"):
        data.generated_like(name, 0)
