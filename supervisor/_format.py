"""The journal's file format: its tables, its version, and telling a journal from anything else.

`probe` looks at a file on a read-only connection of its own and changes
nothing: the file is missing, empty (no tables: a new journal may be made
in it), or a journal of a known format whose tables and columns are all
there. Anything else is a `JournalError`, and the file is left as it was.
`set_up` makes a new journal's tables, or adds the ``leases`` table to a
journal of this format that lacks it: the one repair ever made, because it
only adds.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import attrs

from dagvisor.actors import JournalError

from ._lease import LEASE_COLUMNS, LEASES_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "FORMAT_VERSION",
    "Found",
    "look",
    "probe",
    "read_only_uri",
    "set_up",
    "stored_size",
    "writable_format",
]

T = TypeVar("T")

FORMAT_VERSION: Final = 2

_SCHEMA: Final = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    ended REAL,
    pipeline TEXT NOT NULL
);
CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""
    + LEASES_SCHEMA
    + ";"
)
# The tables and columns a whole journal has (the writer relies on them).
_TABLES: Final = {
    "meta": frozenset({"key", "value"}),
    "runs": frozenset({"run_id", "name", "created", "status", "ended", "pipeline"}),
    "events": frozenset({"run_id", "seq", "kind", "payload"}),
}


def stored_size(text: str) -> int:
    """How many bytes an encoded output takes in the journal's record."""
    return len(json.dumps(text))  # inside the event's JSON payload, ASCII-escaped


@attrs.frozen
class Found:
    """What a read-only look at a file found (nothing about it was changed)."""

    kind: Literal["missing", "empty", "journal"]
    version: int | None = None
    missing_leases: bool = False


def look(path: Path, question: Callable[[], T]) -> T:
    """Ask the file system about ``path``; a path it refuses is a `JournalError`."""
    if "\x00" in str(path):
        msg = f"{path!r} holds a NUL character, which no file name can; check the path"
        raise JournalError(msg)
    try:
        return question()
    except (OSError, ValueError) as exc:  # no permission, say
        msg = f"{path} cannot be used as a journal ({exc}); check the path"
        raise JournalError(msg) from exc


def read_only_uri(path: Path) -> str:
    """``path`` as an SQLite URI opened read-only (any character of the path escaped)."""
    return look(path, lambda: path.absolute().as_uri()) + "?mode=ro"


def _tables(path: Path) -> tuple[dict[str, frozenset[str]], object]:
    """The file's tables with their columns, and its format version as written."""
    try:
        db = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            tables = {
                str(row[0]): frozenset(
                    str(column[1])
                    for column in db.execute(
                        "SELECT * FROM pragma_table_info(?)", (row[0],)
                    )
                )
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            version = None
            if {"key", "value"} <= tables.get("meta", frozenset()):
                row = db.execute(
                    "SELECT value FROM meta WHERE key = 'format_version'"
                ).fetchone()
                version = None if row is None else row[0]
        finally:
            db.close()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        msg = (
            f"{path} is damaged or not a dagvisor journal ({exc}); "
            "give the path of a journal, or of a new file"
        )
        raise JournalError(msg) from exc
    return tables, version


def probe(path: Path) -> Found:
    """Look at ``path`` read-only: missing, empty, or a whole journal of which format.

    Raises:
        JournalError: a directory, not a journal, a newer format, or a
            journal with a table or a column missing.
    """
    if look(path, path.is_dir):
        msg = f"{path} is a directory; give the path of a journal file"
        raise JournalError(msg)
    if not look(path, path.exists):
        return Found("missing")
    tables, written = _tables(path)
    if not tables:
        return Found("empty")
    try:
        version = int(str(written))
    except ValueError:
        version = None
    if version is None or str(version) != str(written):
        msg = f"{path} is an SQLite file but not a dagvisor journal; give another path"
        raise JournalError(msg)
    if version > FORMAT_VERSION:
        msg = (
            f"{path} was written by a newer dagvisor (journal format {version}, "
            f"this one reads up to {FORMAT_VERSION}); upgrade dagvisor"
        )
        raise JournalError(msg)
    broken = [
        name
        for name, columns in _TABLES.items()
        if not columns <= tables.get(name, frozenset())
    ]
    if "leases" in tables and not tables["leases"] >= LEASE_COLUMNS:
        broken.append("leases")
    if broken:
        msg = (
            f"{path} is a dagvisor journal that is not whole: "
            f"table {', '.join(repr(name) for name in broken)} is missing or "
            "lacks columns, so it was damaged or edited; it was left as it is: "
            "restore it from a copy, or give another path"
        )
        raise JournalError(msg)
    return Found("journal", version, missing_leases="leases" not in tables)


def writable_format(path: Path, found: Found) -> None:
    """Refuse to write to a journal of an older format (it is read as it is)."""
    if found.kind == "journal" and found.version != FORMAT_VERSION:
        msg = (
            f"{path} was written by an older dagvisor (journal format "
            f"{found.version}; this one writes format {FORMAT_VERSION}): its "
            "runs can still be read, but write new runs to another file"
        )
        raise JournalError(msg)


def set_up(db: sqlite3.Connection) -> None:
    """Create the tables of a new journal, or the lease table an older writer left out.

    Call it inside a write transaction: it then sees what a process that
    raced it to the same new file did, and does the rest exactly once.
    """
    tables = {
        row[0]
        for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not tables:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('format_version', ?)",
            (str(FORMAT_VERSION),),
        )
    elif "leases" not in tables:
        db.execute(LEASES_SCHEMA)
