"""How values are written for people: times, short previews of any value,
and text that always encodes.

Shared by the presentation modules (exports, report, lineage); depends on
nothing else of dagvisor, so each of them can use it without a cycle.
"""

from __future__ import annotations

import datetime
import html
import re
import reprlib
from itertools import islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["html_text", "line_text", "preview", "shortened", "utf8_text", "when_text"]


def utf8_text(text: str) -> str:
    """``text`` made encodable as UTF-8: a lone surrogate becomes its escape.

    A lone surrogate is what ``os.listdir`` returns for a file name that is
    not UTF-8, and what a stage may put in a name, a reason or an error.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# Control characters, line breaks included, as the escape Python writes.
_BREAKS = {code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160))}
_BREAKS.update({9: "\\t", 10: "\\n", 13: "\\r"})


def line_text(text: str) -> str:
    """``text`` on one line, as `utf8_text`, its control characters as escapes.

    For a name or a reason shown inside a line of text: it cannot start a
    line of its own that looks like another record.
    """
    return utf8_text(text).translate(_BREAKS)


def when_text(wall: float) -> str:
    """A wall-clock time as ISO 8601 in UTC, to the millisecond.

    A value that is no time (a journal edited by hand) is shown as it is.
    """
    try:
        moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(wall)
    return moment.isoformat(timespec="milliseconds")


def html_text(text: object) -> str:
    """Any value's text as HTML text or attribute value, encodable as UTF-8."""
    return html.escape(utf8_text(str(text)), quote=True)


def shortened(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


_CONTAINERS: tuple[type, ...] = (dict, list, tuple, set, frozenset)


class _Shown(reprlib.Repr):
    """`reprlib.Repr` that cuts subclasses of the built-in containers too.

    `reprlib` picks a method by the exact type's name, so a subclass (a
    stage's frozen output is a ``FrozenList``) would get its full ``repr``
    built and then cut: a million items built to show eight.
    """

    # reprlib sorts a dict's keys and a set's items before it cuts them: a
    # sort of all of them to show eight. These take the first ones, in order.
    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [
            f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}"
            for key, value in islice(x.items(), self.maxdict)
        ]
        if len(x) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"

    def _items(self, x: Collection[Any], level: int, left: str, right: str) -> str:
        if level <= 0:
            return f"{left}...{right}"
        pieces = [self.repr1(item, level - 1) for item in islice(x, self.maxset)]
        if len(x) > self.maxset:
            pieces.append("...")
        return left + ", ".join(pieces) + right

    def repr_set(self, x: set[Any], level: int) -> str:
        return self._items(x, level, "{", "}") if x else "set()"

    def repr_frozenset(self, x: frozenset[Any], level: int) -> str:
        return self._items(x, level, "frozenset({", "})") if x else "frozenset()"

    def repr1(self, x: object, level: int) -> str:
        kind = type(x)
        if kind not in _CONTAINERS:
            for base in _CONTAINERS:
                if isinstance(x, base):
                    shown: str = getattr(self, f"repr_{base.__name__}")(x, level)
                    return shown
        return super().repr1(x, level)


def _bounded_repr() -> reprlib.Repr:
    shown = _Shown()
    shown.maxlevel = 3
    for limit in (
        "maxtuple",
        "maxlist",
        "maxarray",
        "maxdict",
        "maxset",
        "maxfrozenset",
        "maxdeque",
    ):
        setattr(shown, limit, 8)
    shown.maxstring = 200
    shown.maxlong = 60
    shown.maxother = 200
    return shown


_REPR = _bounded_repr()
_LINE_BREAK = re.compile(r"\s*\n\s*")
_BYTES = (bytes, bytearray, memoryview)


def preview(value: object, width: int = 120) -> str:
    """A one-line text of ``value`` of at most ``width`` characters, whatever it is.

    Containers are cut after a few items and levels (`reprlib`), so a huge
    or deeply nested value costs what is shown, not what it holds (except
    an object's own ``__repr__``, which is called once). A ``__repr__``
    that raises or returns no text, an integer too long to print, a lone
    surrogate or a control character cannot stop the caller: they are
    shown as a placeholder or as escapes.
    """
    try:
        if isinstance(value, _BYTES):
            head = bytes(value[: width + 1])
            text = f"{type(value).__name__} of {len(value):,}: {head!r}"
        else:
            text = _REPR.repr(value)
        if not isinstance(text, str):
            text = f"<{type(value).__name__}: its repr is no text>"
    except Exception as error:  # any __repr__ of any value: show that it failed
        text = f"<{type(value).__name__}: repr failed: {type(error).__name__}>"
    return shortened(line_text(_LINE_BREAK.sub(" ", text)), width)
