"""One transaction of the journal writer: a batch of records, a takeover, a release.

Everything here runs in the writer's worker thread, on its connection, and
changes nothing but the file: the writer (`_writer`) applies what a
transaction did (`Committed`) to its books on the event loop.

A batch is committed in one transaction, or its runs fail: a locked, full or
broken file fails every run whose records the batch carried. Within it, a
record the journal cannot store fails only its own run, whose part of the
batch is undone whole (a savepoint when the batch holds several runs). Each
run's records are fenced: committed only while the transaction finds this
runtime's nonce on the run's lease.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from dagvisor.actors import JournalError, JournalWriteError, LeaseLostError
from dagvisor.actors._jsonform import dump_json

from ._journal import is_busy
from ._lease import Owner, fence, insert_lease, read_lease, release, take_over

if TYPE_CHECKING:
    import trio

    from dagvisor.actors._messages import Message

    from ._journal import Journal

__all__ = [
    "Committed",
    "Record",
    "RunLedger",
    "commit_batch",
    "release_lease",
    "take_run_over",
]

Record = tuple[Any, ...]
# Errors that one record causes (too large, not encodable, a key taken):
# they fail the run it belongs to, and no other.
_RECORD_ERRORS = (
    sqlite3.DataError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    ValueError,  # UnicodeEncodeError among them
    TypeError,
    OverflowError,
    RecursionError,
)
# A run's part of a batch is fenced by its first write: that statement
# writes only if the run's lease still names this runtime (its nonce, the
# last parameter). Inside the write transaction nobody can take the run
# before it commits, so the rest need no check, and the fence costs no
# statement of its own (a batch of a few records mostly costs its statements).
_OURS = " AND EXISTS (SELECT 1 FROM leases WHERE run_id = ?1 AND nonce = ?{})"
# An output goes to its own column as the codec wrote it, once: text (or
# UTF-8 bytes stored as text) in ``output``, a binary codec's bytes (a
# memoryview) as a BLOB in ``data``.
_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, kind, payload, output, data) "
    "VALUES (?, ?, ?, ?, CAST(? AS TEXT), ?)"
)
_INSERT_FENCED = (
    "INSERT INTO events (run_id, seq, kind, payload, output, data) "
    "SELECT ?1, ?2, ?3, ?4, CAST(?5 AS TEXT), ?6 WHERE 1" + _OURS.format(7)
)
_LARGE_OUTPUT: Final = 1 << 20  # bytes: written in pieces of this size
_RESUME = "UPDATE runs SET status = 'running', ended = NULL WHERE run_id = ?1"
_END = "UPDATE runs SET status = ?2, ended = ?3 WHERE run_id = ?1"


@attrs.define(eq=False)
class RunLedger:
    """What the writer knows of one run it writes for.

    Attributes:
        run_id: the run.
        outbox: the run's supervisor inbox, to tell it to stop.
        next_seq: the sequence number its next event must carry.
        owned: its lease is committed, so each batch fences and renews it.
        expires: when its lease ends unless renewed (wall-clock).
        error: why its records can no longer be committed, once they cannot.
    """

    run_id: str
    outbox: trio.MemorySendChannel[Message] | None
    next_seq: int = 0
    owned: bool = False
    expires: float = 0.0
    error: JournalWriteError | None = None


@attrs.define
class Committed:
    """What one transaction did, run by run (worked out in the worker thread)."""

    failed: dict[str, JournalWriteError] = attrs.Factory(dict)
    owned: list[str] = attrs.Factory(list)
    released: list[str] = attrs.Factory(list)
    next_seq: dict[str, int] = attrs.Factory(dict)
    renewed: list[str] = attrs.Factory(list)
    expires: float = 0.0
    ok: bool = True  # False: the transaction itself failed (the file, not a record)


def _reason(exc: BaseException, journal: Journal) -> str:
    """Why a transaction failed, in words (for the run's error)."""
    if is_busy(exc):
        return (
            f"{journal.path} stayed locked by another process for more than "
            f"{journal.busy_timeout:g} s (Journal(busy_timeout=...))"
        )
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == 13:  # SQLITE_FULL
        return f"the disk holding {journal.path} is full"
    if isinstance(exc, sqlite3.DataError):
        return (
            f"a record is larger than the {journal.max_value_bytes:,} bytes the "
            "journal stores in one value"
        )
    if isinstance(exc, UnicodeError):
        return f"a text the journal could not encode ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _listed(name: str) -> str:
    """``name`` as UTF-8 text for the listing column (a lone surrogate escaped).

    The exact name (it may hold a lone surrogate) is in the run's JSON record.
    """
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _lost(db: sqlite3.Connection, run_id: str) -> LeaseLostError:
    lease = read_lease(db, run_id)
    if lease is None:
        how = "another runtime took it over and has let it go"
    else:
        how = f"process {lease.pid} on host {lease.host!r} took it over"
    return LeaseLostError(run_id, how)


def _write_group(
    db: sqlite3.Connection,
    ledger: RunLedger,
    group: list[Record],
    me: Owner,
    expires: float,
    done: Committed,
) -> None:
    """Write one run's records of a batch; the first write fences the lease.

    Raises:
        LeaseLostError: the lease no longer names this runtime.
        JournalWriteError: the run's events are not in sequence.
    """
    run_id = ledger.run_id
    nonce = me.nonce
    fence = ledger.owned  # a new run's lease is written by this very batch
    expected = ledger.next_seq
    events: list[_Event] = []
    for record in group:
        if record[0] == "event":
            _, _, seq, kind, payload = record
            if seq != expected:
                msg = f"its event {expected} went missing before event {seq}"
                raise JournalWriteError(run_id, msg)
            expected += 1
            output = payload.get("output")
            if output is not None:
                payload = {k: v for k, v in payload.items() if k != "output"}
            binary = type(output) is memoryview
            if (binary or type(output) is bytearray) and len(output) > _LARGE_OUTPUT:
                fence = _insert_events(db, run_id, events, nonce if fence else None)
                events = []
                if fence and not _owns(db, run_id, nonce):
                    raise _lost(db, run_id)
                fence = False
                _insert_large(
                    db, run_id, seq, kind, dump_json(payload), output, binary=binary
                )
                continue
            if binary:
                events.append((run_id, seq, kind, dump_json(payload), None, output))
            else:
                events.append((run_id, seq, kind, dump_json(payload), output, None))
            continue
        fence = _insert_events(db, run_id, events, nonce if fence else None)
        events = []
        match record:
            case ("run", _, name, created, pipeline):
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
                insert_lease(db, run_id, me, expires)
                done.owned.append(run_id)
            case ("resume", _):
                _update(db, run_id, _RESUME, (run_id,), nonce if fence else None)
                fence = False
            case ("end", _, status, ended):
                _update(
                    db, run_id, _END, (run_id, status, ended), nonce if fence else None
                )
                fence = False
                release(db, run_id, me)
                done.released.append(run_id)
            case _:  # pragma: no cover - a bug in a producer of records
                msg = f"unknown journal record {record!r}"
                raise AssertionError(msg)
    _insert_events(db, run_id, events, nonce if fence else None)
    done.next_seq[run_id] = expected


_Event = tuple[str, int, str, str, "str | bytearray | None", "memoryview | None"]


def _insert_events(
    db: sqlite3.Connection, run_id: str, events: list[_Event], fence: str | None
) -> bool:
    """Insert events; with ``fence`` (the nonce), only if the run's lease is ours.

    Returns whether the fence is still to be made (no event to make it with).
    """
    if not events:
        return fence is not None
    if fence is not None:
        if db.execute(_INSERT_FENCED, (*events[0], fence)).rowcount != 1:
            raise _lost(db, run_id)
        events = events[1:]
    if events:
        db.executemany(_INSERT_EVENT, events)
    return False


def _owns(db: sqlite3.Connection, run_id: str, nonce: str) -> bool:
    """Whether the run's lease names this runtime (a fence with no write to carry it)."""
    row = db.execute("SELECT nonce FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    return row is not None and row[0] == nonce


def _insert_large(
    db: sqlite3.Connection,
    run_id: str,
    seq: int,
    kind: str,
    payload: str,
    output: bytearray | memoryview,
    *,
    binary: bool,
) -> None:
    """Insert one event whose large output is written into its row piece by piece.

    Binding a large output would copy it whole in one call, holding the
    interpreter (and so the event loop) all that time; written through
    SQLite's incremental I/O, each piece is copied on its own. Text is made
    from its UTF-8 bytes inside SQLite; a binary output stays a BLOB.
    """
    column = "data" if binary else "output"
    cursor = db.execute(
        f"INSERT INTO events (run_id, seq, kind, payload, {column}) "
        "VALUES (?, ?, ?, ?, zeroblob(?))",
        (run_id, seq, kind, payload, len(output)),
    )
    rowid = cursor.lastrowid
    assert rowid is not None  # an INSERT's
    data = memoryview(output)
    with db.blobopen("events", column, rowid) as blob:
        for start in range(0, len(data), _LARGE_OUTPUT):
            blob.write(data[start : start + _LARGE_OUTPUT])
    if not binary:
        db.execute(
            "UPDATE events SET output = CAST(output AS TEXT) WHERE rowid = ?",
            (rowid,),
        )


def _update(
    db: sqlite3.Connection,
    run_id: str,
    sql: str,
    args: tuple[Any, ...],
    fence: str | None,
) -> None:
    """Update the run's row; with ``fence`` (the nonce), only if the lease is ours."""
    if fence is not None:
        sql, args = sql + _OURS.format(len(args) + 1), (*args, fence)
    if db.execute(sql, args).rowcount != 1:
        raise _lost(db, run_id)


class _Refused(Exception):
    """One run's part of a batch failed, in a transaction that holds no other run."""

    def __init__(self, error: JournalWriteError) -> None:
        super().__init__(error)
        self.error = error


def commit_batch(
    journal: Journal,
    records: list[Record],
    ledgers: dict[str, RunLedger],
    me: Owner,
    renewing: list[RunLedger],
) -> Committed:
    """Commit a batch in one transaction; runs whose part fails are left out whole.

    ``renewing`` are the runs whose leases are due for renewal. Runs in a
    worker thread: it only looks ledgers up (the event loop may add some
    meanwhile) and never changes them; the writer applies the returned
    `Committed` on the event loop.
    """
    groups: dict[str, list[Record]] = {}
    for record in records:
        group = groups.get(record[1])
        if group is None:
            group = groups[record[1]] = []
        group.append(record)
    live = {
        run_id: ledger
        for run_id in groups
        if (ledger := ledgers.get(run_id)) is not None and ledger.error is None
    }
    if not live and not renewing:
        return Committed()
    # Each run's part is a savepoint of its own only when the batch holds
    # several runs: most batches hold one, whose failure undoes them whole.
    guarded = len(live) > 1

    def work(db: sqlite3.Connection) -> Committed:
        done = Committed(expires=time.time() + journal.lease)
        for run_id, ledger in live.items():
            if guarded:
                db.execute("SAVEPOINT run")
            try:
                if not ledger.owned and groups[run_id][0][0] != "run":
                    msg = "its records came before the record of the run"
                    raise JournalWriteError(run_id, msg)
                _write_group(db, ledger, groups[run_id], me, done.expires, done)
            except (*_RECORD_ERRORS, JournalWriteError) as exc:
                error = (
                    exc
                    if isinstance(exc, JournalWriteError)
                    else JournalWriteError(run_id, _reason(exc, journal))
                )
                if not guarded:
                    raise _Refused(error) from exc
                db.execute("ROLLBACK TO run")
                db.execute("RELEASE run")
                done.next_seq.pop(run_id, None)
                with contextlib.suppress(ValueError):
                    done.owned.remove(run_id)
                with contextlib.suppress(ValueError):
                    done.released.remove(run_id)
                done.failed[run_id] = error
                continue
            if guarded:
                db.execute("RELEASE run")
        for ledger in renewing:
            if ledger.run_id in done.failed or ledger.run_id in done.released:
                continue
            if fence(db, ledger.run_id, me, done.expires):
                done.renewed.append(ledger.run_id)
            else:
                done.failed[ledger.run_id] = _lost(db, ledger.run_id)
        return done

    try:
        return journal.transaction(work)
    except _Refused as refused:
        return Committed(failed={refused.error.run_id: refused.error})
    except Exception as exc:  # the file, not a record: every run of the batch fails
        reason = _reason(exc, journal)
        return Committed(
            failed={run_id: JournalWriteError(run_id, reason) for run_id in live},
            ok=False,
        )


def take_run_over(
    journal: Journal, ledger: RunLedger, me: Owner
) -> Literal["taken", "changed"]:
    """Make this runtime the owner of a run (worker thread); see `_lease.take_over`."""
    try:
        return journal.transaction(
            lambda db: take_over(
                db,
                ledger.run_id,
                ledger.next_seq,
                me,
                lease_for=journal.lease,
                where=str(journal.path),
            ),
            create=False,
        )
    except (sqlite3.Error, ValueError, TypeError) as exc:
        # A malformed lease row (edited by hand) is a damaged journal too.
        msg = f"run {ledger.run_id!r} could not be taken over: {_reason(exc, journal)}"
        raise JournalError(msg) from exc


def release_lease(journal: Journal, run_id: str, me: Owner) -> None:
    """Give up a run's lease (worker thread); best effort, it expires anyway."""
    with contextlib.suppress(sqlite3.Error, JournalError):
        journal.transaction(lambda db: release(db, run_id, me), create=False)
