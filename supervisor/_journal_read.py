"""Reading a journal file that may be damaged, edited by hand, or in a read-only place.

Everything a journal file holds is untrusted input: the functions here
either return what the writer writes, in the shapes it writes, or raise
`JournalError` saying what was wrong (in one line, with any text taken
from the file shortened and escaped).

Opening read-only (`open_readonly`) tries two ways, in order:

* ``mode=ro``: SQLite opens the file read-only and never writes to it. A
  journal is in WAL mode, so a reader also needs the ``-shm`` index beside
  the file (SQLite creates it when it is missing and the directory is
  writable): through it the reader sees what a writer committed since the
  last checkpoint, and takes the shared locks that make a run being written
  meanwhile read consistently.
* ``immutable=1``, only when the first way cannot open the ``-shm`` index
  (a read-only directory or medium): SQLite then assumes nobody changes the
  file while it is open: no locks, no ``-shm``, and a ``-wal`` file beside
  it is ignored. So it is used only when there is no ``-wal`` file (one
  would hold commits this way cannot see: refused, saying so). Without a
  ``-wal`` file no writer is at work either: a writer in WAL mode keeps one
  while it has the file open.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from dagvisor.actors import JournalError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "COLUMNS",
    "READ_ERRORS",
    "check_columns",
    "describe",
    "open_readonly",
    "read_format",
    "shown",
    "uri",
]

COLUMNS: Final = {
    "meta": ("key", "value"),
    "runs": ("run_id", "name", "created", "status", "ended", "pipeline"),
    "events": ("run_id", "seq", "kind", "payload"),
}
"""The columns every journal has (format 2 adds ``events.output``, 3 ``events.data``)."""

_LATER_COLUMNS: Final = ("output", "data")
"""The columns of ``events`` formats 2 and 3 added, in order."""

READ_ERRORS: Final = (sqlite3.Error, UnicodeDecodeError)
"""What reading a damaged file can raise: SQLite's errors, and the driver's when
a text column holds bytes that are not UTF-8 (the schema's among them)."""


def shown(value: Any, limit: int = 60) -> str:
    """A value from the file, for a message: its repr, escaped and shortened."""
    if isinstance(value, str | bytes) and len(value) > 4 * limit:
        value = value[: 4 * limit]
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException, path: Path) -> JournalError:
    """The `JournalError` for an error SQLite (or its driver) raised reading ``path``."""
    name = str(getattr(exc, "sqlite_errorname", None) or "")
    detail = shown(str(exc), 160)
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "decode" in detail:
        what = "is damaged or not a dagvisor journal"
    elif name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY")):
        what = (
            "cannot be opened for reading (check its permissions and its directory's)"
        )
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        what = "is locked by another process; try again"
    elif name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_NOMEM")):
        what = "cannot be read (an I/O error)"
    else:
        what = "cannot be read; it is damaged or not a dagvisor journal"
    return JournalError(f"{path} {what} ({detail})")


def uri(path: Path, option: str) -> str:
    """The SQLite URI of ``path`` with ``option`` (``mode=ro``, ``immutable=1``)."""
    # Quoted: a path may hold '?', '#' or '%', which a URI would take apart;
    # as the file system's bytes, since a path may hold a lone surrogate too
    # (a file name that is not UTF-8, as os.listdir() gives it).
    return f"file:{urllib.parse.quote(os.fsencode(path.absolute()))}?{option}"


def _connect(path: Path, option: str) -> sqlite3.Connection:
    return sqlite3.connect(
        uri(path, option), uri=True, check_same_thread=False, isolation_level=None
    )


def _tables(db: sqlite3.Connection) -> dict[str, set[str]]:
    """Each table's columns (reads the schema: fails on a damaged file)."""
    tables = {}
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        if table in COLUMNS:
            tables[table] = {
                row[1] for row in db.execute(f"PRAGMA table_info({table})")
            }
        else:
            tables[str(table)] = set()
    return tables


def read_format(
    db: sqlite3.Connection, path: Path
) -> tuple[int | None, dict[str, set[str]]]:
    """The file's journal format (None for an empty file) and its tables' columns.

    Raises:
        sqlite3.Error, UnicodeDecodeError: the file cannot be read.
        JournalError: an SQLite file that is not a journal, or a damaged one.
    """
    tables = _tables(db)
    if not tables:
        return None, tables
    if "meta" not in tables:
        msg = f"{path} is an SQLite file but not a dagvisor journal; give another path"
        raise JournalError(msg)
    row = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    value = None if row is None else row[0]
    if type(value) is int:
        version = value
    elif type(value) is str and value.isascii() and value.isdigit() and len(value) < 9:
        version = int(value)
    else:
        msg = (
            f"{path} is damaged or not a dagvisor journal: its format_version is "
            f"{shown(value)}, not a number"
        )
        raise JournalError(msg)
    if version < 1:
        msg = f"{path} is damaged: its format_version is {version}"
        raise JournalError(msg)
    return version, tables


def check_columns(tables: dict[str, set[str]], version: int, path: Path) -> None:
    """Refuse a journal that lacks a table or column its format has."""
    for table, columns in COLUMNS.items():
        wanted = columns
        if table == "events":
            wanted = (*columns, *_LATER_COLUMNS[: max(0, version - 1)])
        missing = [c for c in wanted if c not in tables.get(table, set())]
        if table not in tables or missing:
            lack = (
                f"table {table}"
                if table not in tables
                else f"column {table}.{missing[0]}"
            )
            msg = f"{path} is damaged or was edited: it has no {lack}"
            raise JournalError(msg)


def open_readonly(path: Path) -> tuple[sqlite3.Connection, int, dict[str, set[str]]]:
    """A read-only connection to the journal at ``path``, its format and its tables.

    Raises:
        JournalError: no such file, a directory, not a journal, a newer or
            damaged one, or one that cannot be read from where it is.
    """
    if path.is_dir():
        msg = f"{path} is a directory; give the journal's file (for example {path / 'runs.db'})"
        raise JournalError(msg)
    if not path.exists():
        msg = f"there is no journal at {path}; check the path"
        raise JournalError(msg)
    if not path.is_file():  # a FIFO or a device: SQLite would block or misread
        msg = f"{path} is not a regular file; give the journal's file"
        raise JournalError(msg)
    db: sqlite3.Connection | None = None
    try:
        try:
            db = _connect(path, "mode=ro")
            version, tables = read_format(db, path)
        except sqlite3.Error as exc:  # (a UnicodeDecodeError is damage: below)
            name = str(getattr(exc, "sqlite_errorname", None) or "")
            if not name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")):
                raise
            wal = path.with_name(path.name + "-wal")
            if wal.exists():
                msg = (
                    f"{path} cannot be read where it is: SQLite cannot make its -shm "
                    f"index there, and {wal.name} holds commits that can only be read "
                    "through one; copy the journal with its -wal file to a writable "
                    "directory"
                )
                raise JournalError(msg) from exc
            if db is not None:
                db.close()
            db = _connect(path, "immutable=1")
            version, tables = read_format(db, path)
    except READ_ERRORS as exc:
        if db is not None:
            db.close()
        raise describe(exc, path) from exc
    except BaseException:
        if db is not None:
            db.close()
        raise
    if version is None:
        db.close()
        msg = f"{path} is not a dagvisor journal (it is empty); check the path"
        raise JournalError(msg)
    return db, version, tables
