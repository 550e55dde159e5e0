"""The journal writer's queue: what the runs call to hand it their records.

Runs ship parcels of records (`submit`), markers to wait on (`mark`,
`flush`), take-overs and releases of their leases; the writer (`_writer`),
which inherits this, takes them off the queue in batches. The queue is a
plain list the writer takes whole while it is short (no channel: a parcel
costs an append), bounded in records and in bytes: past either, a run's
supervisor waits between messages until the writer has taken a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import trio

from dagvisor.actors import JournalWriteError, LeaseLostError

from ._ledger import RunLedger
from ._writer_outcomes import Flush, Release, TakeOver

if TYPE_CHECKING:
    from dagvisor.actors._messages import Message

    from ._batch import Record

__all__ = [
    "BATCH",
    "GATHER_RECORDS",
    "GATHER_SECONDS",
    "QUEUED_BYTES",
    "QUEUED_RECORDS",
    "WriterQueue",
]

BATCH = 2048
# What the runs may have queued for the writer, in records and in bytes (an
# estimate: the encoded outputs and items, plus a flat share per record).
# Past either, a run's supervisor waits for the writer between messages:
# memory follows what the disk can take, not how far the runs ran ahead.
QUEUED_RECORDS = 8 * BATCH
QUEUED_BYTES = 16 * 2**20
# A busy loop's records are gathered into one batch until this many are
# queued, or for this long at most (see the module docstring).
GATHER_RECORDS = 512
GATHER_SECONDS = 0.01


class WriterQueue:
    """The runs' side of the `JournalWriter` (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: list[Any] = []
        """Parcels of records (``(weight, records)``) and markers, oldest first."""
        self._closed = False
        self._idle = trio.lowlevel.ParkingLot()
        """Where the writer waits while its queue is empty."""
        self._queued_bytes = 0
        self._queued_records = 0
        self._room = trio.lowlevel.ParkingLot()
        self._gathering: trio.CancelScope | None = None
        """While the writer lets records pile up: cancelled to commit at once."""
        self._urgent = False
        """A flush, a take-over or a release is queued: no gathering."""
        self._ledgers: dict[str, RunLedger] = {}

    # -- the runs' side ------------------------------------------------------------

    def register(
        self,
        run_id: str,
        outbox: trio.MemorySendChannel[Message] | None,
        next_seq: int = 0,
    ) -> RunLedger:
        """Start keeping the books of a run, before any of its records is sent."""
        ledger = self._ledgers[run_id] = RunLedger(run_id, outbox, next_seq)
        return ledger

    def forget(self, run_id: str) -> None:
        """Stop keeping the books of a run that has ended and been flushed.

        A run that could not record its end, or that was taken over but did
        not start after all, still holds its lease: it is given up (unless
        another runtime took it), so that the run can be resumed at once
        rather than after the lease expires.
        """
        ledger = self._ledgers.get(run_id)
        if ledger is None:
            return
        if (
            ledger.owned
            and not isinstance(ledger.error, LeaseLostError)
            and not self._closed
        ):
            self._put(Release(ledger))
            self._hurry()
            return
        del self._ledgers[run_id]

    async def take_over(self, run_id: str) -> Literal["taken", "changed"]:
        """Make this runtime the owner of a registered run, atomically.

        ``"changed"`` when the run went on since it was read up to the
        ``next_seq`` it was registered with (read it again); nothing is
        written then.

        Raises:
            RunOwnedError: its owner's lease is live.
            UnknownRunError: the journal has no such run.
            JournalError: the journal is missing, not whole, or stayed locked.
        """
        request = TakeOver(self._ledgers[run_id], trio.Event())
        self._put(request)
        self._hurry()
        await request.done.wait()
        assert request.answer is not None
        return request.answer.unwrap()

    def submit_nowait(self, records: list[Record], weight: int) -> bool:
        """Queue a parcel of records if there is room; False if the caller must wait.

        ``weight`` is what the records weigh in bytes (see `RECORD_BYTES`).
        """
        queued = self._queued_records
        if queued and (
            queued + len(records) > QUEUED_RECORDS
            or self._queued_bytes + weight > QUEUED_BYTES
        ):
            return False
        self._put((weight, records))
        # `_queued`, inlined: once or twice a stage.
        self._queued_records = queued = queued + len(records)
        self._queued_bytes += weight
        if records[0][1] is None:
            self._hurry()  # a run starts, resumes or ends (see `_queued`)
        elif self._gathering is not None and queued >= GATHER_RECORDS:
            self._gathering.cancel()  # enough for a batch: commit it now
        return True

    async def submit(self, records: list[Record], weight: int) -> None:
        """Queue a parcel of records, waiting for room (in records and in bytes)."""
        while self._queued_records and (
            self._queued_records + len(records) > QUEUED_RECORDS
            or self._queued_bytes + weight > QUEUED_BYTES
        ):
            await self._room.park()
        self._put((weight, records))
        self._queued(records, weight)

    def mark_nowait(self, done: trio.Event) -> bool:
        """Queue a `Flush` marker for ``done`` (markers are never refused for room:
        True; see `mark`)."""
        self._put(Flush(done))
        self._hurry()
        return True

    async def mark(self, done: trio.Event) -> None:
        """Set ``done`` once everything queued before it is committed (or cannot be)."""
        self._put(Flush(done))
        self._hurry()
        await trio.lowlevel.checkpoint()

    def _queued(self, records: list[Record], weight: int) -> None:
        self._queued_records += len(records)
        self._queued_bytes += weight
        if records and records[0][1] is None:
            # A run starts, resumes or ends: on disk at once, so that it is
            # known there (and can be resumed) whatever comes next.
            self._hurry()
        elif self._gathering is not None and self._queued_records >= GATHER_RECORDS:
            self._gathering.cancel()  # enough for a batch: commit it now

    def _hurry(self) -> None:
        """Someone waits for the writer: commit what is queued without gathering more."""
        self._urgent = True
        if self._gathering is not None:
            self._gathering.cancel()

    def _taken(self, records: int, weight: int) -> None:
        """The writer is done with a batch of ``records`` weighing ``weight``:
        room for the runs again."""
        self._queued_records -= records
        self._queued_bytes -= weight
        self._room.unpark_all()

    async def flush(self, run_id: str | None = None) -> JournalWriteError | None:
        """Wait until every record queued so far is committed, or cannot be.

        Returns why the records of run ``run_id`` could not all be committed,
        or None when every one of them is (or no run is named).
        """
        marker = Flush(trio.Event())
        if self._closed:
            if run_id is None:
                return None
            return JournalWriteError(run_id, "the runtime's journal writer has stopped")
        self._put(marker)
        self._hurry()
        await marker.done.wait()
        ledger = None if run_id is None else self._ledgers.get(run_id)
        return None if ledger is None else ledger.error

    def error_of(self, run_id: str) -> JournalWriteError | None:
        """Why some records of run ``run_id`` could not be committed, if they could not."""
        ledger = self._ledgers.get(run_id)
        return None if ledger is None else ledger.error

    def close(self) -> None:
        """No more records: the writer commits what is queued, then ends."""
        self._closed = True
        self._idle.unpark_all()
        self._hurry()

    def _put(self, item: Any) -> None:
        """Queue a parcel or a marker; wake the writer if it waits for one.

        Raises:
            trio.ClosedResourceError: the writer was closed (a bug in a caller).
        """
        if self._closed:
            msg = "the journal writer is closed"
            raise trio.ClosedResourceError(msg)
        self._queue.append(item)
        if self._idle:
            self._idle.unpark()
