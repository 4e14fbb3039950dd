"""Shared test configuration: CPU only, strict rank promotion, tiny fixtures."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Most of the suite's time is XLA compiling programs. A persistent compilation
# cache lets the xdist workers, the subprocesses some tests start (scripts,
# notebooks) and every later run reuse each program compiled once; the first
# run on a fresh clone fills it. JAX keys entries on the program, the backend
# and the JAX/XLA versions, so a stale entry is never used. `make clean`
# removes it; JAX_COMPILATION_CACHE_DIR=... puts it elsewhere.
_COMPILATION_CACHE = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_COMPILATION_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import chex  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


# The test files that take longest (end-to-end scripts, notebooks, many
# compiles), longest first. ``make test`` runs files in two xdist workers in
# collection order (``--dist loadfile``); starting the long ones first keeps a
# long file from being the last one left. A file not listed runs after them.
LONGEST_FIRST = (
    "test_allocation.py",
    "test_experiments.py",
    "test_irp.py",
    "test_single_path.py",
    "test_scorer_study.py",
    "test_notebooks.py",
    "test_data.py",
    "test_autosparse.py",
    "test_models.py",
    "test_irp_resume.py",
    "test_pretrained.py",
    "test_irp_study.py",
)


def _file_rank(item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def _has_fashion_mnist() -> bool:
    from autosparse_jax import _tfds_datasets

    dirs = _tfds_datasets.candidate_dirs(None)
    return _tfds_datasets.find_source_dir(dirs) is not None


def pytest_collection_modifyitems(config, items):
    """Runs the longest files first; skips ``gpu`` tests on CPU-only machines
    and ``fashion_mnist`` tests where the dataset's IDX files are missing."""
    items.sort(key=_file_rank)  # stable: the order within a file is kept
    skips = {}
    if jax.default_backend() == "cpu":
        skips["gpu"] = pytest.mark.skip(reason="needs a GPU or TPU")
    if any(item.get_closest_marker("fashion_mnist") for item in items) and (
        not _has_fashion_mnist()
    ):
        skips["fashion_mnist"] = pytest.mark.skip(
            reason="Fashion-MNIST IDX files missing: apt-get install "
            "dataset-fashion-mnist (or make datasets)"
        )
    for item in items:
        for marker, skip in skips.items():
            if item.get_closest_marker(marker):
                item.add_marker(skip)


class TinyMLP(nn.Module):
    """A Flax MLP on flattened images with a ``head`` output layer, for tests."""

    num_classes: int = 3
    hidden: int = 8

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="head")(x)


def tiny_target(shape=(8, 8, 1)):
    """A ``TinyMLP`` (10 classes, 64 hidden units) as a study target
    (``experiments.common.Target``, seed 3, two scoring batches of 32), and its
    model."""
    from autosparse_jax import models
    from experiments import common

    model = TinyMLP(num_classes=10, hidden=64)
    params, state = models.init_params(jax.random.key(3), model, shape)
    batch = {
        "image": jax.random.normal(jax.random.key(1), (2, 32, *shape)),
        "label": jax.random.randint(jax.random.key(2), (2, 32), 0, 10),
    }
    target = common.Target(
        seed=3, params=params, model_state=state,
        apply_fn=models.make_apply_fn(model, state), batches=batch,
        prune_key=jax.random.key(4), data_key=jax.random.key(5), phi=None,
    )  # fmt: skip
    return target, model


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def tiny_params():
    """Two dense layers: kernels (4, 3) and (3, 2), plus biases."""
    k1, k2 = jax.random.split(jax.random.key(42))
    return {
        "Dense_0": {
            "kernel": jax.random.normal(k1, (4, 3)),
            "bias": jnp.zeros((3,)),
        },
        "Dense_1": {
            "kernel": jax.random.normal(k2, (3, 2)),
            "bias": jnp.zeros((2,)),
        },
    }


@pytest.fixture
def tiny_apply_fn():
    def apply_fn(params, x):
        x = x.reshape(x.shape[0], -1)
        h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None, :]
        h = jax.nn.relu(h)
        return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"][None, :]

    return apply_fn


@pytest.fixture
def tiny_batch():
    k1, k2 = jax.random.split(jax.random.key(7))
    return {
        "image": jax.random.normal(k1, (8, 2, 2, 1)),
        "label": jax.random.randint(k2, (8,), 0, 2),
    }


def assert_trees_all_close(actual, expected, rtol=1e-6, atol=0.0):
    """Same structure and leaves equal to tolerance."""
    chex.assert_trees_all_equal_structs(actual, expected)
    chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


def assert_trees_all_equal(actual, expected):
    """Same structure and bitwise-equal leaves."""
    chex.assert_trees_all_equal_structs(actual, expected)
    chex.assert_trees_all_equal(actual, expected)
