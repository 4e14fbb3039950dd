"""Read-only name tables: an unknown name raises a ``KeyError`` listing valid ones."""

import difflib
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

V = TypeVar("V")


class NameTable(Mapping[str, V]):
    """A read-only mapping from names; an unknown name's ``KeyError`` helps.

    Behaves as ``types.MappingProxyType(entries)`` (iteration order, ``in``,
    ``get``, ``==``), except that ``table[name]`` for an unknown name raises
    ``KeyError`` naming the name, the closest valid one and all valid ones.

    Example:
      >>> table = NameTable("criterion", {"snip": 1, "grasp": 2})
      >>> table["snipp"]
      Traceback (most recent call last):
      KeyError: "unknown criterion 'snipp'; did you mean 'snip'? Valid names: ..."
    """

    def __init__(self, what: str, entries: Mapping[str, V]):
        self._what = what
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> V:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise KeyError(self._unknown(name)) from None

    def _unknown(self, name: Any) -> str:
        valid = sorted(self._entries)
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        return f"unknown {self._what} {name!r};{hint} Valid names: {', '.join(valid)}."

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"NameTable({self._what!r}, {self._entries!r})"
