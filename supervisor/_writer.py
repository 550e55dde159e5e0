"""The journal writer: the actor that commits every run's records, and owns their leases.

Runs hand their records to one `JournalWriter` per runtime, which commits
them in batches (group commit) in its worker: a process of its own by
default, or a thread (see `_writer_process`). Its promises:

* A run's records are committed in order, each batch in one transaction,
  or not at all: a batch that fails leaves nothing of itself behind, and a
  run whose records could not be committed gets no later record committed
  either, so the journal always holds a prefix of each run that a resume
  can go on from. The run is told (`JournalFailed`) and stops; its flush
  returns the `JournalWriteError`, which its ``wait()`` raises.
* Records of one run cannot fail another (see `_batch`). A record the
  journal cannot store fails its run; a locked, full or broken file fails
  the runs whose records the batch carried. A locked file is retried with
  backoff first (`Journal.busy_timeout`).
* Every batch fences: a run's records are committed only in a transaction
  that finds this runtime's nonce on the run's lease (read inside the write
  transaction, so nobody can take the run before it commits). Leases are
  renewed every third of their length, with a batch or on their own. A run
  whose lease another runtime took is stopped with `LeaseLostError`.
* The writer never raises into the runtime: whatever goes wrong is routed
  to the runs it concerns.

Runs ship their records in parcels (the records of one message handled,
or of a few). A transaction costs much more than a record, so the writer
lets records pile up into one batch for a while: it commits once
`_GATHER_RECORDS` are queued, `_GATHER_SECONDS` after the first of them at
the latest (never past a lease renewal), and at once when a run starts,
resumes or ends, or someone waits for it (a flush, a take-over, a
release). A busy run thus commits about a hundred times a second, not once
a stage; what a crash can lose is what was queued since the last commit,
as before (stages never wait for the journal).

The queue's other items and taking note of a transaction's outcome are
`_writer_outcomes`'s.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

import outcome
import trio

from dagvisor.actors import JournalError, JournalWriteError, LeaseLostError

from ._batch import (
    Record,
    close_journal,
    commit_batch,
    index_runs,
    release_lease,
    take_run_over,
)
from ._lease import Owner
from ._ledger import Committed, RunLedger
from ._writer_outcomes import Flush, Outcomes, Release, TakeOver
from ._writer_process import WriterProcess, WriterThread

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagvisor.actors._messages import Message

    from ._journal import Journal

# Flush and RunLedger are importable from here too.
__all__ = ["Flush", "JournalWriter", "RunLedger"]

_BATCH = 2048
# What the runs may have queued for the writer, in records and in bytes (an
# estimate: the encoded outputs and items, plus a flat share per record).
# Past either, a run's supervisor waits for the writer between messages:
# memory follows what the disk can take, not how far the runs ran ahead.
_QUEUED_RECORDS = 8 * _BATCH
_QUEUED_BYTES = 16 * 2**20
# A busy loop's records are gathered into one batch until this many are
# queued, or for this long at most (see the module docstring).
_GATHER_RECORDS = 512
_GATHER_SECONDS = 0.01


class JournalWriter(Outcomes):
    """The journal actor: batches records from runs and commits them in its worker.

    One per runtime; its `owner` identity is what the runtime's leases name.
    """

    def __init__(
        self, journal: Journal, worker: WriterThread | WriterProcess | None = None
    ) -> None:
        self.journal = journal
        self._worker = WriterThread() if worker is None else worker
        """Where the transactions run (`_writer_process`)."""
        self.owner = Owner.of_this_runtime()
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
        self._unnotified: list[RunLedger] = []
        self._renew_every = journal.lease / 3
        self._next_renewal = math.inf
        self._unindexed: list[str] = []
        """Runs whose end is committed, to index after the batch (`index_runs`)."""

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
            queued + len(records) > _QUEUED_RECORDS
            or self._queued_bytes + weight > _QUEUED_BYTES
        ):
            return False
        self._put((weight, records))
        # `_queued`, inlined: once or twice a stage.
        self._queued_records = queued = queued + len(records)
        self._queued_bytes += weight
        if records[0][1] is None:
            self._hurry()  # a run starts, resumes or ends (see `_queued`)
        elif self._gathering is not None and queued >= _GATHER_RECORDS:
            self._gathering.cancel()  # enough for a batch: commit it now
        return True

    async def submit(self, records: list[Record], weight: int) -> None:
        """Queue a parcel of records, waiting for room (in records and in bytes)."""
        while self._queued_records and (
            self._queued_records + len(records) > _QUEUED_RECORDS
            or self._queued_bytes + weight > _QUEUED_BYTES
        ):
            await self._room.park()
        self._put((weight, records))
        self._queued(records, weight)

    def mark_nowait(self, done: trio.Event) -> bool:
        """Queue a `Flush` marker for ``done`` if there is room; False if the caller
        must wait (see `mark`)."""
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
        elif self._gathering is not None and self._queued_records >= _GATHER_RECORDS:
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

    # -- the actor -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[JournalWriter]) -> None:
        """Commit what arrives until `close`; the file is opened when first needed.

        Shielded from cancellation: it must outlive every run, whose last
        records it commits, and it ends once `close` was called.
        """
        self._next_renewal = trio.current_time() + self._renew_every
        task_status.started(self)
        with trio.CancelScope(shield=True):
            try:
                while self._queue or not self._closed:
                    if not self._queue:  # idle: wait for work, or a lease to renew
                        with trio.move_on_at(self._next_renewal):
                            await self._idle.park()
                        if not self._queue:
                            await self._commit([])  # renew the leases of idle runs
                            continue
                    if type(self._queue[0]) is tuple:
                        await self._gather()
                    self._urgent = False
                    batch, records, weight = self._next_batch()
                    try:
                        await self._process(batch)
                    except Exception as exc:  # a bug: fail what it concerns, go on
                        self._fail(batch, exc)
                    finally:
                        self._taken(records, weight)
            finally:
                await self._blocking(close_journal, self.journal)
                await self._worker.aclose()

    def _next_batch(self) -> tuple[list[Any], int, int]:
        """Take the oldest items off the queue, about `_BATCH` records at most:
        the items, and the records and bytes they hold."""
        queue = self._queue
        if self._queued_records <= _BATCH:  # the common case: take it all
            self._queue = []
            return queue, self._queued_records, self._queued_bytes
        records = weight = taken = 0
        for item in queue:
            taken += 1
            if type(item) is tuple:
                records += len(item[1])
                weight += item[0]
            if records >= _BATCH:
                break
        batch = queue[:taken]
        del queue[:taken]
        return batch, records, weight

    async def _gather(self) -> None:
        """Let more records pile up while the runs are busy (see the module docstring)."""
        if self._urgent or self._queued_records >= _GATHER_RECORDS:
            return
        # Never past a renewal: a lease is renewed in time however long its
        # run's records wait (a batch renews what is due).
        until = min(trio.current_time() + _GATHER_SECONDS, self._next_renewal)
        with trio.move_on_at(until) as self._gathering:
            await trio.sleep_forever()
        self._gathering = None

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)``, which blocks on the file, in the writer's worker.

        Once the writer's process has stopped, a lease is still given up and
        the file closed, from a thread of this process: this process lives
        on, so its runs' leases would otherwise keep them from being resumed
        until they expire.
        """
        try:
            return await self._worker.call(fn, *args)
        except JournalError:
            if fn is not release_lease and fn is not close_journal:
                raise
            if type(self._worker) is WriterThread:
                raise
        return await trio.to_thread.run_sync(fn, *args)

    async def _process(self, batch: list[Any]) -> None:
        records: list[Record] = []
        for item in batch:
            if type(item) is tuple:
                records += item[1]
                continue
            if records:
                await self._commit(records)
                records = []
            match item:
                case Flush(done=done):
                    done.set()
                case TakeOver(ledger=ledger):
                    item.answer = await outcome.acapture(
                        self._blocking, take_run_over, self.journal, ledger, self.owner
                    )
                    if (
                        isinstance(item.answer, outcome.Value)
                        and item.answer.value == "taken"
                    ):
                        ledger.owned = True
                        ledger.expires = time.time() + self.journal.lease
                    item.done.set()
                case Release(ledger=ledger):
                    if self._ledgers.get(ledger.run_id) is ledger:
                        del self._ledgers[ledger.run_id]
                    await self._blocking(
                        release_lease, self.journal, ledger.run_id, self.owner
                    )
                case _:  # pragma: no cover - a bug in a sender
                    msg = f"unknown item for the journal writer: {item!r}"
                    raise AssertionError(msg)
        if records:
            await self._commit(records)
        if self._unindexed:
            # After the batch's flushes are set: a run waits for its end to be
            # committed, never for its index (see `_stage_index`).
            ended, self._unindexed = self._unindexed, []
            await self._blocking(index_runs, self.journal, ended)

    async def _commit(self, records: list[Record]) -> None:
        renewing: list[RunLedger] = []
        if trio.current_time() >= self._next_renewal:
            self._next_renewal = trio.current_time() + self._renew_every
            renewing = [
                ledger
                for ledger in self._ledgers.values()
                if ledger.owned and ledger.error is None
            ]
        if not records and not renewing:
            return  # nothing to write or renew: the file is not touched
        try:
            ledgers = self._ledgers
            # Only the ledgers the transaction looks up cross to the worker.
            concerned = {
                run_id: ledgers[run_id]
                for run_id in {record[0] for record in records}
                if run_id in ledgers
            }
            done = await self._blocking(
                commit_batch, self.journal, records, concerned, self.owner, renewing
            )
        except Exception as exc:  # a bug here must not end the runtime: fail the runs
            reason = f"the journal writer failed ({type(exc).__name__}: {exc})"
            done = Committed(
                failed={
                    record[0]: JournalWriteError(record[0], reason)
                    for record in records
                },
                ok=False,
            )
        self._apply(done)
        self._unindexed += [
            run_id for run_id in done.ended if run_id not in done.failed
        ]
