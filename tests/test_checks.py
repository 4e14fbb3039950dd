"""Tests for autosparse_jax._checks."""

import numpy as np
import pytest

from autosparse_jax._checks import is_int


@pytest.mark.parametrize("value", [0, 3, -2, np.int32(4), np.int64(5)])
def test_integers_are_ints(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 3.0, "3", None])
def test_bools_floats_and_others_are_not(value):
    assert not is_int(value)
