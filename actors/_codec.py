"""Codecs: how stage outputs, mapped items and run inputs are written to a journal and read back.

What each codec means for whoever reads a journal:

* `JsonCodec` (the default) writes plain JSON, with tagged forms for tuples,
  sets, frozensets, bytes, dicts with keys that are not all strings, and
  attrs classes and dataclasses (by ``module:qualname`` and their fields).
  Reading it never runs code the reader has not allowed:

  - the reading paths (`Journal.result`, the ``dagvisor`` reading commands,
    reports, lineage, graphs) rebuild no class at all: a class value comes
    back as `Undecoded`, naming the class, with its stored text;
  - a resume rebuilds only the classes on its allow-list: those registered
    with the codec (``JsonCodec(types=[Order])`` or ``codec.register(Order)``)
    and those named by the return annotation of one of the run's stage
    functions (``async def f(ctx) -> Order``). Rebuilding calls the class
    with its stored fields (the user allowed it). Any other class the file
    names is refused with `NotRestorableError`; it is never looked up,
    imported or called.

  Because a resume could not rebuild it, an output holding a class that is
  not on the allow-list fails its stage when it is produced, saying how to
  allow the class.
* `PickleCodec`, for users who opt in, writes pickles: a resume unpickles,
  so a journal is then as trustworthy as its file. The reading paths never
  unpickle: every value of such a run comes back `Undecoded`.
"""

from __future__ import annotations

import base64
import dataclasses
import pickle
from json.encoder import encode_basestring
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Protocol,
    TypeVar,
    final,
    runtime_checkable,
)

import attrs

from ._errors import NotRestorableError
from ._jsonform import (
    MAX_DEPTH,
    PIECE,
    TAG,
    Malformed,
    SurrogatePair,
    b64_text,
    dump,
    dump_json,
    has_pair,
    load_json,
    pieces,
    split_pairs,
    untag,
    utf8,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

__all__ = [
    "Codec",
    "JsonCodec",
    "PickleCodec",
    "Undecoded",
    "class_path",
    "read_value",
]

T = TypeVar("T")


@runtime_checkable
class Codec(Protocol):
    """Turns values into text for a journal, and back.

    ``allow`` names the classes the caller allows besides the codec's own
    (the classes a stage function declares it returns); a codec that does
    not rebuild classes by name may ignore it.
    """

    name: str

    def encode(self, value: Any, *, allow: Collection[type] = ()) -> str:
        """Text for ``value``; raise `NotRestorableError` if it cannot be encoded."""
        ...

    def decode(self, text: str, *, allow: Collection[type] = ()) -> Any:
        """The value ``text`` was encoded from."""
        ...


@final
@attrs.frozen(repr=False)
class Undecoded:
    """A stored value that was not rebuilt: its stored text, and the class it names.

    Attributes:
        text: the value as the journal stores it (JSON for `JsonCodec`).
        type: the class the journal names for it (``"module:Qualname"``), or
            None when the whole value was left as stored (another codec).
    """

    text: str
    type: str | None = None

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        named = "" if self.type is None else f"type={self.type!r}, "
        return f"Undecoded({named}text={shown!r})"


def class_path(cls: type) -> str:
    """How a journal names a class: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_record_class(cls: type) -> bool:
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
        f"or codec.register({name}), or name it in the stage's return annotation "
        f"(-> {name})"
    )
    return NotRestorableError(msg)


def _too_deep() -> NotRestorableError:
    msg = (
        f"the value is nested more than {MAX_DEPTH} levels deep (or refers to "
        "itself) and cannot be written to the journal as JSON"
    )
    return NotRestorableError(msg)


class _Tagger:
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
            raise _too_deep()
        start = self.size
        if kind is list:
            return self._mark([self.tag(v, depth + 1) for v in value], start)
        if kind is dict:
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
        if kind is tuple or kind is set or kind is frozenset:
            items = [self.tag(v, depth + 2) for v in value]
            return self._mark(
                {TAG: kind.__name__, "items": self._mark(items, start)}, start
            )
        if kind is bytes:
            text = b64_text(value)
            self.size += len(text)
            return self._mark({TAG: "bytes", "data": text}, start)
        if _is_record_class(kind):
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
        msg = (
            f"a {kind.__module__}.{kind.__qualname__} cannot be written to the journal as "
            "JSON; return plain data, attrs classes or dataclasses, or opt into "
            "runtime(codec=PickleCodec())"
        )
        raise NotRestorableError(msg)


_CONSTANTS: Final = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


def _scalar(value: Any) -> str | None:
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


@final
class JsonCodec:
    """JSON with tagged forms for tuples, sets, bytes, attrs classes and dataclasses.

    Args:
        types: attrs classes and dataclasses a resume may rebuild (more with
            `register`; a stage's return annotation allows its classes too).

    Example:
        >>> codec = JsonCodec(types=[Order])  # doctest: +SKIP
        >>> async with runtime(journal="runs.db", codec=codec) as rt: ...  # doctest: +SKIP
    """

    name = "json"

    def __init__(self, types: Iterable[type] = ()) -> None:
        self._paths: dict[str, type] = {}
        self._allowed: set[type] = set()
        for cls in types:
            self.register(cls)

    def __repr__(self) -> str:
        return f"JsonCodec(types=[{', '.join(sorted(self._paths))}])"

    def register(self, cls: type[T]) -> type[T]:
        """Allow a resume to rebuild ``cls`` (an attrs class or a dataclass); returns it.

        Usable as a class decorator: ``@codec.register``.
        """
        if not isinstance(cls, type) or not _is_record_class(cls):
            msg = f"JsonCodec.register takes an attrs class or a dataclass, not {cls!r}"
            raise TypeError(msg)
        self._paths[class_path(cls)] = cls
        self._allowed.add(cls)
        return cls

    @property
    def types(self) -> frozenset[type]:
        """The classes registered with this codec."""
        return frozenset(self._allowed)

    def _tag(
        self, value: Any, allow: Collection[type], *, pairs: bool
    ) -> tuple[Any, dict[int, int]]:
        tagger = _Tagger(self._allowed, allow, pairs=pairs)
        try:
            return tagger.tag(value, 0), tagger.sizes
        except RecursionError:
            raise _too_deep() from None

    def encode(self, value: Any, *, allow: Collection[type] = ()) -> str:
        """JSON text for ``value`` (valid UTF-8: lone surrogates are escaped).

        Args:
            value: the value.
            allow: classes allowed besides the registered ones.

        Raises:
            NotRestorableError: a value JSON cannot hold, a class not allowed,
                or nesting deeper than the journal reads back.
        """
        try:
            text = _scalar(value)
            if text is not None:
                return text
            try:
                return dump(self._tag(value, allow, pairs=False)[0])
            except SurrogatePair:
                return dump(self._tag(value, allow, pairs=True)[0])
        except ValueError as exc:  # an int too long for JSON, for one
            msg = f"the value cannot be written to the journal as JSON ({exc})"
            raise NotRestorableError(msg) from None

    def encode_utf8(self, value: Any, *, allow: Collection[type] = ()) -> bytes:
        """`encode`'s text as UTF-8, built in pieces (for large values, in a thread).

        No piece takes the interpreter for long, so the event loop keeps
        running while another thread encodes a large value.
        """
        try:
            for pairs in (False, True):
                tagged, sizes = self._tag(value, allow, pairs=pairs)
                try:
                    return b"".join([utf8(piece) for piece in pieces(tagged, sizes)])
                except SurrogatePair:
                    continue
        except ValueError as exc:
            msg = f"the value cannot be written to the journal as JSON ({exc})"
            raise NotRestorableError(msg) from None
        msg_0 = "unreachable: strings with pairs are tagged"
        raise AssertionError(msg_0)  # pragma: no cover

    def decode(self, text: str, *, allow: Collection[type] = ()) -> Any:
        """The value ``text`` was encoded from, rebuilding only allowed classes.

        Raises:
            NotRestorableError: the text names a class that is not allowed (or
                was renamed), or whose stored fields no longer fit it.
            ValueError: the text is not a value this codec wrote.
        """
        paths = self._paths
        if allow:
            paths = {**{class_path(cls): cls for cls in allow}, **paths}

        def rebuild(node: dict[str, Any], get: Callable[[Any], Any]) -> Any:
            path = node["type"]
            cls = paths.get(path)
            if cls is None:
                msg = (
                    f"the journal holds a {path[:200]!r}, which this process does not "
                    "allow to be rebuilt (nor does it look it up); allow it: "
                    "runtime(codec=JsonCodec(types=[...])), codec.register(cls), or "
                    "the stage's return annotation; or, if the class was renamed or "
                    "moved since the run, define it again under that name"
                )
                raise NotRestorableError(msg)
            if (node[TAG] == "attrs") != attrs.has(cls):
                msg = (
                    f"the journal holds {path!r} as {node[TAG]}, which it no longer is"
                )
                raise NotRestorableError(msg)
            fields = {name: get(value) for name, value in node["fields"].items()}
            try:
                return cls(**fields)
            except Exception as exc:
                msg = (
                    f"the stored fields of {path!r} no longer fit the class "
                    f"({type(exc).__name__}: {str(exc)[:200]}); the class changed "
                    "since the run: give it defaults for new fields, or resume with "
                    "the code the run had"
                )
                raise NotRestorableError(msg) from exc

        return untag(load_json(text), rebuild, fields_first=True)


def _undecoded(node: dict[str, Any], get: Callable[[Any], Any]) -> Undecoded:
    try:
        text = dump_json(node)
    except (RecursionError, ValueError):
        msg = "a stored class value is nested too deeply to be shown"
        raise Malformed(msg) from None
    return Undecoded(text, node["type"])


def read_value(text: str) -> Any:
    """A `JsonCodec` text as plain data, rebuilding no class (reading paths).

    Tuples, sets, frozensets, bytes and dicts come back as they went in; a
    class value comes back as `Undecoded`.

    Raises:
        ValueError: the text is not a value `JsonCodec` wrote.
    """
    return untag(load_json(text), _undecoded, fields_first=False)


@final
class PickleCodec:
    """Pickle, for users who opt in: anything picklable, at pickle's trust level.

    A resume unpickles what the journal holds: use it only with journals
    nobody else can write. The reading paths never unpickle.
    """

    name = "pickle"

    def encode(self, value: Any, *, allow: Collection[type] = ()) -> str:
        """Base64 of the pickle of ``value``."""
        try:
            return base64.b64encode(pickle.dumps(value)).decode("ascii")
        except Exception as exc:
            msg = f"the value cannot be pickled: {type(exc).__name__}: {exc}"
            raise NotRestorableError(msg) from exc

    def decode(self, text: str, *, allow: Collection[type] = ()) -> Any:
        """The value ``text`` was encoded from (unpickled: opted into explicitly)."""
        return pickle.loads(base64.b64decode(text))
