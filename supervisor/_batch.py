"""One transaction of the journal writer: a batch of records, a takeover, a release.

Everything here runs in the writer's worker (`_writer_process`: a process of
its own by default, or a thread), on its connection, and
changes nothing but the file: the writer (`_writer`) applies what a
transaction did (`Committed`) to its books on the event loop.

What the writer knows of a run and what a transaction did are `_ledger`'s.

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
from typing import TYPE_CHECKING, Any, Literal

from dagvisor.actors import JournalError, JournalWriteError
from dagvisor.actors._jsonform import dump_json

from ._event_rows import (
    LARGE_OUTPUT,
    OURS,
    insert_events,
    insert_large,
    insert_rows,
    lost,
    owns,
    rows_text,
)
from ._journal import is_busy
from ._lease import Owner, fence, insert_lease, release, take_over
from ._ledger import Committed, RunLedger
from ._record_text import make_texts
from ._stage_index import build_index, drop_index

if TYPE_CHECKING:
    from ._journal import Journal

__all__ = [
    "Committed",
    "Record",
    "RunLedger",
    "close_journal",
    "commit_batch",
    "index_runs",
    "release_lease",
    "take_run_over",
]

Record = tuple[Any, ...]
"""A record of a run (see ``_run_records``): ``(run_id, seq, kind, ...)``; an
event, whose ``seq`` is a number, is the row ``(run_id, seq, kind, payload,
output)`` of the events table."""
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
# A run's part of a batch is fenced by its first write, which writes only
# if the run's lease still names this runtime (`OURS`). Inside the write
# transaction nobody can take the run before it commits, so the rest need no
# check, and the fence costs no statement of its own (a batch of a few
# records mostly costs its statements).
_RESUME = "UPDATE runs SET status = 'running', ended = NULL WHERE run_id = ?1"
_END = "UPDATE runs SET status = ?2, ended = ?3 WHERE run_id = ?1"


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


def _write_group(
    db: sqlite3.Connection,
    ledger: RunLedger,
    group: list[Record],
    me: Owner,
    expires: float,
    done: Committed,
    chunk: int,
) -> None:
    """Write one run's records of a batch; the first write fences the lease.

    ``chunk``: the most characters of events written in one statement (see
    `_insert_events`).

    Raises:
        LeaseLostError: the lease no longer names this runtime.
        JournalWriteError: the run's events are not in sequence.
    """
    run_id = ledger.run_id
    nonce = me.nonce
    fence = ledger.owned  # a new run's lease is written by this very batch
    expected = ledger.next_seq
    events: list[Record] = []
    for record in group:
        seq = record[1]
        if seq is not None:  # an event: (run_id, seq, kind, payload, output)
            if seq != expected:
                msg = f"its event {expected} went missing before event {seq}"
                raise JournalWriteError(run_id, msg)
            expected += 1
            payload = record[3]
            if type(payload) is not str:  # a rare record, dumped here
                record = (run_id, seq, record[2], dump_json(payload), record[4])
            output = record[4]
            if (type(output) is bytearray or type(output) is memoryview) and len(
                output
            ) > LARGE_OUTPUT:
                fence = insert_events(
                    db, run_id, events, nonce if fence else None, chunk
                )
                events = []
                if fence and not owns(db, run_id, nonce):
                    raise lost(db, run_id)
                fence = False
                insert_large(db, run_id, seq, record[2], record[3], output)
                continue
            events.append(record)
            continue
        fence = insert_events(db, run_id, events, nonce if fence else None, chunk)
        events = []
        match record[2:]:
            case ("run", name, created, pipeline):
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
            case ("resume",):
                _update(db, run_id, _RESUME, (run_id,), nonce if fence else None)
                fence = False
                drop_index(db, run_id)  # its events go on: made again at its end
            case ("end", status, ended):
                _update(
                    db, run_id, _END, (run_id, status, ended), nonce if fence else None
                )
                fence = False
                release(db, run_id, me)
                done.released.append(run_id)
                done.ended.append(run_id)  # to index once this is committed
            case _:  # pragma: no cover - a bug in a producer of records
                msg = f"unknown journal record {record!r}"
                raise AssertionError(msg)
    insert_events(db, run_id, events, nonce if fence else None, chunk)
    done.next_seq[run_id] = expected


def _update(
    db: sqlite3.Connection,
    run_id: str,
    sql: str,
    args: tuple[Any, ...],
    fence: str | None,
) -> None:
    """Update the run's row; with ``fence`` (the nonce), only if the lease is ours."""
    if fence is not None:
        sql, args = sql + OURS.format(len(args) + 1), (*args, fence)
    if db.execute(sql, args).rowcount != 1:
        raise lost(db, run_id)


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

    ``renewing`` are the runs whose leases are due for renewal. Runs in the
    writer's worker (`_writer_process`): it only looks ledgers up (the event
    loop may add some meanwhile) and never changes them; the writer applies
    the returned `Committed` on the event loop. ``records`` is the worker's
    own list: the changes' texts are made in it (`make_texts`).
    """
    make_texts(records)
    groups: dict[str, list[Record]] = {}
    for record in records:
        group = groups.get(record[0])
        if group is None:
            group = groups[record[0]] = []
        group.append(record)
    live = {
        run_id: ledger
        for run_id in groups
        if (ledger := ledgers.get(run_id)) is not None and ledger.error is None
    }
    if not live and not renewing:
        return Committed()
    chunk = journal.rows_chunk
    if len(live) == 1 and not renewing:
        ((run_id, ledger),) = live.items()
        text = _one_statement(ledger, groups[run_id], chunk)
        if text is not None:
            return _commit_one(journal, ledger, text, len(groups[run_id]), me)
    # Each run's part is a savepoint of its own only when the batch holds
    # several runs: most batches hold one, whose failure undoes them whole.
    guarded = len(live) > 1

    def work(db: sqlite3.Connection) -> Committed:
        done = Committed(expires=time.time() + journal.lease)
        for run_id, ledger in live.items():
            if guarded:
                db.execute("SAVEPOINT run")
            try:
                if not ledger.owned and groups[run_id][0][2] != "run":
                    msg = "its records came before the record of the run"
                    raise JournalWriteError(run_id, msg)
                _write_group(db, ledger, groups[run_id], me, done.expires, done, chunk)
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
                done.failed[ledger.run_id] = lost(db, ledger.run_id)
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


def _one_statement(ledger: RunLedger, group: list[Record], chunk: int) -> str | None:
    """The rows text of a run's part of a batch, if one statement can write it all.

    The common batch: events only, of a run whose lease is committed, in
    sequence, each fit to go in a rows text (see ``_event_rows``). Anything
    else takes the transaction, which also says what is wrong.
    """
    if not ledger.owned or not group or group[0][1] != ledger.next_seq:
        return None
    last = group[-1][1]
    if (
        type(last) is not int
        or last - ledger.next_seq != len(group) - 1
        or any(type(record[1]) is not int for record in group)
    ):
        return None
    return rows_text(group, chunk) if chunk else None


def _commit_one(
    journal: Journal, ledger: RunLedger, text: str, count: int, me: Owner
) -> Committed:
    """Write a run's events in one statement, committed on its own (SQLite's
    autocommit: one statement is one transaction), fenced like any batch."""
    run_id = ledger.run_id
    try:
        written = journal.write(lambda db: insert_rows(db, run_id, text, me.nonce))
        if written == 0:
            error: JournalWriteError = journal.write(lambda db: lost(db, run_id))
            return Committed(failed={run_id: error})
    except _RECORD_ERRORS as exc:
        return Committed(
            failed={run_id: JournalWriteError(run_id, _reason(exc, journal))}
        )
    except Exception as exc:  # the file, not a record
        reason = _reason(exc, journal)
        return Committed(failed={run_id: JournalWriteError(run_id, reason)}, ok=False)
    if written != count:  # pragma: no cover - a bug
        msg = f"{written} of its {count} events were written"
        return Committed(failed={run_id: JournalWriteError(run_id, msg)})
    return Committed(next_seq={run_id: ledger.next_seq + count})


def index_runs(journal: Journal, run_ids: list[str]) -> None:
    """Index runs whose end is committed, in a transaction of its own (the writer's worker).

    Best effort: a run left without its index (a locked file, a crash before
    this) is read whole by the reading commands, with the same answers.
    """

    def work(db: sqlite3.Connection) -> None:
        for run_id in run_ids:
            build_index(db, run_id)

    with contextlib.suppress(sqlite3.Error, JournalError):
        journal.transaction(work, create=False)


def take_run_over(
    journal: Journal, ledger: RunLedger, me: Owner
) -> Literal["taken", "changed"]:
    """Make this runtime the owner of a run (the writer's worker); see `_lease.take_over`."""
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
    """Give up a run's lease (the writer's worker); best effort, it expires anyway."""
    with contextlib.suppress(sqlite3.Error, JournalError):
        journal.transaction(lambda db: release(db, run_id, me), create=False)


def close_journal(journal: Journal) -> None:
    """Close the writer's connection to the file (its last transaction)."""
    journal.close()
