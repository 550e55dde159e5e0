"""The JSON text of journal values: writing it at the value's own size, reading it safely.

`JsonCodec` turns a value into plain JSON plus tagged objects (``{"__dagvisor__":
tag, ...}``) for what JSON cannot say; this module owns the text of that form:

* **Writing.** Non-ASCII characters are written as they are (UTF-8 in the
  journal: a Latin-1 string takes about twice its length in characters, not
  six times), lone surrogates as ``\\uXXXX`` escapes, so every text is valid
  UTF-8 and reads back exactly. `pieces` writes a large value as a list of
  texts of about `PIECE` characters each, so that no single call holds the
  interpreter for long: a worker thread encoding a 50 MB output lets the
  event loop run between pieces.
* **Reading.** `load_json` parses text with `json.loads` (a text nested deeper
  than the interpreter allows, or not JSON at all, is `Malformed`), and
  `untag` turns the tagged objects back into tuples, sets, bytes and dicts
  without recursion. A tagged class value is never looked up: it becomes
  whatever the caller's ``rebuild`` makes of it (`Undecoded` when reading;
  an allowed class, or `NotRestorableError`, when resuming).

The standard library's `json` does the work. msgspec (faster for small
values, about 1 µs a stage of a journaled stage's 80) encodes and decodes
no lone surrogate, and decodes classes only into types given up front,
calling ``__post_init__``; cattrs rebuilds a class by calling it, as the
resume path does for the classes it allows. Neither would remove the
tagged form, which the values' types (not a schema) decide.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_DEPTH",
    "PIECE",
    "TAG",
    "Malformed",
    "SurrogatePair",
    "b64_text",
    "dump_json",
    "load_json",
    "pieces",
    "untag",
]

TAG: Final = "__dagvisor__"
MAX_DEPTH: Final = 400
"""JSON nesting levels an encoded value may have: `json.loads` reads that deep
with room to spare under Python's default recursion limit (1,000)."""
PIECE: Final = 1 << 20
"""Characters (about) in one piece of a large value's text."""

_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=True, check_circular=False, separators=(",", ":")
)
_PAIR: Final = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_ERRORS: Final = "dagvisor.surrogates"


class Malformed(ValueError):
    """Text that is not a value a codec wrote: not JSON, too deep, or a bad tag."""


class SurrogatePair(Exception):
    """A high surrogate followed by a low one: JSON would read the two back as one
    character, so the value is written again with such strings tagged."""


def _escape_surrogates(exc: UnicodeError) -> tuple[str, int]:
    """Write lone surrogates as JSON escapes (they cannot be UTF-8)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    chars = exc.object[exc.start : exc.end]
    if _PAIR.search(chars):
        raise SurrogatePair
    return "".join(f"\\u{ord(char):04x}" for char in chars), exc.end


codecs.register_error(_ERRORS, _escape_surrogates)


def has_pair(text: str) -> bool:
    """Whether ``text`` holds a high surrogate followed by a low one."""
    return not text.isascii() and _PAIR.search(text) is not None


def split_pairs(text: str) -> list[str]:
    """``text`` cut between each high surrogate and the low one after it."""
    parts, start = [], 0
    for match in _PAIR.finditer(text):
        parts.append(text[start : match.start() + 1])
        start = match.start() + 1
    parts.append(text[start:])
    return parts


def joined(parts: list[bytes]) -> bytearray:
    """``parts`` end to end, appended one at a time: no single call copies (or
    zero-fills) the whole text, so a thread joining a large one lets the event
    loop run meanwhile (a large buffer grows by remapping, not copying)."""
    out = bytearray()
    for part in parts:
        out += part
    return out


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates escaped (raises `SurrogatePair`)."""
    return text.encode("utf-8", _ERRORS)


def dump(tagged: Any) -> str:
    """The JSON text of an already tagged value, valid UTF-8 (raises `SurrogatePair`)."""
    text = _ENCODER.encode(tagged)
    if not text.isascii():
        text = text.encode("utf-8", _ERRORS).decode("utf-8")
    return text


def dump_json(record: Any) -> str:
    """Compact JSON for a journal record: non-ASCII as is, lone surrogates escaped.

    A surrogate pair in a record's text (never produced by decoding bytes, only
    by building strings by hand) is written as two escapes, which JSON reads
    back as one character; values, which must come back exactly, go through
    `JsonCodec`, which tags such strings.
    """
    text = _ENCODER.encode(record)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def b64_text(data: bytes) -> str:
    """Base64 of ``data``, computed in pieces when it is large."""
    if len(data) <= PIECE:
        return base64.b64encode(data).decode("ascii")
    step = PIECE - PIECE % 3  # whole 3-byte groups: the pieces join exactly
    return "".join(
        base64.b64encode(data[start : start + step]).decode("ascii")
        for start in range(0, len(data), step)
    )


# -- writing a large value in pieces ------------------------------------------------


class _Raw(str):
    """Text already in JSON form, to be written as it is."""

    __slots__ = ()


_OPEN_LIST, _CLOSE_LIST = _Raw("["), _Raw("]")
_OPEN_DICT, _CLOSE_DICT = _Raw("{"), _Raw("}")
_COMMA = _Raw(",")


def _string_pieces(text: str) -> list[str]:
    out = ['"']
    start = 0
    while start < len(text):
        end = min(start + PIECE, len(text))
        if end < len(text) and "\ud800" <= text[end - 1] <= "\udbff":
            end += 1  # never cut between a high surrogate and what follows it
        out.append(_ENCODER.encode(text[start:end])[1:-1])
        start = end
    out.append('"')
    return out


def _weight(value: Any, sizes: dict[int, int]) -> int:
    if type(value) is str:
        return len(value)
    return sizes.get(id(value), 16)


def _split(container: Any, sizes: dict[int, int]) -> list[Any]:
    """A large list or dict as texts (runs of small members) and its large members."""
    is_list = type(container) is list
    parts: list[Any] = [_OPEN_LIST if is_list else _OPEN_DICT]
    batch: list[Any] = []
    weight = 0

    def flush() -> None:
        nonlocal weight
        if batch:
            text = _ENCODER.encode(batch if is_list else dict(batch))
            parts.extend((_Raw(text[1:-1]), _COMMA))
            batch.clear()
            weight = 0

    members = container if is_list else container.items()
    for member in members:
        value = member if is_list else member[1]
        size = _weight(value, sizes)
        if size > PIECE:
            flush()
            if not is_list:
                parts.append(_Raw(_ENCODER.encode(member[0]) + ":"))
            parts.extend((value, _COMMA))
        else:
            batch.append(member)
            weight += size
            if weight > PIECE:
                flush()
    flush()
    if parts[-1] is _COMMA:
        parts.pop()
    parts.append(_CLOSE_LIST if is_list else _CLOSE_DICT)
    return parts


def pieces(tagged: Any, sizes: dict[int, int]) -> list[str]:
    """The JSON text of a tagged value as pieces of about `PIECE` characters.

    Args:
        tagged: the value in tagged form.
        sizes: estimated text size of its large lists and dicts, by ``id``
            (those not listed are small enough to be written in one piece).
    """
    out: list[str] = []
    todo: list[Any] = [tagged]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is _Raw:
            out.append(item)
        elif kind is str and len(item) > PIECE:
            out.extend(_string_pieces(item))
        elif (kind is list or kind is dict) and sizes.get(id(item), 0) > PIECE:
            todo.extend(reversed(_split(item, sizes)))
        else:
            out.append(_ENCODER.encode(item))
    return out


# -- reading ------------------------------------------------------------------------


def load_json(text: str) -> Any:
    """The JSON value of ``text``.

    Raises:
        Malformed: not JSON, or nested deeper than the interpreter can parse.
    """
    if type(text) is not str:
        msg = f"a stored value must be text, not {type(text).__name__}"
        raise Malformed(msg)
    try:
        return json.loads(text)
    except RecursionError:
        msg = "the stored value is nested too deeply to be read"
        raise Malformed(msg) from None
    except ValueError as exc:  # JSONDecodeError, or an int too long to convert
        msg = f"the stored value is not valid JSON ({exc})"
        raise Malformed(msg) from None


_SIMPLE_TAGS: Final = frozenset({"tuple", "set", "frozenset", "dict", "str"})
_HASHED: Final[dict[str, Callable[[list[Any], Callable[[Any], Any]], Any]]] = {
    "set": lambda items, get: {get(m) for m in items},
    "frozenset": lambda items, get: frozenset([get(m) for m in items]),
    "dict": lambda items, get: {get(k): get(v) for k, v in items},
}


def _children(node: dict[str, Any], tag: Any, rebuild: bool) -> list[Any]:
    """The members of a tagged object that must be converted before it."""
    if type(tag) is not str:
        msg = "a tagged object's tag is not text"
        raise Malformed(msg)
    if tag in _SIMPLE_TAGS:
        items = node.get("items" if tag != "str" else "parts")
        if type(items) is not list:
            msg = f"a tagged {tag} has no list of items"
            raise Malformed(msg)
        if tag == "dict":
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    msg = "a tagged dict holds an item that is not a [key, value] pair"
                    raise Malformed(msg)
            return [member for pair in items for member in pair]
        return items
    if tag in ("attrs", "dataclass"):
        fields = node.get("fields")
        if type(node.get("type")) is not str or type(fields) is not dict:
            msg = f"a tagged {tag} value lacks its type or fields"
            raise Malformed(msg)
        return list(fields.values()) if rebuild else []
    if tag == "bytes":
        return []
    msg = f"unknown tag {str(tag)[:40]!r}"
    raise Malformed(msg)


def untag(
    parsed: Any,
    rebuild: Callable[[dict[str, Any], Callable[[Any], Any]], Any],
    *,
    fields_first: bool,
) -> Any:
    """The value a parsed JSON text stands for, built bottom-up without recursion.

    Args:
        parsed: what `load_json` returned.
        rebuild: makes a tagged class value from its object and a function
            that gives the converted form of any of its members.
        fields_first: whether a class value's fields are converted before
            ``rebuild`` is called (resume), or left alone (reading).

    Raises:
        Malformed: a tag that is unknown or not well formed, or a key or set
            member that cannot be hashed.
    """
    if type(parsed) is not list and type(parsed) is not dict:
        return parsed
    order: list[Any] = []  # containers, parents before children
    stack: list[Any] = [parsed]
    while stack:
        node = stack.pop()
        order.append(node)
        if type(node) is list:
            members: Any = node
        else:
            tag = node.get(TAG)
            members = (
                node.values() if tag is None else _children(node, tag, fields_first)
            )
        stack.extend(m for m in members if type(m) is list or type(m) is dict)
    done: dict[int, Any] = {}

    def get(member: Any) -> Any:
        return done.get(id(member), member) if type(member) in (list, dict) else member

    for node in reversed(order):
        if type(node) is list:
            done[id(node)] = [get(m) for m in node]
            continue
        tag = node.get(TAG)
        if tag is None:
            done[id(node)] = {k: get(v) for k, v in node.items()}
        elif tag in _HASHED:
            try:
                done[id(node)] = _HASHED[tag](node["items"], get)
            except TypeError as exc:  # an unhashable key or member (a list, a dict)
                msg = f"a stored dict key or set member cannot be hashed ({exc})"
                raise Malformed(msg) from None
        elif tag == "tuple":
            done[id(node)] = tuple([get(m) for m in node["items"]])
        elif tag == "str":
            if not all(type(part) is str for part in node["parts"]):
                msg = "a tagged str holds a part that is not text"
                raise Malformed(msg)
            done[id(node)] = "".join(node["parts"])
        elif tag == "bytes":
            data = node.get("data")
            if type(data) is not str:
                msg = "tagged bytes hold no base64 text"
                raise Malformed(msg)
            try:
                done[id(node)] = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                msg = f"tagged bytes hold text that is not base64 ({exc})"
                raise Malformed(msg) from None
        else:
            done[id(node)] = rebuild(node, get)
    return done[id(parsed)]
