"""The journal file: its options, opening it, and its write transactions.

Durability promise (SQLite, WAL mode):

* When ``run.wait()`` (or ``rt.run``) returns a result, everything about the
  run is committed: the run, every change request (accepted or refused, with
  its audit record and the request itself), every stage start and end (with
  the encoded output of each success), and how the run ended. Committed data
  survives a crash of the process (SIGKILL included). If any record of the
  run could not be committed, the run fails instead (`JournalWriteError`, see
  `_writer`), and what the journal keeps of it is a prefix it can resume from.
* While a run goes, records are committed in batches (group commit) by one
  writer task, in a process of its own by default (``writer``); a crash
  loses at most the batch in flight.
* With ``synchronous="NORMAL"`` (the default) a power loss or an OS crash
  may lose the last transactions committed before it; ``Journal(path,
  synchronous="FULL")`` makes each commit wait for the disk.

The file is created readable and writable by its owner only, when the first
run is written to it (a runtime that only resumes never creates one). A file
that is not a whole journal (a table or a column missing), is written by a
newer dagvisor, or is not a journal at all, is refused with a typed error
and left untouched (see `_format`, which also says what is added to an older
journal opened for writing: only what its format lacks).

What is written, per run: one row in ``runs`` (its pipeline as the distinct
stage specs, by registered function name, plus one ``[name, spec, after]``
row per stage; its exact name; its encoded inputs; the codec's name), its
owner in ``leases`` while it goes (see `_lease`), and, in ``events`` with
consecutive ``seq`` numbers, ``stage_started``, ``stage_ended`` (state,
wall-clock time, error and traceback; the encoded output of a success in the
``output`` column as the codec wrote it, or in the ``data`` column as a BLOB
when the codec wrote bytes, with the codec's name in the payload when it is
the stage's own, or ``"persisted": false`` for a stage that keeps its output
out of the journal), ``attempt_started`` and ``attempt_failed`` (a
retry, and the error of the attempt before it), ``change`` (the audit record
and the request, mapped items encoded), ``ended`` (each end of the run: its
status and what stopped it, see `_history`) and ``resumed``. Records are compact JSON
with non-ASCII text as it is and lone surrogates escaped, so every text is
valid UTF-8 and reads back exactly. A resume replays exactly this (see
``_replay``); a stage that had started but whose start was still in the batch
in flight at a crash is simply run again, which is why side effects are keyed
by ``ctx.idempotency_key``.

Reading runs back is `JournalReads`'s (`_journal_reads`), which `Journal`
inherits: every reading method gives `JournalError` (or `UnknownRunError`)
for a file that is damaged or was edited, never another error, and never
changes the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeVar, cast, final

from dagvisor.actors import (
    InvalidRequestError,
    JournalError,
    OutputTooLargeError,
)

from ._format import FORMAT_VERSION, look, probe, set_up, stored_size
from ._journal_read import check_columns, open_readonly
from ._journal_reads import JournalReads
from ._journal_rows import JournaledRun

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


__all__ = ["FORMAT_VERSION", "Journal", "JournalError", "JournaledRun"]

T = TypeVar("T")

# SQLite's busy handler waits this long inside one attempt; between attempts
# the journal backs off itself, up to `Journal.busy_timeout` in all.
_ATTEMPT_WAIT = 0.05
_FIRST_BACKOFF = 0.005
_LAST_BACKOFF = 0.5
# Room kept in a value for the rest of its record (stage name, state, time).
_RECORD_MARGIN = 64 * 1024
# The most bytes one character of an output takes in the journal (UTF-8).
_WORST_BYTES_PER_CHAR = 4
_ROWS_CHUNK: Final = 1 << 20
_SQLITE_ERRORS: Final = {"busy": (5, 6), "full": (13,)}  # SQLITE_BUSY, _LOCKED; _FULL


def _sqlite_length_limit() -> int:
    """SQLite's own limit on the length of one string or blob, in bytes."""
    probe = sqlite3.connect(":memory:")
    try:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    finally:
        probe.close()


_SQLITE_LENGTH: Final = _sqlite_length_limit()


def is_busy(exc: BaseException) -> bool:
    """Whether an SQLite error says another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _SQLITE_ERRORS["busy"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number of seconds, not {value!r}"
        raise TypeError(msg)
    if not value > 0 or math.isinf(value):
        msg = f"{name} must be a number of seconds > 0, not {value!r}"
        raise InvalidRequestError(msg)
    return float(value)


@final
class Journal(JournalReads):
    """A SQLite journal file. Its methods block: call them off the event loop.

    Args:
        path: the file. A writable journal creates it (owner-only) when the
            first run is written; ``readonly`` never creates or changes it.
        synchronous: SQLite's ``synchronous`` setting, ``"NORMAL"`` or ``"FULL"``.
        readonly: only read: a missing file is an error and nothing is written.
        busy_timeout: seconds a write waits, retrying with backoff, while
            another process holds the file's write lock (30 by default). Past
            it the write fails, and so do the runs whose records it carried
            (`JournalWriteError`); what they had committed before is kept.
        lease: seconds a runtime's ownership of a run lasts unless renewed
            (60 by default). The writer renews it every third of that while
            the run goes; another process may take the run over only once
            the lease has expired, or at once if the owner's process is
            provably gone from this host. Keep ``busy_timeout`` well below
            it: a writer waiting for a lock cannot renew.
        max_value_bytes: the largest value one record may hold, in bytes
            (SQLite's limit, 1,000,000,000 by default, when None). An output
            larger than that fails its stage with `OutputTooLargeError`.
        writer: where a runtime's writes to the file run: ``"process"`` (the
            default), a Python process of their own started when the runtime
            opens (about 0.4 s), which commits without slowing the event
            loop; or ``"thread"``, a worker thread of this process, for where
            processes cannot be started or short runs that cannot wait for one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        readonly: bool = False,
        busy_timeout: float = 30.0,
        lease: float = 60.0,
        max_value_bytes: int | None = None,
        writer: Literal["process", "thread"] = "process",
    ) -> None:
        if writer not in ("process", "thread"):
            msg = f"writer must be 'process' or 'thread', not {writer!r}"
            raise InvalidRequestError(msg)
        if synchronous not in ("NORMAL", "FULL"):
            msg = f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}"
            raise InvalidRequestError(msg)
        self.path = Path(path)
        self.synchronous = synchronous
        self.writer = writer
        self.readonly = readonly
        self.busy_timeout = _positive("busy_timeout", busy_timeout)
        self.lease = _positive("lease", lease)
        if max_value_bytes is not None and (
            isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int)
        ):
            msg = f"max_value_bytes must be a whole number of bytes, not {max_value_bytes!r}"
            raise TypeError(msg)
        if max_value_bytes is not None and max_value_bytes < 1:
            msg = f"max_value_bytes must be at least 1, not {max_value_bytes!r}"
            raise InvalidRequestError(msg)
        self.max_value_bytes = min(max_value_bytes or _SQLITE_LENGTH, _SQLITE_LENGTH)
        self._quick_chars = (
            self.max_value_bytes - _RECORD_MARGIN
        ) // _WORST_BYTES_PER_CHAR
        self._db: sqlite3.Connection | None = None
        self.rows_chunk = 0
        """Characters of events the writer inserts in one statement, as one JSON
        array (0 while closed, or when this SQLite cannot read JSON)."""
        self._format = FORMAT_VERSION  # of the file: a read-only one may be older
        self._serving = False  # a runtime writes through it: one at a time
        # How a write waits between attempts while the file is locked (a seam
        # for tests, which release the lock there).
        self._backoff: Callable[[float], object] = time.sleep

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # -- opening ------------------------------------------------------------------

    def open(self) -> None:
        """Open the file and check it is a whole journal of a known format.

        A writable journal whose file is missing is created; a read-only one
        is refused. Nothing is written to a file that is refused.

        Raises:
            JournalError: the file is not a whole journal of this format.
        """
        if self._db is not None:
            return
        if not self.readonly:
            self._open_writable(create=True)
            return
        db, found, columns = open_readonly(self.path)
        try:
            if found > FORMAT_VERSION:
                msg = (
                    f"{self.path} was written by a newer dagvisor (journal format "
                    f"{found}, this one reads up to {FORMAT_VERSION}); upgrade dagvisor"
                )
                raise JournalError(msg)
            check_columns(columns, found, self.path)
        except BaseException:
            db.close()
            raise
        self._db, self._format = db, found

    def check(self) -> None:
        """Check, without writing anything, that runs can be written here.

        The file is a whole journal of this format, or is missing in an
        existing directory (it is then created when the first run is written).

        Raises:
            JournalError: the path cannot hold a journal.
        """
        found = probe(self.path)
        if found.kind == "missing" and not look(self.path, self.path.parent.is_dir):
            msg = (
                f"cannot create a journal at {self.path}: its directory does not exist"
            )
            raise JournalError(msg)

    def _open_writable(self, *, create: bool) -> None:
        """Open for writing; create the file and its tables only if ``create``."""
        found = probe(self.path)
        if found.kind == "missing":
            if not create:
                msg = f"there is no journal at {self.path}; check the path"
                raise JournalError(msg)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
            except FileExistsError:
                pass  # another process created it meanwhile: set up below, once
            except OSError as exc:
                msg = f"cannot create a journal at {self.path} ({exc}); check the path"
                raise JournalError(msg) from exc
        elif found.kind == "empty" and not create:
            msg = f"{self.path} is not a dagvisor journal (it is empty); check the path"
            raise JournalError(msg)
        try:
            db = sqlite3.connect(
                self.path,
                timeout=_ATTEMPT_WAIT,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            msg = f"{self.path} cannot be opened for writing ({exc}); check the path"
            raise JournalError(msg) from exc
        self._db = db
        try:
            db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_value_bytes)
            self._retrying(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            if found.kind != "journal" or found.incomplete:
                self.transaction(set_up)
            with contextlib.suppress(sqlite3.Error):  # else: one row at a time
                db.execute("SELECT value FROM json_each('[1]')").fetchall()
                # A character takes at most 6 bytes in that text (a control
                # character's escape): a chunk always fits in one value.
                self.rows_chunk = min(_ROWS_CHUNK, self.max_value_bytes // 8)
        except (sqlite3.Error, JournalError) as exc:
            self.close()
            if isinstance(exc, JournalError):
                raise
            msg = (
                f"{self.path} cannot be written ({exc}); it is damaged or not a journal"
            )
            raise JournalError(msg) from exc

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, tried again with backoff while the file is locked."""
        deadline = time.monotonic() + self.busy_timeout
        delay = _FIRST_BACKOFF
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
            self._backoff(delay)
            delay = min(delay * 2, _LAST_BACKOFF)

    def transaction(
        self, work: Callable[[sqlite3.Connection], T], *, create: bool = True
    ) -> T:
        """``work(db)`` in one write transaction, committed or rolled back whole.

        The transaction takes the write lock first (``BEGIN IMMEDIATE``), so
        what ``work`` reads cannot change before it commits. While another
        process holds the lock the whole transaction is tried again, with
        backoff, for up to ``busy_timeout`` seconds; then the busy error is
        raised. ``work`` may run several times: it must only touch ``db``.
        The file is created first if it is missing, unless ``create`` is false
        (then that is a `JournalError`).
        """
        db = self._writable(create=create)

        def attempt() -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    # SQLite may have rolled back already (a full disk, an I/O error).
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            return result

        return self._retrying(attempt)

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(db)``: one statement, its own transaction, retried while locked.

        For a write that is one statement (SQLite commits it whole or not at
        all), without a ``BEGIN`` and a ``COMMIT`` of its own; see `transaction`.
        """
        db = self._writable()
        return self._retrying(lambda: work(db))

    def _writable(self, *, create: bool = True) -> sqlite3.Connection:
        if self._db is None:
            self._open_writable(create=create)
        assert self._db is not None
        return self._db

    def check_value(
        self, text: str | bytes | bytearray | memoryview | Sequence[str], what: str
    ) -> None:
        """Refuse a value too large for one record.

        ``text`` is the value as its codec encoded it (text, or UTF-8 bytes for
        a large output), or the encoded items one record holds together (the
        items of an ``expand``).

        Raises:
            OutputTooLargeError: the journal cannot store it.
        """
        # Even in the worst case it fits: no need to measure (every output
        # of every journaled stage comes here, so this is the common path).
        # (``type(...) is``: faster than isinstance of a union, on this path.)
        kind = type(text)
        texts: Sequence[str | bytes | bytearray | memoryview]
        if kind is str or kind is bytearray or kind is bytes or kind is memoryview:
            if len(text) <= self._quick_chars:
                return
            texts = (cast("str | bytes | bytearray | memoryview", text),)
        else:
            texts = cast("Sequence[str]", text)
            if sum(map(len, texts)) + 3 * len(texts) <= self._quick_chars:
                return
        limit = self.max_value_bytes - _RECORD_MARGIN
        size = sum(stored_size(one) + 1 for one in texts)
        if size > limit:
            raise OutputTooLargeError(what, size, max(limit, 0))

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
