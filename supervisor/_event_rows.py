"""Writing a run's events into the ``events`` table: many rows in one statement.

The journal writer's worker, when it is a thread (`Journal(writer="thread")`), must
take Python's interpreter lock back after every SQLite call (each call
gives it up while SQLite works). While the event loop runs, each time it
does costs the loop a switch of threads, and on a busy machine a wait for
the scheduler: a row bound and inserted at a time costs the event loop
that per row. So rows go in one statement per run and batch: their values
as one JSON array (``[[seq, kind, payload, output], ...]``), which SQLite
reads (``json_each``) without the interpreter. What that cannot carry
goes one row at a time, as before: a large output (written in pieces, see
`insert_large`), text holding a NUL (SQLite's JSON reader would end the
string there), and rows too large for one statement's text; and every row
when SQLite cannot read JSON. What is stored is the same either way.

Every function here runs in the writer's thread, on its connection.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from dagvisor.actors import JournalWriteError, LeaseLostError

from ._lease import read_lease

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

__all__ = [
    "LARGE_OUTPUT",
    "OURS",
    "insert_events",
    "insert_large",
    "insert_rows",
    "lost",
    "owns",
    "rows_text",
]

OURS: Final = " AND EXISTS (SELECT 1 FROM leases WHERE run_id = ?1 AND nonce = ?{})"
"""The fence: a write that carries it writes only while the run's lease names
this runtime (its nonce, the parameter numbered in)."""
LARGE_OUTPUT: Final = 1 << 20
"""Bytes: an output larger than this is written in pieces of this size."""

# An output goes to its own column as the codec wrote it, once: text (or
# UTF-8 bytes stored as text) in ``output``, a binary codec's bytes (a
# memoryview) as a BLOB in ``data``.
_INSERT_EVENT: Final = (
    "INSERT INTO events (run_id, seq, kind, payload, output, data) "
    "VALUES (?, ?, ?, ?, CAST(? AS TEXT), ?)"
)
_INSERT_FENCED: Final = (
    "INSERT INTO events (run_id, seq, kind, payload, output, data) "
    "SELECT ?1, ?2, ?3, ?4, CAST(?5 AS TEXT), ?6 WHERE 1" + OURS.format(7)
)
_INSERT_ROWS: Final = (
    "INSERT INTO events (run_id, seq, kind, payload, output) "
    "SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?2)"
)
_INSERT_ROWS_FENCED: Final = _INSERT_ROWS + " WHERE 1" + OURS.format(3)
_ROWS: Final = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
)
_ROW_SHARE: Final = 32  # characters a row takes in the array besides its texts

Event = tuple[str, int, str, str, "str | bytearray | memoryview | None"]
"""An event's row: ``(run_id, seq, kind, payload, output)``; a memoryview
output is a binary codec's, for the ``data`` column."""


def _columns(event: Event) -> tuple[Any, ...]:
    """The parameters of `_INSERT_EVENT` for ``event``."""
    output = event[4]
    if type(output) is memoryview:
        return (event[0], event[1], event[2], event[3], None, output)
    return (event[0], event[1], event[2], event[3], output, None)


def lost(db: sqlite3.Connection, run_id: str) -> LeaseLostError:
    """The error of a run whose lease no longer names this runtime (saying who took it)."""
    lease = read_lease(db, run_id)
    if lease is None:
        how = "another runtime took it over and has let it go"
    else:
        how = f"process {lease.pid} on host {lease.host!r} took it over"
    return LeaseLostError(run_id, how)


def owns(db: sqlite3.Connection, run_id: str, nonce: str) -> bool:
    """Whether the run's lease names this runtime (a fence with no write to carry it)."""
    row = db.execute("SELECT nonce FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    return row is not None and row[0] == nonce


def _in_rows(event: Sequence[Any], room: int) -> int:
    """The characters ``event`` takes in a rows text, or -1 if it cannot go there."""
    payload, output = event[3], event[4]
    size = len(payload) + _ROW_SHARE
    if output is not None:
        if type(output) is not str or "\x00" in output:
            return -1
        size += len(output)
    if size > room or "\x00" in payload:
        return -1
    return size


def rows_text(events: Sequence[Event], chunk: int) -> str | None:
    """The rows text of all of ``events`` for one statement, or None if they cannot
    all go in one (see the module docstring; ``chunk``: the most characters)."""
    room = chunk
    for event in events:
        size = _in_rows(event, room)
        if size < 0:
            return None
        room -= size
    return _ROWS.encode([[event[1], event[2], event[3], event[4]] for event in events])


def insert_rows(db: sqlite3.Connection, run_id: str, text: str, nonce: str) -> int:
    """Insert the events of a `rows_text` if the run's lease is ours; how many were."""
    return int(db.execute(_INSERT_ROWS_FENCED, (run_id, text, nonce)).rowcount)


def insert_events(
    db: sqlite3.Connection,
    run_id: str,
    events: Sequence[Event],
    fence: str | None,
    chunk: int,
) -> bool:
    """Insert events; with ``fence`` (the nonce), only if the run's lease is ours.

    Runs of events that fit in ``chunk`` characters go in one statement
    each (0: SQLite cannot read JSON); the others in one ``executemany``.
    Returns whether the fence is still to be made (no event to make it with).

    Raises:
        LeaseLostError: the lease no longer names this runtime.
    """
    start, count = 0, len(events)
    while start < count:
        end, room = start, chunk
        while end < count and (size := _in_rows(events[end], room)) >= 0:
            room -= size
            end += 1
        if end > start:  # events[start:end] as one rows text
            rows = [
                [event[1], event[2], event[3], event[4]] for event in events[start:end]
            ]
            if fence is not None:
                done = db.execute(
                    _INSERT_ROWS_FENCED, (run_id, _ROWS.encode(rows), fence)
                )
                if done.rowcount == 0:
                    raise lost(db, run_id)
                fence = None
            else:
                done = db.execute(_INSERT_ROWS, (run_id, _ROWS.encode(rows)))
            if done.rowcount != end - start:  # pragma: no cover - a bug
                msg = f"{done.rowcount} of its {end - start} events were written"
                raise JournalWriteError(run_id, msg)
            start = end
            continue
        while end < count and _in_rows(events[end], chunk) < 0:
            end += 1  # events[start:end] one by one
        one_by_one = [_columns(event) for event in events[start:end]]
        if fence is not None:
            if db.execute(_INSERT_FENCED, (*one_by_one[0], fence)).rowcount != 1:
                raise lost(db, run_id)
            fence = None
            one_by_one = one_by_one[1:]
        if one_by_one:
            db.executemany(_INSERT_EVENT, one_by_one)
        start = end
    return fence is not None


def insert_large(
    db: sqlite3.Connection,
    run_id: str,
    seq: int,
    kind: str,
    payload: str,
    output: bytearray | memoryview,
) -> None:
    """Insert one event whose large output is written into its row piece by piece.

    Binding a large output would copy it whole in one call, holding the
    interpreter (and so the event loop) all that time; written through
    SQLite's incremental I/O, each piece is copied on its own. Text is made
    from its UTF-8 bytes inside SQLite; a binary output (a memoryview) stays
    a BLOB in the ``data`` column.
    """
    binary = type(output) is memoryview
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
        for start in range(0, len(data), LARGE_OUTPUT):
            blob.write(data[start : start + LARGE_OUTPUT])
    if not binary:
        db.execute(
            "UPDATE events SET output = CAST(output AS TEXT) WHERE rowid = ?",
            (rowid,),
        )
