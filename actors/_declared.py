"""The classes a stage function declares it returns: part of a resume's allow-list.

``async def price(ctx) -> Order`` allows `Order` (and the attrs classes and
dataclasses named by `Order`'s field annotations, transitively) to be
rebuilt from the journal when the run is resumed, as if it were registered
with the codec. Annotations are resolved when first needed (the first
output of the function, or a resume), never when a stage is declared, and
once per function. An annotation that cannot be resolved (a name imported
only for type checkers, say) allows nothing: the codec then asks for the
class to be registered.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from typing import Any, Final

import attrs

__all__ = ["declared_types"]

_NONE: Final[frozenset[type]] = frozenset()
_CACHE: dict[Any, frozenset[type]] = {}
"""By function. Stage functions of journaled runs are registered, so the
registry keeps them alive anyway; this adds no lifetime of its own."""


def _namespace(owner: Any) -> dict[str, Any]:
    module = sys.modules.get(getattr(owner, "__module__", None) or "")
    space = dict(vars(module)) if module is not None else {}
    space.update(getattr(owner, "__globals__", {}))
    return space


def _resolve(hint: Any, namespace: dict[str, Any]) -> Any:
    """An annotation with its strings evaluated (the user's own source text)."""
    if isinstance(hint, typing.ForwardRef):
        hint = hint.__forward_arg__
    if isinstance(hint, str):
        return eval(hint, namespace)
    return hint


def _field_hints(cls: type) -> list[Any]:
    try:
        return list(typing.get_type_hints(cls).values())
    except Exception:  # an annotation only a type checker can resolve
        fields = attrs.fields(cls) if attrs.has(cls) else dataclasses.fields(cls)
        return [f.type for f in fields if isinstance(f.type, type)]


def _classes(hint: Any, namespace: dict[str, Any]) -> frozenset[type]:
    found: set[type] = set()
    todo = [(hint, namespace)]
    seen: set[int] = set()
    while todo:
        hint, space = todo.pop()
        if id(hint) in seen:
            continue
        seen.add(id(hint))
        try:
            hint = _resolve(hint, space)
        except Exception:
            continue
        if isinstance(hint, type) and (
            attrs.has(hint) or dataclasses.is_dataclass(hint)
        ):
            if hint not in found:
                found.add(hint)
                inner = _namespace(hint)
                todo.extend((field, inner) for field in _field_hints(hint))
            continue
        todo.extend((arg, space) for arg in typing.get_args(hint))
    return frozenset(found)


def declared_types(fn: Any) -> frozenset[type]:
    """The attrs classes and dataclasses ``fn``'s return annotation names."""
    try:
        return _CACHE[fn]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable
        return _NONE
    try:
        target = inspect.unwrap(fn)
        annotations = getattr(target, "__annotations__", None)
    except Exception:  # a wrapper chain that loops, an attribute that raises
        return _NONE
    hint = annotations.get("return") if isinstance(annotations, dict) else None
    found = _NONE if hint is None else _classes(hint, _namespace(target))
    _CACHE[fn] = found
    return found
