"""The rows of a journal read back: each checked for the types the writer writes.

`RowReader` answers the reading methods of `Journal` on an open connection:
the runs, one run's events, one run whole (`JournaledRun`), each row
checked (a value of the wrong type, a payload that is not a JSON object)
and every SQLite or decoding error turned into a `JournalError` saying
what was wrong, in one line.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, final

import attrs

from dagvisor.actors import JournalError, UnknownRunError
from dagvisor.actors._jsonform import Malformed, load_json

from ._journal_read import READ_ERRORS, describe, shown

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["JournaledRun", "RowReader", "check_event", "check_run", "run_id_text"]


@final
@attrs.frozen
class JournaledRun:
    """What a journal holds about one run: its record and its events in order."""

    run_id: str
    name: str
    created: float
    status: str
    ended: float | None
    pipeline: dict[str, Any]
    events: list[tuple[int, str, dict[str, Any]]]


def _time(value: Any) -> bool:
    """A time the writer could have written: a finite number (seconds since the
    epoch; how far from now is the printer's business, not the reader's)."""
    return type(value) in (int, float) and math.isfinite(value)


def run_id_text(value: object, what: str = "run id") -> str:
    """``value`` as the text of a run id, checked before the file is read.

    A run id is text: anything else is a mistake in the caller's code, not
    damage in the file. A ``str`` subclass is read as its plain text (its own
    ``__eq__`` is never called).

    Raises:
        TypeError: ``value`` is not a ``str``.
    """
    if not isinstance(value, str):
        msg = (
            f"a {what} is text (str), not {type(value).__name__}: pass the run's "
            "id, as `dagvisor runs` lists it or `run.id` and `result.run_id` give it"
        )
        raise TypeError(msg)
    return str.__str__(value)


def _storable(run_id: str) -> bool:
    """Whether a run id can be in a journal at all (a lone surrogate cannot:
    it is not UTF-8, and SQLite would refuse to bind it)."""
    if run_id.isascii():
        return True
    try:
        run_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_run(row: tuple[Any, ...], path: Path) -> None:
    """Refuse a ``runs`` row whose values are not of the types the writer writes."""
    run_id, name, created, status, ended = row[:5]
    if not (
        type(run_id) is str
        and type(name) is str
        and _time(created)
        and type(status) is str
        and (ended is None or _time(ended))
    ):
        msg = (
            f"{path} is damaged or was edited: the record of run {shown(run_id)} holds "
            f"values of the wrong kind (name {shown(name)}, created {shown(created)}, "
            f"status {shown(status)}, ended {shown(ended)})"
        )
        raise JournalError(msg)


def check_event(
    row: tuple[Any, ...], run_id: str, path: Path
) -> tuple[int, str, dict[str, Any]]:
    """An ``events`` row as ``(seq, kind, payload)``, the output back in the payload
    (text from the ``output`` column, or bytes from the ``data`` column).

    Raises:
        JournalError: a value of the wrong type, or a payload that is not a
            JSON object.
    """
    seq, kind, payload, output, data = row
    problem = None
    if type(seq) is not int or type(kind) is not str or type(payload) is not str:
        problem = "holds values of the wrong kind"
    elif output is not None and type(output) is not str:
        problem = "holds an output that is not text"
    elif data is not None and (type(data) is not bytes or output is not None):
        problem = "holds binary data that is not bytes, or beside a text output"
    else:
        try:
            decoded = load_json(payload)
        except Malformed as exc:
            problem = f"is not valid JSON ({shown(str(exc), 120)})"
        else:
            if type(decoded) is not dict:
                problem = "is not a JSON object"
    if problem is not None:
        msg = (
            f"{path}: event {shown(seq)} of run {shown(run_id)} {problem}; the file "
            "was damaged or edited"
        )
        raise JournalError(msg)
    if output is not None:
        decoded["output"] = output
    elif data is not None:
        decoded["output"] = data
    return seq, kind, decoded


@final
class RowReader:
    """The reading queries of an open journal, their rows checked.

    Args:
        db: the connection.
        path: the file, for messages.
        version: the file's journal format (1 has no ``output`` column, 2 no
            ``data`` column).
    """

    __slots__ = ("db", "path", "version")

    def __init__(self, db: sqlite3.Connection, path: Path, version: int) -> None:
        self.db = db
        self.path = path
        self.version = version

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query; a damaged file is a `JournalError`, not a crash."""
        try:
            return self.db.execute(sql, args).fetchall()
        except READ_ERRORS as exc:
            raise describe(exc, self.path) from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: queries in it see the same state of the file."""
        self.query("BEGIN")
        try:
            yield
        finally:
            self.query("COMMIT")

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, with how many events it has."""
        rows = self.query(
            "SELECT r.run_id, r.name, r.created, r.status, r.ended, "
            "(SELECT COUNT(*) FROM events e WHERE e.run_id = r.run_id) "
            "FROM runs r ORDER BY r.created"
        )
        keys = ("run_id", "name", "created", "status", "ended", "events")
        for row in rows:
            check_run(row, self.path)
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def find_run(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix``."""
        if len(prefix) >= 4 and prefix.isascii() and prefix.isalnum():
            rows = self.query(
                "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
                (prefix, prefix + "\U0010ffff"),
            )
            if len(rows) == 1 and type(rows[0][0]) is str:
                return rows[0][0]
        raise UnknownRunError(prefix, str(self.path))

    def events(self, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """A run's events as ``(seq, kind, payload)``, a success's output in its payload."""
        if not _storable(run_id):
            return []  # no run has such an id
        with self.snapshot():
            rows, hidden = self._event_rows(run_id)
        return self._checked_events(run_id, rows, hidden)

    def load(self, run_id: str) -> JournaledRun:
        """Everything the journal holds about one run."""
        if not _storable(run_id):
            raise UnknownRunError(run_id, str(self.path))
        with self.snapshot():  # the run and its events as of one moment
            rows = self.query(
                "SELECT run_id, name, created, status, ended, pipeline FROM runs "
                "WHERE run_id = ?",
                (run_id,),
            )
            if not rows:
                raise UnknownRunError(run_id, str(self.path))
            event_rows, hidden = self._event_rows(run_id)
        check_run(rows[0], self.path)
        run_id, name, created, status, ended, pipeline = rows[0]
        try:
            decoded = load_json(pipeline)
        except Malformed as exc:
            msg = (
                f"{self.path}: the record of run {shown(run_id)} is not valid JSON "
                f"({shown(str(exc), 120)}); the file was damaged or edited"
            )
            raise JournalError(msg) from None
        if type(decoded) is not dict:
            msg = (
                f"{self.path}: the record of run {shown(run_id)} is not a JSON "
                "object; the file was damaged or edited"
            )
            raise JournalError(msg)
        exact = decoded.get("name")  # the column's copy is for listing
        return JournaledRun(
            run_id=run_id,
            name=exact if type(exact) is str else name,
            created=created,
            status=status,
            ended=ended,
            pipeline=decoded,
            events=self._checked_events(run_id, event_rows, hidden),
        )

    def _event_rows(self, run_id: str) -> tuple[list[tuple[Any, ...]], int]:
        """A run's event rows (rowid first), and how many its index did not show."""
        output = "output" if self.version >= 2 else "NULL"
        data = "data" if self.version >= 3 else "NULL"
        rows = self.query(
            f"SELECT rowid, seq, kind, payload, {output}, {data} FROM events "
            "WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        # The rows are found through the table's index. A damaged index can
        # hide the last rows of a run, which would read as a run that simply
        # stopped: count, in the table itself, the run's rows after the last
        # one found (a range of the table, not a scan of it).
        last = max((row[0] for row in rows if type(row[0]) is int), default=-1)
        ((hidden,),) = self.query(
            "SELECT COUNT(*) FROM events NOT INDEXED WHERE rowid > ? AND run_id = ?",
            (last, run_id),
        )
        return rows, hidden

    def _checked_events(
        self, run_id: str, rows: list[tuple[Any, ...]], hidden: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        if hidden:
            msg = (
                f"{self.path} is damaged: its index of events hides {hidden} event(s) "
                f"of run {shown(run_id)} (PRAGMA integrity_check names the damage)"
            )
            raise JournalError(msg)
        return [check_event(row[1:], run_id, self.path) for row in rows]
