"""How values are written for people: times, and text that always encodes.

Shared by the presentation modules (exports, report, lineage); depends on
nothing else of dagvisor, so each of them can use it without a cycle.
"""

from __future__ import annotations

import datetime

__all__ = ["utf8_text", "when_text"]


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


def when_text(wall: float) -> str:
    """A wall-clock time as ISO 8601 in UTC, to the millisecond."""
    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds")
