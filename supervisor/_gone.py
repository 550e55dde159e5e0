"""The names of stages that left memory: a compact table, so a name is never reused.

Finished stages leave a run's memory when a streamed pipeline moves on or
under ``retain_outputs="journal"``. Their names must stay taken (a change
naming one is refused, a new stage may not reuse one), but keeping every
name as a string would make memory grow by about a hundred bytes a stage.
So each name is kept as its 64-bit hash in an open-addressing table of
``array('q')`` slots, with the sequence number of the change that created
the stage and the hash of who asked for it (for the idempotent re-add of a
stage a resumed requester asks for again): about 36 bytes a name, no
Python object per name.

Two different names with the same 64-bit hash would make the second look
taken: about one chance in 3 * 10^13 for a million names (``N^2 / 2^65``).
String hashes are keyed per process (``PYTHONHASHSEED``), so names cannot
be chosen to collide.
"""

from __future__ import annotations

from array import array
from typing import Final, final

__all__ = ["GoneNames"]

_EMPTY: Final = 0
_FIRST_SIZE: Final = 1024  # slots, a power of two


def _digest(name: str) -> int:
    value = hash(name)
    return value if value != _EMPTY else 1


@final
class GoneNames:
    """Names of stages no longer in memory, each with its creating change and requester."""

    __slots__ = ("_count", "_created", "_keys", "_mask", "_requesters")

    def __init__(self) -> None:
        self._count = 0
        self._allocate(_FIRST_SIZE)

    def _allocate(self, size: int) -> None:
        self._keys = array("q", bytes(8 * size))
        self._created = array("q", bytes(8 * size))
        self._requesters = array("q", bytes(8 * size))
        self._mask = size - 1

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._slot(_digest(name)) >= 0

    def _slot(self, key: int) -> int:
        """The slot holding ``key``, or -1."""
        keys, mask = self._keys, self._mask
        index = key & mask
        while True:
            found = keys[index]
            if found == key:
                return index
            if found == _EMPTY:
                return -1
            index = (index + 1) & mask

    def add(self, name: str, created_by: int, requester: str | None) -> None:
        """Remember ``name`` (added by change ``created_by``, -1 for the pipeline's own)."""
        key = _digest(name)
        if self._slot(key) >= 0:
            return
        if (self._count + 1) * 3 > len(self._keys) * 2:  # keep the load under 2/3
            self._grow()
        self._put(key, created_by, 0 if requester is None else _digest(requester))
        self._count += 1

    def _put(self, key: int, created_by: int, requester: int) -> None:
        keys, mask = self._keys, self._mask
        index = key & mask
        while keys[index] != _EMPTY:
            index = (index + 1) & mask
        keys[index] = key
        self._created[index] = created_by
        self._requesters[index] = requester

    def _grow(self) -> None:
        keys, created, requesters = self._keys, self._created, self._requesters
        self._allocate(2 * len(keys))
        for index, key in enumerate(keys):
            if key != _EMPTY:
                self._put(key, created[index], requesters[index])

    def created_by(self, name: str) -> int | None:
        """The change that created ``name`` (-1: the pipeline), or None if it is not gone."""
        index = self._slot(_digest(name))
        return None if index < 0 else self._created[index]

    def added_by(self, name: str, requester: str) -> bool:
        """Whether ``name`` is gone and was added at run time by ``requester``."""
        index = self._slot(_digest(name))
        return (
            index >= 0
            and self._created[index] >= 0
            and self._requesters[index] == _digest(requester)
        )
