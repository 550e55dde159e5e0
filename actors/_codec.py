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
import pickle
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, final, runtime_checkable

import attrs

from ._journal_errors import NotRestorableError
from ._jsonform import (
    TAG,
    Malformed,
    SurrogatePair,
    dump,
    dump_json,
    joined,
    load_json,
    pieces,
    untag,
    utf8,
)
from ._tagging import Tagger, class_path, is_record_class, scalar, too_deep

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

    def encode(
        self, value: Any, *, allow: Collection[type] = ()
    ) -> str | bytes | bytearray | memoryview:
        """Text for ``value`` (or bytes, stored as a BLOB: stage outputs only);
        raise `NotRestorableError` if it cannot be encoded."""
        ...

    def decode(self, text: Any, *, allow: Collection[type] = ()) -> Any:
        """The value ``text`` (a `str`, or `bytes` for a binary value) was encoded from."""
        ...


@final
@attrs.frozen(repr=False)
class Undecoded:
    """A stored value that was not rebuilt: its stored text, and the class it names.

    Attributes:
        text: the value as the journal stores it (JSON for `JsonCodec`); for
            a binary value, a summary of what it holds (shape, types, first
            rows, as far as the libraries installed can tell).
        type: the class the journal names for it (``"module:Qualname"``), or
            None when the whole value was left as stored (another codec).
        codec: the name of the codec that wrote it, when not `JsonCodec`.
    """

    text: str
    type: str | None = None
    codec: str | None = attrs.field(default=None, kw_only=True)

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        named = "" if self.type is None else f"type={self.type!r}, "
        written = "" if self.codec is None else f"codec={self.codec!r}, "
        return f"Undecoded({named}{written}text={shown!r})"


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
        if not isinstance(cls, type) or not is_record_class(cls):
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
        tagger = Tagger(self._allowed, allow, pairs=pairs)
        try:
            return tagger.tag(value, 0), tagger.sizes
        except RecursionError:
            raise too_deep() from None

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
            text = scalar(value)
            if text is not None:
                return text
            try:
                return dump(self._tag(value, allow, pairs=False)[0])
            except SurrogatePair:
                return dump(self._tag(value, allow, pairs=True)[0])
        except ValueError as exc:  # an int too long for JSON, for one
            msg = f"the value cannot be written to the journal as JSON ({exc})"
            raise NotRestorableError(msg) from None

    def encode_utf8(self, value: Any, *, allow: Collection[type] = ()) -> bytearray:
        """`encode`'s text as UTF-8, built in pieces (for large values, in a thread).

        No piece takes the interpreter for long, so the event loop keeps
        running while another thread encodes a large value.
        """
        try:
            for pairs in (False, True):
                tagged, sizes = self._tag(value, allow, pairs=pairs)
                try:
                    return joined([utf8(piece) for piece in pieces(tagged, sizes)])
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
