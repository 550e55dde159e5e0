"""Codecs: how stage outputs (and mapped items) are written to a journal.

`JsonCodec` is the default: plain JSON, plus tagged forms so that tuples,
sets, bytes, dicts with non-string keys, attrs classes and dataclasses come
back as they went in. A class is found again only among the modules already
imported by the process, never imported because a journal names it.
`PickleCodec` is there for users who opt in explicitly (a journal is then as
trustworthy as its file). An output that cannot be encoded fails its stage
at once, with the reason, rather than when a checkpoint is written.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import sys
from typing import Any, Protocol, final, runtime_checkable

import attrs

from ._errors import NotRestorableError

__all__ = ["Codec", "JsonCodec", "PickleCodec"]

_TAG = "__dagvisor__"


@runtime_checkable
class Codec(Protocol):
    """Turns values into text for a journal, and back."""

    name: str

    def encode(self, value: Any) -> str:
        """Text for ``value``; raise `NotRestorableError` if it cannot be encoded."""
        ...

    def decode(self, text: str) -> Any:
        """The value ``text`` was encoded from."""
        ...


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _loaded_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        msg = (
            f"the journal holds a {path} but module {module_name!r} is not imported; "
            "import it before resuming"
        )
        raise NotRestorableError(msg)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    if not isinstance(target, type):
        msg = f"{path} in the journal is not a class"
        raise NotRestorableError(msg)
    return target


@final
class JsonCodec:
    """JSON with tagged forms for tuples, sets, bytes, attrs classes and dataclasses."""

    name = "json"

    def _to_json(self, value: Any) -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, float, str):
            return value
        if kind is list:
            return [self._to_json(v) for v in value]
        if kind is dict:
            if all(type(k) is str for k in value):
                if _TAG in value:
                    return {
                        _TAG: "dict",
                        "items": [[k, self._to_json(v)] for k, v in value.items()],
                    }
                return {k: self._to_json(v) for k, v in value.items()}
            return {
                _TAG: "dict",
                "items": [
                    [self._to_json(k), self._to_json(v)] for k, v in value.items()
                ],
            }
        if kind is tuple:
            return {_TAG: "tuple", "items": [self._to_json(v) for v in value]}
        if kind in (set, frozenset):
            return {_TAG: kind.__name__, "items": [self._to_json(v) for v in value]}
        if kind is bytes:
            return {_TAG: "bytes", "data": base64.b64encode(value).decode("ascii")}
        if attrs.has(kind):
            fields = {
                f.name: self._to_json(getattr(value, f.name))
                for f in attrs.fields(kind)
            }
            return {_TAG: "attrs", "type": _class_path(kind), "fields": fields}
        if dataclasses.is_dataclass(value):
            fields = {
                f.name: self._to_json(getattr(value, f.name))
                for f in dataclasses.fields(value)
            }
            return {_TAG: "dataclass", "type": _class_path(kind), "fields": fields}
        msg = (
            f"a {kind.__module__}.{kind.__qualname__} cannot be written to the journal as "
            "JSON; return plain data, attrs classes or dataclasses, or opt into "
            "runtime(codec=PickleCodec())"
        )
        raise NotRestorableError(msg)

    def _from_json(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._from_json(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = value.get(_TAG)
        if tag is None:
            return {k: self._from_json(v) for k, v in value.items()}
        if tag == "dict":
            return {self._from_json(k): self._from_json(v) for k, v in value["items"]}
        if tag == "tuple":
            return tuple(self._from_json(v) for v in value["items"])
        if tag == "set":
            return {self._from_json(v) for v in value["items"]}
        if tag == "frozenset":
            return frozenset(self._from_json(v) for v in value["items"])
        if tag == "bytes":
            return base64.b64decode(value["data"])
        if tag in ("attrs", "dataclass"):
            cls = _loaded_class(value["type"])
            return cls(**{k: self._from_json(v) for k, v in value["fields"].items()})
        msg = f"unknown tag {tag!r} in the journal"
        raise NotRestorableError(msg)

    def encode(self, value: Any) -> str:
        """JSON text for ``value``."""
        try:
            return json.dumps(
                self._to_json(value), allow_nan=True, separators=(",", ":")
            )
        except RecursionError:
            msg = "the value is nested too deeply to be written to the journal as JSON"
            raise NotRestorableError(msg) from None

    def decode(self, text: str) -> Any:
        """The value ``text`` was encoded from."""
        return self._from_json(json.loads(text))


@final
class PickleCodec:
    """Pickle, for users who opt in: anything picklable, at pickle's trust level."""

    name = "pickle"

    def encode(self, value: Any) -> str:
        """Base64 of the pickle of ``value``."""
        try:
            return base64.b64encode(pickle.dumps(value)).decode("ascii")
        except Exception as exc:
            msg = f"the value cannot be pickled: {type(exc).__name__}: {exc}"
            raise NotRestorableError(msg) from exc

    def decode(self, text: str) -> Any:
        """The value ``text`` was encoded from."""
        return pickle.loads(base64.b64decode(text))  # opted into explicitly
