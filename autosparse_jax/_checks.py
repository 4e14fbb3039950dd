"""Argument checks shared by the modules' input validation."""

import numbers
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
