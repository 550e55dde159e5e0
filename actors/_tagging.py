"""Values in their tagged JSON form, as `JsonCodec` writes them: each class checked.

`Tagger` walks a value (with recursion bounded by `MAX_DEPTH`) and returns
plain JSON data, with a ``{"__dagvisor__": tag, ...}`` object for what JSON
cannot say. An attrs class or dataclass is written by ``module:qualname``
and the fields its constructor takes, and only if the caller allows it: a
resume could not rebuild it otherwise. `Tagger` also estimates the text's
size, so that `_jsonform.pieces` can write a large value in pieces.
`scalar` is the fast path for the plain scalars most stages return.
"""

from __future__ import annotations

import dataclasses
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._freeze import FrozenDict, FrozenList, FrozenSet
from ._journal_errors import NotRestorableError
from ._jsonform import MAX_DEPTH, PIECE, TAG, b64_text, has_pair, split_pairs

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["Tagger", "class_path", "is_record_class", "scalar", "too_deep"]

_COLLECTIONS: Final[dict[type, str]] = {
    tuple: "tuple",
    set: "set",
    frozenset: "frozenset",
    FrozenSet: "set",
}
"""The tag of each collection JSON has no form for. The read-only list, dict
and set an output is frozen into (`dagvisor.actors._freeze`) are written as
the builtin types they stand for: a stage passing on an input writes it."""


def class_path(cls: type) -> str:
    """How a journal names a class: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_record_class(cls: type) -> bool:
    return attrs.has(cls) or dataclasses.is_dataclass(cls)


_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, str], ...]:
    """``(attribute, constructor keyword)`` of each field the constructor takes."""
    found = _FIELDS.get(cls)
    if found is None:
        if attrs.has(cls):
            found = tuple(
                (f.name, f.alias or f.name) for f in attrs.fields(cls) if f.init
            )
        else:
            found = tuple((f.name, f.name) for f in dataclasses.fields(cls) if f.init)
        _FIELDS[cls] = found
    return found


def _not_allowed(cls: type) -> NotRestorableError:
    name = cls.__qualname__
    msg = (
        f"a {class_path(cls)} cannot be journaled: a resume rebuilds only the "
        f"classes it is allowed to; allow it with runtime(codec=JsonCodec(types=[{name}])) "
        f"or codec.register({name}) (for a stage's output, naming it in the stage's "
        f"return annotation, -> {name}, is enough)"
    )
    return NotRestorableError(msg)


def too_deep() -> NotRestorableError:
    msg = (
        f"the value is nested more than {MAX_DEPTH} levels deep (or refers to "
        "itself) and cannot be written to the journal as JSON"
    )
    return NotRestorableError(msg)


class Tagger:
    """Turns a value into its tagged JSON form, checking every class it holds."""

    __slots__ = ("allow", "allowed", "pairs", "size", "sizes")

    def __init__(
        self, allowed: Collection[type], allow: Collection[type], *, pairs: bool
    ) -> None:
        self.allowed = allowed
        self.allow = allow
        self.pairs = pairs  # tag strings holding a surrogate pair
        self.size = 0  # estimated characters of text so far
        self.sizes: dict[int, int] = {}  # large containers' sizes, for `pieces`

    def _mark(self, container: Any, start: int) -> Any:
        if self.size - start > PIECE:
            self.sizes[id(container)] = self.size - start
        return container

    def _text(self, value: str) -> Any:
        self.size += len(value) + 2
        if self.pairs and has_pair(value):
            return {TAG: "str", "parts": split_pairs(value)}
        return value

    def tag(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is float:
            self.size += 8
            return value
        if kind is str:
            return self._text(value)
        if depth >= MAX_DEPTH:
            raise too_deep()
        start = self.size
        if kind is list or kind is FrozenList:
            return self._mark([self.tag(v, depth + 1) for v in value], start)
        if kind is dict or kind is FrozenDict:
            plain = all(type(k) is str for k in value) and TAG not in value
            if plain and not (self.pairs and any(has_pair(k) for k in value)):
                out = {k: self.tag(v, depth + 1) for k, v in value.items()}
                self.size += sum(len(k) + 4 for k in value)
                return self._mark(out, start)
            items = [
                [self.tag(k, depth + 3), self.tag(v, depth + 3)]
                for k, v in value.items()
            ]
            return self._mark({TAG: "dict", "items": self._mark(items, start)}, start)
        collection = _COLLECTIONS.get(kind)
        if collection is not None:
            items = [self.tag(v, depth + 2) for v in value]
            return self._mark(
                {TAG: collection, "items": self._mark(items, start)}, start
            )
        if kind is bytes:
            text = b64_text(value)
            self.size += len(text)
            return self._mark({TAG: "bytes", "data": text}, start)
        if is_record_class(kind):
            if kind not in self.allowed and kind not in self.allow:
                raise _not_allowed(kind)
            fields = {
                keyword: self.tag(getattr(value, name), depth + 2)
                for name, keyword in _fields(kind)
            }
            tag = "attrs" if attrs.has(kind) else "dataclass"
            out = {
                TAG: tag,
                "type": class_path(kind),
                "fields": self._mark(fields, start),
            }
            return self._mark(out, start)
        if kind.__module__.partition(".")[0] in ("numpy", "pandas", "pyarrow"):
            msg = (
                f"a {kind.__module__}.{kind.__qualname__} cannot be written to the "
                "journal as JSON; a stage returning an array, a DataFrame or a Table "
                'stores it as .npy or Arrow with @stage(codec="data") (or '
                'runtime(codec="data"), dagvisor run --codec data); inside another '
                "value, convert it (.tolist(), .to_dict())"
            )
        else:
            msg = (
                f"a {kind.__module__}.{kind.__qualname__} cannot be written to the "
                "journal as JSON; return plain data, attrs classes or dataclasses, or "
                "opt into runtime(codec=PickleCodec())"
            )
        raise NotRestorableError(msg)


_CONSTANTS: Final = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


def scalar(value: Any) -> str | None:
    """The JSON text of a plain scalar, or None if ``value`` is not one (fast path)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)  # ValueError past 4,300 digits
    if kind is str and value.isascii():
        return str(encode_basestring(value))
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        if value != value:
            return "NaN"
        return _CONSTANTS.get(value) or float.__repr__(value)
    return None
