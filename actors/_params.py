"""Stage parameters: plain data a stage instance carries, read as ``ctx.params``.

Parameters are configuration (a batch number, a threshold, a region), so
they are plain JSON data, checked when they are given: ``str`` keys, and
values that are None, booleans, whole numbers within 64 bits, finite
floats, strings, lists (tuples become lists) and mappings with string keys,
nested at most `MAX_DEPTH` deep. That is what lets a journal keep them as
they are, a reading command show them, and the control API send them, with
no codec and no class to rebuild. They are frozen (see `_freeze`): every
attempt of the stage reads the same values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

from ._freeze import FrozenDict, freeze

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "EMPTY_PARAMS",
    "MAX_DEPTH",
    "check_params",
    "params_key",
    "params_text",
    "plain_json",
]

EMPTY_PARAMS: Final[Mapping[str, Any]] = FrozenDict()
"""The parameters of a stage that has none."""

MAX_DEPTH: Final = 32
_INT_LIMIT: Final = 2**63


def check_params(params: object, *, stage: str) -> Mapping[str, Any]:
    """The frozen, plain form of ``params``.

    Raises:
        TypeError: not a mapping of names to plain JSON data; the message says
            which value and what is accepted.
    """
    if not isinstance(params, Mapping):
        msg = f"the parameters of stage {stage!r} must be a mapping of names to values, not {type(params).__qualname__}"
        raise TypeError(msg)
    if not params:
        return EMPTY_PARAMS
    plain = plain_json(params, lambda where, what: _refuse(stage, where, what))
    frozen: Mapping[str, Any] = freeze(plain)
    return frozen


def params_key(params: Mapping[str, Any]) -> str:
    """A text that is equal for equal parameters (compared instead of the values)."""
    if not params:
        return ""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def params_text(params: Mapping[str, Any]) -> str:
    """The parameters as a person reads them: JSON, keys sorted, one line."""
    return json.dumps(params, sort_keys=True, ensure_ascii=False)


def plain_json(
    root: Mapping[Any, Any], refuse: Callable[[str, str], NoReturn]
) -> dict[str, Any]:
    """A plain copy of ``root`` (lists for tuples), checked without recursion.

    ``refuse(where, what)`` raises for the first value that is not plain JSON
    data: ``where`` is its path (``['a'][0]``, empty for the root), ``what``
    says what is wrong with it.
    """
    result: dict[str, Any] = {}
    stack: list[tuple[Any, Any, int, str]] = [(root, result, 0, "")]
    while stack:
        source, target, depth, where = stack.pop()
        if depth >= MAX_DEPTH:
            refuse(where, f"nested more than {MAX_DEPTH} deep")
        pairs = source.items() if isinstance(source, Mapping) else enumerate(source)
        for key, value in pairs:
            if isinstance(source, Mapping) and type(key) is not str:
                if not isinstance(key, str):
                    what = "have" if not where else "has"
                    refuse(
                        where,
                        f"{what} a key of type {type(key).__qualname__}; keys are strings",
                    )
                key = str.__str__(key)  # a subclass: its plain string
            path = f"{where}[{key!r}]"
            plain = _scalar(value)
            if plain is not _NOT_SCALAR:
                _put(target, key, plain)
                continue
            if isinstance(value, Mapping):
                inner: Any = {}
            elif isinstance(value, list | tuple):
                inner = []
            elif type(value) is int:
                refuse(path, "is a whole number beyond 64 bits")
            elif type(value) is float:
                refuse(path, "is not a finite number")
            else:
                refuse(path, f"is a {type(value).__qualname__}")
            _put(target, key, inner)
            stack.append((value, inner, depth + 1, path))
    return result


_NOT_SCALAR: Final = object()


def _scalar(value: object) -> object:
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -_INT_LIMIT <= value < _INT_LIMIT else _NOT_SCALAR  # type: ignore[operator]  # an int, checked by kind
    if kind is float:
        return value if math.isfinite(value) else _NOT_SCALAR  # type: ignore[arg-type]  # a float, checked by kind
    if isinstance(value, str):  # a subclass: its plain string
        return str.__str__(value)
    return _NOT_SCALAR


def _put(target: Any, key: Any, value: Any) -> None:
    if isinstance(target, dict):
        target[key] = value
    else:
        target.append(value)


def _refuse(stage: str, where: str, what: str) -> NoReturn:
    shown = f"parameter {where}" if where else "the parameters"
    msg = (
        f"{shown} of stage {stage!r} {what}: parameters are plain JSON data "
        "(None, booleans, whole numbers within 64 bits, finite floats, strings, "
        "lists and mappings with string keys)"
    )
    raise TypeError(msg)
