"""The journal's file format: its tables, its version, and telling a journal from anything else.

`probe` looks at a file on a read-only connection of its own and changes
nothing: the file is missing, empty (no tables: a new journal may be made
in it), or a journal of a known format whose tables and columns are all
there (`_journal_read` says which those are). Anything else is a
`JournalError`, and the file is left as it was.

`set_up`, inside a write transaction, makes a new journal's tables, or adds
to an older journal only what its format lacks: the ``output`` column of
format 2 (outputs in their own column, where format 1 kept them inside the
event's JSON), the ``data`` column of format 3 (outputs a binary codec
wrote, as BLOBs: ``.npy``, Arrow IPC), the ``leases`` table, and the
tables of format 4's index by stage (`_stage_index`: derived data, made
again, empty, when either is missing or altered; the runs written before
have no index and are read by the replay). Nothing else is ever repaired: a
journal that lost a table or a column is refused.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import attrs

from dagvisor.actors import JournalError

from ._journal_read import READ_ERRORS, check_columns, describe, read_format, uri
from ._lease import LEASE_COLUMNS, LEASES_SCHEMA
from ._stage_index import INDEX_SCHEMA, add_index, missing_index

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "FORMAT_VERSION",
    "Found",
    "look",
    "probe",
    "set_up",
    "stored_size",
]

T = TypeVar("T")

FORMAT_VERSION: Final = 4

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
    output TEXT,
    data BLOB,
    PRIMARY KEY (run_id, seq)
);
"""
    + LEASES_SCHEMA
    + ";"
)


def stored_size(value: str | bytes | bytearray | memoryview) -> int:
    """How many bytes an encoded value takes in the journal (UTF-8 text)."""
    if not isinstance(value, str):
        return len(value)  # UTF-8 text already, or a binary codec's bytes
    if value.isascii():
        return len(value)
    return len(value.encode("utf-8", "surrogatepass"))


@attrs.frozen
class Found:
    """What a read-only look at a file found (nothing about it was changed).

    Attributes:
        kind: missing, empty (no tables), or a journal.
        version: a journal's format.
        incomplete: a journal of an older format, or one without the
            ``leases`` table or the index by stage: `set_up` adds what it lacks.
    """

    kind: Literal["missing", "empty", "journal"]
    version: int | None = None
    incomplete: bool = False


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


def probe(path: Path) -> Found:
    """Look at ``path`` read-only: missing, empty, or a whole journal of which format.

    Raises:
        JournalError: a directory, not a journal, a newer format, or a
            journal with a table or a column missing.
    """
    if look(path, path.is_dir):
        msg = f"{path} is a directory; give the journal's file (for example {path / 'runs.db'})"
        raise JournalError(msg)
    if not look(path, path.exists):
        return Found("missing")
    try:
        db = sqlite3.connect(uri(path, "mode=ro"), uri=True)
        try:
            version, tables = read_format(db, path)
            leases = None
            unindexed = bool(missing_index(db))
            if "leases" in tables:
                leases = {row[1] for row in db.execute("PRAGMA table_info(leases)")}
        finally:
            db.close()
    except READ_ERRORS as exc:
        raise describe(exc, path) from exc
    if version is None:
        return Found("empty")
    if version > FORMAT_VERSION:
        msg = (
            f"{path} was written by a newer dagvisor (journal format {version}, "
            f"this one reads up to {FORMAT_VERSION}); upgrade dagvisor"
        )
        raise JournalError(msg)
    check_columns(tables, version, path)
    if leases is not None and not leases >= LEASE_COLUMNS:
        msg = f"{path} is damaged or was edited: its table leases lacks columns"
        raise JournalError(msg)
    return Found(
        "journal",
        version,
        incomplete=version < FORMAT_VERSION or leases is None or unindexed,
    )


def set_up(db: sqlite3.Connection) -> None:
    """Create a new journal's tables, or add what an older one lacks (see above).

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
        for statement in INDEX_SCHEMA.values():
            db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('format_version', ?)",
            (str(FORMAT_VERSION),),
        )
        return
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if "output" not in columns:  # format 1: outputs inside the events' JSON
        db.execute("ALTER TABLE events ADD COLUMN output TEXT")
    if "data" not in columns:  # formats 1 and 2: text outputs only
        db.execute("ALTER TABLE events ADD COLUMN data BLOB")
    if "leases" not in tables:
        db.execute(LEASES_SCHEMA)
    add_index(db)  # format 3 and older: its runs have no index (the replay reads them)
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'format_version'",
        (str(FORMAT_VERSION),),
    )
