"""Tests for the package itself: import cost and the re-exported API."""

import subprocess
import sys

import autosparse_jax


def test_import_does_not_import_tensorflow():
    code = (
        "import sys, autosparse_jax; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_datasets')); print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_all_names_exist_and_train_is_the_module():
    for name in autosparse_jax.__all__:
        assert hasattr(autosparse_jax, name), name
    assert callable(autosparse_jax.train.train)
    assert autosparse_jax.mask_from_scores is autosparse_jax.masks.mask_from_scores
