"""The journal writer: the actor that commits every run's records, and owns their leases.

Runs hand their records to one `JournalWriter` per runtime, which commits
them in batches (group commit) in a worker thread. Its promises:

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
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs
import outcome
import trio

from dagvisor.actors import JournalError, JournalWriteError, LeaseLostError
from dagvisor.actors._messages import JournalFailed, Message

from ._batch import (
    Committed,
    Record,
    RunLedger,
    commit_batch,
    release_lease,
    take_run_over,
)
from ._lease import Owner

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._journal import Journal

__all__ = ["Flush", "JournalWriter", "RunLedger"]

_BATCH = 2048
# What the runs may have queued for the writer, in records and in bytes (an
# estimate: the encoded outputs and items, plus a flat share per record).
# Past either, a run's supervisor waits for the writer between messages:
# memory follows what the disk can take, not how far the runs ran ahead.
_QUEUED_RECORDS = 8 * _BATCH
_QUEUED_BYTES = 16 * 2**20
_RECORD_BYTES = 300


def _weight(record: Record | Flush) -> int:
    """Bytes a queued record is counted for (its encoded value, if any, plus a share)."""
    if type(record) is not tuple:
        return 0
    if record[0] == "event":
        output = record[4].get("output")
        if output is not None:
            return _RECORD_BYTES + len(output)
    return _RECORD_BYTES


@attrs.frozen(eq=False)
class Flush:
    """A marker in the writer's queue: ``done`` is set once everything before it
    is committed (or known not to be)."""

    done: trio.Event


@attrs.define(eq=False)
class _TakeOver:
    ledger: RunLedger
    done: trio.Event
    answer: outcome.Outcome[Literal["taken", "changed"]] | None = None


@attrs.frozen(eq=False)
class _Release:
    ledger: RunLedger


class JournalWriter:
    """The journal actor: batches records from runs and commits them in a thread.

    One per runtime; its `owner` identity is what the runtime's leases name.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.owner = Owner.of_this_runtime()
        self._send, self._receive = trio.open_memory_channel[Any](_QUEUED_RECORDS)
        self._queued_bytes = 0
        self._room = trio.lowlevel.ParkingLot()
        self._ledgers: dict[str, RunLedger] = {}
        self._unnotified: list[RunLedger] = []
        self._renew_every = journal.lease / 3
        self._next_renewal = math.inf

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
        if ledger.owned and not isinstance(ledger.error, LeaseLostError):
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._send.send_nowait(_Release(ledger))
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
        request = _TakeOver(self._ledgers[run_id], trio.Event())
        await self._send.send(request)
        await request.done.wait()
        assert request.answer is not None
        return request.answer.unwrap()

    def submit_nowait(self, record: Record | Flush) -> bool:
        """Queue a record if there is room; False if the caller must wait."""
        weight = _weight(record)
        if self._queued_bytes and self._queued_bytes + weight > _QUEUED_BYTES:
            return False
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            return False
        self._queued_bytes += weight
        return True

    async def submit(self, record: Record | Flush) -> None:
        """Queue a record, waiting for room (in records and in bytes)."""
        weight = _weight(record)
        while self._queued_bytes and self._queued_bytes + weight > _QUEUED_BYTES:
            await self._room.park()
        await self._send.send(record)
        self._queued_bytes += weight

    def _taken(self, batch: list[Any]) -> None:
        """The writer took ``batch`` off its queue: room for the runs again."""
        self._queued_bytes -= sum(
            _weight(item) for item in batch if type(item) is tuple
        )
        self._room.unpark_all()

    async def flush(self, run_id: str | None = None) -> JournalWriteError | None:
        """Wait until every record queued so far is committed, or cannot be.

        Returns why the records of run ``run_id`` could not all be committed,
        or None when every one of them is (or no run is named).
        """
        marker = Flush(trio.Event())
        try:
            await self._send.send(marker)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            if run_id is None:
                return None
            return JournalWriteError(run_id, "the runtime's journal writer has stopped")
        await marker.done.wait()
        ledger = None if run_id is None else self._ledgers.get(run_id)
        return None if ledger is None else ledger.error

    def error_of(self, run_id: str) -> JournalWriteError | None:
        """Why some records of run ``run_id`` could not be committed, if they could not."""
        ledger = self._ledgers.get(run_id)
        return None if ledger is None else ledger.error

    def close(self) -> None:
        """No more records: the writer commits what is queued, then ends."""
        self._send.close()

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
                while True:
                    try:  # busy: what came in while the last batch committed
                        item = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        item = None
                        with trio.move_on_at(self._next_renewal):
                            item = await self._receive.receive()
                        if item is None:
                            await self._commit([])  # renew the leases of idle runs
                            continue
                    batch = [item]
                    while len(batch) < _BATCH:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    try:
                        await self._process(batch)
                    except Exception as exc:  # a bug: fail what it concerns, go on
                        self._fail(batch, exc)
                    finally:
                        self._taken(batch)
            except trio.EndOfChannel:
                pass
            finally:
                await self._blocking(self.journal.close)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)``, which blocks on the file, off the event loop."""
        return await trio.to_thread.run_sync(fn, *args)

    async def _process(self, batch: list[Any]) -> None:
        records: list[Record] = []
        for item in batch:
            if type(item) is tuple:
                records.append(item)
                continue
            if records:
                await self._commit(records)
                records = []
            match item:
                case Flush(done=done):
                    done.set()
                case _TakeOver(ledger=ledger):
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
                case _Release(ledger=ledger):
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
            done = await self._blocking(
                commit_batch,
                self.journal,
                records,
                self._ledgers,
                self.owner,
                renewing,
            )
        except Exception as exc:  # a bug here must not end the runtime: fail the runs
            reason = f"the journal writer failed ({type(exc).__name__}: {exc})"
            done = Committed(
                failed={
                    record[1]: JournalWriteError(record[1], reason)
                    for record in records
                },
                ok=False,
            )
        self._apply(done)

    def _fail(self, batch: list[Any], exc: Exception) -> None:
        """After a bug in the writer: the runs of ``batch`` fail, nobody waits forever."""
        reason = f"the journal writer failed ({type(exc).__name__}: {exc})"
        failed: dict[str, JournalWriteError] = {}
        for item in batch:
            if type(item) is tuple:
                failed[item[1]] = JournalWriteError(item[1], reason)
            elif isinstance(item, _TakeOver):
                if item.answer is None:
                    error = JournalError(f"run {item.ledger.run_id!r}: {reason}")
                    item.answer = outcome.Error(error)
                item.done.set()
            elif isinstance(item, Flush):
                item.done.set()
        self._apply(Committed(failed=failed, ok=False))

    def _apply(self, done: Committed) -> None:
        """Take note of what a transaction did; tell the runs that must stop."""
        ledgers = self._ledgers
        for run_id in done.owned:
            if (ledger := ledgers.get(run_id)) is not None:
                ledger.owned = True
                ledger.expires = done.expires
        for run_id in done.released:
            if (ledger := ledgers.get(run_id)) is not None:
                ledger.owned = False
        for run_id, seq in done.next_seq.items():
            if (ledger := ledgers.get(run_id)) is not None:
                ledger.next_seq = seq
        for run_id in done.renewed:
            if (ledger := ledgers.get(run_id)) is not None:
                ledger.expires = done.expires
        failed = self._unnotified
        for run_id, error in done.failed.items():
            ledger = ledgers.get(run_id)
            if ledger is not None and ledger.error is None:
                ledger.error = error
                failed.append(ledger)
        if not done.ok:
            # Nothing was renewed (a locked file, say): a lease that ran out
            # meanwhile may be taken by another runtime, so its run stops.
            now = time.time()
            for ledger in ledgers.values():
                if ledger.owned and ledger.error is None and ledger.expires <= now:
                    ledger.error = LeaseLostError(
                        ledger.run_id, "its lease expired before it could be renewed"
                    )
                    failed.append(ledger)
        if failed:
            self._unnotified = [ledger for ledger in failed if not self._notify(ledger)]

    def _notify(self, ledger: RunLedger) -> bool:
        """Tell a run to stop; False if its inbox is full (tried again later)."""
        assert ledger.error is not None
        if ledger.outbox is None:
            return True
        try:
            ledger.outbox.send_nowait(JournalFailed(ledger.error))
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the run has ended: its flush reports the error
        return True
