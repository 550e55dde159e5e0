"""Frozen values: one read-only value that every consumer of an output shares.

The rule, the same for every value (outputs, mapped items, run inputs): it
is frozen once, in the task that hands it over (the producing stage, the
requester of an ``expand``, the caller of ``rt.run``), and then shared.

* Immutable values (numbers, strings, bytes, None, frozensets, ranges) are
  shared as they are; the common case costs one type check.
* ``list``, ``dict`` and ``set`` are rebuilt as `FrozenList`, `FrozenDict`
  and `FrozenSet`: subclasses of their builtin type (``isinstance``,
  equality, iteration, ``json`` and arithmetic that returns a new value all
  work as before) whose mutating methods raise `ReadOnlyInputError`.
  ``copy.copy``/``copy.deepcopy`` and pickling give plain, mutable copies.
  A ``bytearray`` becomes ``bytes``. Tuples and named tuples holding any of
  these are rebuilt around the frozen parts.
* numpy arrays become read-only views (no data is copied; the producer's
  own array stays writable).
* Objects of any other class are shared as they are: make them immutable
  (``attrs.frozen``, frozen dataclasses) when several stages read them.

Freezing walks the value with an explicit stack: any depth, shared parts
and cycles are fine. It runs in the handing-over task, never in the
supervisor, so whatever a value does while it is frozen (a raising
``__hash__`` of a dict key) fails that task alone.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, NoReturn

from ._stage_errors import ReadOnlyInputError

__all__ = ["SHARED", "FrozenDict", "FrozenList", "FrozenSet", "freeze"]


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    kind = type(self).__mro__[1].__name__
    msg = (
        f"this {kind} is read-only: it is shared with every stage that reads it; "
        f"make a private copy first, e.g. {kind}(value) or copy.deepcopy(value)"
    )
    raise ReadOnlyInputError(msg)


class FrozenList(list[Any]):
    """A read-only list: an output (or part of one) shared by its consumers."""

    __slots__ = ()
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list(self), memo)


class FrozenDict(dict[Any, Any]):
    """A read-only dict: an output (or part of one) shared by its consumers."""

    __slots__ = ()
    update = pop = popitem = clear = setdefault = _refuse
    __setitem__ = __delitem__ = __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return copy.deepcopy(dict(self), memo)


class FrozenSet(set[Any]):
    """A read-only set: an output (or part of one) shared by its consumers."""

    __slots__ = ()
    add = discard = remove = pop = clear = update = _refuse
    intersection_update = difference_update = symmetric_difference_update = _refuse
    __ior__ = __iand__ = __isub__ = __ixor__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (set, (set(self),))

    def __repr__(self) -> str:
        return repr(set(self))

    def __copy__(self) -> set[Any]:
        return set(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> set[Any]:
        return copy.deepcopy(set(self), memo)


# Values that are already read-only: shared as they are, without a walk.
SHARED: frozenset[type] = frozenset(
    {
        int,
        float,
        complex,
        bool,
        str,
        bytes,
        type(None),
        range,
        frozenset,
        FrozenList,
        FrozenDict,
        FrozenSet,
    }
)
_REBUILT: frozenset[type] = frozenset({list, dict, set, bytearray, tuple})


def freeze(value: Any) -> Any:
    """The read-only value to share in place of ``value`` (itself when it already is).

    Raises:
        ReadOnlyInputError: never; mutating the result raises it.
        Exception: whatever a dict key's ``__hash__`` raised while its dict
            was rebuilt.
    """
    kind = type(value)
    if kind in SHARED:
        return value
    if kind not in _REBUILT and not _is_array(value) and not _is_named_tuple(kind):
        return value
    return _Freezer().run(value)


def _is_named_tuple(kind: type) -> bool:
    return issubclass(kind, tuple) and hasattr(kind, "_make")


def _is_array(value: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


class _Freezer:
    """One walk over a value: frozen parts by the id of their original.

    Mutable containers get an empty frozen shell when first seen (so a
    cycle back to them finds it) and are filled at the end; tuples are
    built after their elements (a cycle can only pass through a mutable
    container, whose shell exists by then).
    """

    __slots__ = ("frozen", "in_tuple", "kept", "shells")

    def __init__(self) -> None:
        self.frozen: dict[int, Any] = {}
        self.kept: list[Any] = []  # originals stay alive: their ids stay theirs
        self.shells: list[tuple[Any, Any]] = []
        self.in_tuple: set[int] = set()

    def run(self, root: Any) -> Any:
        frozen = self.frozen
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            value, done = stack.pop()
            if done:
                frozen[id(value)] = self._tuple(value)
                continue
            key = id(value)
            if key in frozen or key in self.in_tuple:
                continue
            kind = type(value)
            children: Any = ()
            if kind is list:
                frozen[key] = rows = FrozenList()
                self.shells.append((value, rows))
                children = value
            elif kind is dict:
                frozen[key] = table = FrozenDict()
                self.shells.append((value, table))
                children = value.values()
            elif kind is set:
                frozen[key] = FrozenSet(value)  # elements are hashable: shared
            elif kind is bytearray:
                frozen[key] = bytes(value)
            elif kind is tuple or _is_named_tuple(kind):
                self.in_tuple.add(key)
                stack.append((value, True))
                children = value
            elif _is_array(value):
                frozen[key] = _read_only_view(value)
            else:
                continue  # shared as it is
            self.kept.append(value)
            stack.extend(
                (child, False) for child in children if type(child) not in SHARED
            )
        for original, shell in self.shells:
            self._fill(original, shell)
        return frozen.get(id(root), root)

    def _part(self, value: Any) -> Any:
        return self.frozen.get(id(value), value)

    def _tuple(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        parts = [self._part(item) for item in value]
        if all(new is old for new, old in zip(parts, value, strict=True)):
            return value
        if type(value) is tuple:
            return tuple(parts)
        rebuilt: tuple[Any, ...] = type(value)._make(parts)  # type: ignore[attr-defined]  # a named tuple, checked by _is_named_tuple
        return rebuilt

    def _fill(self, original: Any, shell: Any) -> None:
        part = self._part
        if type(shell) is FrozenList:
            list.extend(shell, [part(item) for item in original])
        else:
            dict.update(shell, {key: part(item) for key, item in original.items()})


def _read_only_view(array: Any) -> Any:
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view
