# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing, installs the package with the extras it needs,
# installs the offline Fashion-MNIST (Debian package) when it is missing, then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: demo test test-fast test-extended lint format bench gpu-check fashion-mnist datasets clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[data]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,data,notebooks]'
	touch $@ $(VENV)/.installed-demo

# Fashion-MNIST IDX files from Debian's dataset-fashion-mnist, unless the user
# points AUTOSPARSE_FASHION_MNIST_DIR at a copy. Without apt-get (or root) the
# loader falls back to TFDS's download and says how to install the files.
fashion-mnist:
	@if [ -n "$$AUTOSPARSE_FASHION_MNIST_DIR" ] || [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		exit 0; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "note: Fashion-MNIST IDX files not found and apt-get is not usable;"; \
		echo "      run 'apt-get install dataset-fashion-mnist' or set AUTOSPARSE_FASHION_MNIST_DIR."; \
	fi

demo: $(VENV)/.installed-demo fashion-mnist
	$(PY) -m experiments.demo

# Test targets (markers in pyproject.toml):
#   make test           ruff, then every test but the `extended` ones: every property,
#                       the `slow` tests included.
#   make test-fast      ruff, then neither `slow` (notebooks, SIGKILL-and-resume,
#                       experiment scripts end to end) nor `extended`: the inner loop.
#                       TESTS=tests/test_masks.py (files or node ids) narrows it.
#   make test-extended  only the `extended` tests: near-duplicates of `make test`'s
#                       (two more SIGKILL points of the IRP resume tests, the
#                       legacy-mask cases at 90 and 99.5 % sparsity). .ci/run
#                       runs them after `make test` if time allows.
# Tests run in WORKERS pytest-xdist processes (2 by default: this machine's
# cores; each worker also imports JAX and TensorFlow, about 1-2 GB), one test
# file per worker at a time (--dist loadfile), so a module's shared fixtures are
# built once. WORKERS=0 runs in one process.
TESTS ?=
WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(WORKERS) --dist loadfile

# The datasets the tests and the demo read from TFDS's default directory,
# prepared once before the test workers start (two workers must not prepare
# the same dataset at once).
datasets: $(VENV)/.installed-demo fashion-mnist
	$(PY) -c "from autosparse_jax import data; [data.load_dataset(n, 'test') for n in ('fashion_mnist', 'mnist1d')]"

test: $(VENV)/.installed-test datasets
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PYTEST) -m "not extended"

test-fast: $(VENV)/.installed-test datasets
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PYTEST) -m "not slow and not extended" $(TESTS)

test-extended: $(VENV)/.installed-test datasets
	$(PYTEST) -m extended

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed-demo fashion-mnist
	$(PY) -m experiments.bench_train
	$(PY) -m experiments.bench_scorer
	$(PY) -m experiments.bench_vmap

# One call on a machine with an accelerator and JAX for it: the `gpu` tests,
# one IRP round of the ResNet-18 / CIFAR-10 recipe on generated data (epoch
# time, compile time, peak memory) and the training benchmark on generated
# Fashion-MNIST-shaped data; no dataset or network needed (only the package's
# dependencies). Where they are installed system-wide rather than in .venv:
# make gpu-check GPU_PY=python3
GPU_PY ?= $(PY)
GPU_TESTS := $(shell grep -l "mark.gpu" tests/test_*.py)
gpu-check:
	$(GPU_PY) -m pytest -q -p no:cacheprovider -m gpu $(GPU_TESTS)
	$(GPU_PY) -m experiments.gpu_check
	$(GPU_PY) -m experiments.bench_train --generated --models lenet300_100 lenet5 resnet20

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .cache
