"""The journal: a durable record of runs, written off the event loop.

Durability promise (SQLite, WAL mode):

* When ``run.wait()`` (or ``rt.run``) returns, everything about the run is
  committed: the run, every change request (accepted or refused, with its
  audit record and the request itself), every stage start and end (with the
  encoded output of each success), and how the run ended. Committed data
  survives a crash of the process (SIGKILL included).
* While a run goes, records are committed in batches (group commit) by one
  writer task in a worker thread; a crash loses at most the batch in flight.
* With ``synchronous="NORMAL"`` (the default) a power loss or an OS crash
  may lose the last transactions committed before it; ``Journal(path,
  synchronous="FULL")`` makes each commit wait for the disk.

The file is created readable and writable by its owner only. A file that is
not a journal, or one written by a newer dagvisor, is refused with a typed
error and left untouched.

What is written, per run: one row in ``runs`` (its pipeline as the distinct
stage specs, by registered function name, plus one ``[name, spec, after]``
row per stage; its exact name; its encoded inputs; the codec's name) and, in
``events`` with consecutive ``seq`` numbers, ``stage_started``,
``stage_ended`` (state, wall-clock time, error and traceback; the encoded
output of a success in the ``output`` column, as the codec wrote it),
``change`` (the audit record and the request, mapped items encoded) and
``resumed``. Records are compact JSON with non-ASCII text as it is and lone
surrogates escaped, so every text is valid UTF-8 and reads back exactly. A
resume replays exactly this (see ``_replay``); a stage that had started but
whose start was still in the batch in flight at a crash is simply run
again, which is why side effects are keyed by ``ctx.idempotency_key``.

Journal formats: 2 (this one) stores outputs in their own column; a format 1
journal (outputs inside the event's JSON, so encoded twice) is read as it
is, and upgraded in place (one column added) when opened for writing.
Reading is `_journal_read`'s: every reading method gives `JournalError` (or
`UnknownRunError`) for a file that is damaged or was edited, never another
error, and never changes the file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, final

import attrs
import trio

from dagvisor.actors import JournalError, default_registry, dump_json

from ._journal_read import (
    READ_ERRORS,
    check_columns,
    describe,
    open_readonly,
    read_format,
    uri,
)
from ._journal_rows import JournaledRun, RowReader

if TYPE_CHECKING:
    from dagvisor.actors import StageRegistry

    from ._result import RunResult

__all__ = ["FORMAT_VERSION", "Journal", "JournalError", "JournalWriter", "JournaledRun"]

FORMAT_VERSION: Final = 2
_BATCH = 2048
_LARGE_OUTPUT: Final = 1 << 20  # bytes: written in pieces of this size

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    ended REAL,
    pipeline TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    output TEXT,
    PRIMARY KEY (run_id, seq)
);
"""


@final
class Journal:
    """A SQLite journal file. Its methods block: call them off the event loop.

    Args:
        path: the file; created (owner-only) if missing, unless ``readonly``.
        synchronous: SQLite's ``synchronous`` setting, ``"NORMAL"`` or ``"FULL"``.
        readonly: only read: a missing file is an error and nothing is written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        readonly: bool = False,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            msg = f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.synchronous = synchronous
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None
        self._format = FORMAT_VERSION

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def open(self) -> None:
        """Open (or create) the file and check it is a journal of a known format."""
        if self._db is not None:
            return
        if self.readonly:
            db, found, columns = open_readonly(self.path)
            try:
                self._refuse_newer(found)
                check_columns(columns, found, self.path)
            except BaseException:
                db.close()
                raise
            self._db, self._format = db, found
            return
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            # Read-only first: a file that is not a journal is left untouched.
            probe = sqlite3.connect(uri(self.path, "mode=ro"), uri=True)
            try:
                version, tables = read_format(probe, self.path)
            finally:
                probe.close()
        except READ_ERRORS as exc:
            raise describe(exc, self.path) from exc
        if version is not None:
            self._refuse_newer(version)
            check_columns(tables, version, self.path)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(_SCHEMA)
            if version == 1:
                _upgrade_from_1(db)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('format_version', ?)",
                (str(FORMAT_VERSION),),
            )
        except sqlite3.DatabaseError as exc:
            db.close()
            msg = (
                f"{self.path} cannot be written ({exc}); it is damaged or not a journal"
            )
            raise JournalError(msg) from exc
        self._db = db

    def _refuse_newer(self, version: int) -> None:
        if version > FORMAT_VERSION:
            msg = (
                f"{self.path} was written by a newer dagvisor (journal format {version}, "
                f"this one reads up to {FORMAT_VERSION}); upgrade dagvisor"
            )
            raise JournalError(msg)

    def __enter__(self) -> Journal:
        """Open the file for a ``with`` block (closed when it ends)."""
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """Commit a batch of records in one transaction (group commit)."""
        db = self._conn()
        db.execute("BEGIN")
        try:
            for record in batch:
                match record:
                    case ("run", run_id, name, created, pipeline):
                        # The name column is for listing; the exact name (it
                        # may hold a lone surrogate) is in the record's JSON.
                        db.execute(
                            "INSERT INTO runs (run_id, name, created, status, pipeline) "
                            "VALUES (?, ?, ?, 'running', ?)",
                            (
                                run_id,
                                _listed(name),
                                created,
                                dump_json({**pipeline, "name": name}),
                            ),
                        )
                    case ("event", run_id, seq, kind, payload):
                        # An output goes to its own column as the codec wrote
                        # it (text, or UTF-8 bytes stored as text), once.
                        output = payload.get("output")
                        if output is not None:
                            payload = {
                                k: v for k, v in payload.items() if k != "output"
                            }
                        _insert_event(db, run_id, seq, kind, dump_json(payload), output)
                    case ("resume", run_id):
                        db.execute(
                            "UPDATE runs SET status = 'running', ended = NULL "
                            "WHERE run_id = ?",
                            (run_id,),
                        )
                    case ("end", run_id, status, ended):
                        db.execute(
                            "UPDATE runs SET status = ?, ended = ? WHERE run_id = ?",
                            (status, ended, run_id),
                        )
                    case _:  # pragma: no cover - a bug in the writer
                        msg = f"unknown journal record {record!r}"
                        raise AssertionError(msg)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _rows(self) -> RowReader:
        return RowReader(self._conn(), self.path, self._format)

    def runs(self) -> list[dict[str, Any]]:
        """Every run in the journal, oldest first, with how many events it has.

        Raises:
            JournalError: the file is damaged or was edited into nonsense.
        """
        return self._rows().runs()

    def find_run(self, prefix: str) -> str:
        """The full id of the run whose id starts with ``prefix`` (at least 4 characters).

        Raises:
            UnknownRunError: no run, or several, match.
            JournalError: the file is damaged.
        """
        return self._rows().find_run(prefix)

    def events(self, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The events of a run as ``(seq, kind, payload)``, in order.

        A success's encoded output is in its payload as ``"output"``.

        Raises:
            JournalError: the file is damaged or was edited into nonsense.
        """
        return self._rows().events(run_id)

    def result(
        self, run_id: str, *, registry: StageRegistry | None = None
    ) -> RunResult:
        """A run read back from the journal, as a `RunResult` (nothing runs).

        Works after the run ended, crashed or was cancelled, in any process:
        stage functions need not be importable. No class is rebuilt: values
        are plain data, and a class value (or every value of a run journaled
        with another codec than `JsonCodec`) comes back as `Undecoded`.
        Stage times are wall-clock. ``result.lineage(stage)`` works as on a
        live run.

        Raises:
            UnknownRunError: the journal has no such run.
            JournalError: the file is damaged or was edited into nonsense.
        """
        from ._readback import result_from_journal

        return result_from_journal(
            self.load(run_id), registry=registry or default_registry
        )

    def load(self, run_id: str) -> JournaledRun:
        """Everything the journal holds about one run.

        Raises:
            UnknownRunError: the journal has no such run.
            JournalError: the file is damaged or was edited into nonsense.
        """
        return self._rows().load(run_id)


def _insert_event(
    db: sqlite3.Connection,
    run_id: str,
    seq: int,
    kind: str,
    payload: str,
    output: str | bytearray | None,
) -> None:
    """Insert one event; a large output is written into its row piece by piece.

    Binding a large output would copy it whole in one call, holding the
    interpreter (and so the event loop) all that time; written through
    SQLite's incremental I/O, each piece is copied on its own, and the text
    is made from the bytes inside SQLite.
    """
    if output is None or isinstance(output, str) or len(output) <= _LARGE_OUTPUT:
        db.execute(
            "INSERT INTO events (run_id, seq, kind, payload, output) "
            "VALUES (?, ?, ?, ?, CAST(? AS TEXT))",
            (run_id, seq, kind, payload, output),
        )
        return
    cursor = db.execute(
        "INSERT INTO events (run_id, seq, kind, payload, output) "
        "VALUES (?, ?, ?, ?, zeroblob(?))",
        (run_id, seq, kind, payload, len(output)),
    )
    rowid = cursor.lastrowid
    assert rowid is not None  # an INSERT's
    data = memoryview(output)
    with db.blobopen("events", "output", rowid) as blob:
        for start in range(0, len(data), _LARGE_OUTPUT):
            blob.write(data[start : start + _LARGE_OUTPUT])
    db.execute(
        "UPDATE events SET output = CAST(output AS TEXT) WHERE rowid = ?", (rowid,)
    )


def _listed(name: str) -> str:
    """``name`` as UTF-8 text for the listing column (a lone surrogate escaped)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Format 1 to 2: outputs get their own column (old rows keep theirs in the JSON)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "output" not in columns:
            db.execute("ALTER TABLE events ADD COLUMN output TEXT")
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'format_version'",
            (str(FORMAT_VERSION),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@attrs.frozen(eq=False)
class _Flush:
    done: trio.Event


class JournalWriter:
    """The journal actor: batches records from runs and commits them in a thread."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._send, self._receive = trio.open_memory_channel[Any](1 << 16)

    async def run(self, *, task_status: trio.TaskStatus[JournalWriter]) -> None:
        """Open the journal, then commit what arrives until cancelled."""
        await trio.to_thread.run_sync(self.journal.open)
        task_status.started(self)
        try:
            while True:
                batch = [await self._receive.receive()]
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._commit(batch)
        finally:
            with trio.CancelScope(shield=True):
                leftover = []
                while True:
                    try:
                        leftover.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._commit(leftover)
                await trio.to_thread.run_sync(self.journal.close)

    async def _commit(self, batch: list[Any]) -> None:
        records = [item for item in batch if not isinstance(item, _Flush)]
        if records:
            await trio.to_thread.run_sync(self.journal.write, records)
        for item in batch:
            if isinstance(item, _Flush):
                item.done.set()

    def submit_nowait(self, record: tuple[Any, ...]) -> bool:
        """Queue a record if there is room; False if the caller must wait."""
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            return False
        return True

    async def submit(self, record: tuple[Any, ...]) -> None:
        """Queue a record, waiting for room."""
        await self._send.send(record)

    async def flush(self) -> None:
        """Wait until every record queued so far is committed."""
        marker = _Flush(trio.Event())
        await self._send.send(marker)
        await marker.done.wait()
