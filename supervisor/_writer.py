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
`GATHER_RECORDS` are queued, `GATHER_SECONDS` after the first of them at
the latest (never past a lease renewal), and at once when a run starts,
resumes or ends, or someone waits for it (a flush, a take-over, a
release). A busy run thus commits about a hundred times a second, not once
a stage; what a crash can lose is what was queued since the last commit,
as before (stages never wait for the journal).

What the runs call (the queue) is `_writer_queue`'s; the queue's other
items and taking note of a transaction's outcome are `_writer_outcomes`'s.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import outcome
import trio

from dagvisor.actors import JournalError, JournalWriteError

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
from ._writer_queue import BATCH, GATHER_RECORDS, GATHER_SECONDS, WriterQueue

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._journal import Journal

logger = logging.getLogger("dagvisor")

# Flush and RunLedger are importable from here too.
__all__ = ["Flush", "JournalWriter", "RunLedger"]


class JournalWriter(WriterQueue, Outcomes):
    """The journal actor: batches records from runs and commits them in its worker.

    One per runtime; its `owner` identity is what the runtime's leases name.
    What the runs call is `WriterQueue`'s; this is the actor that empties it.
    """

    def __init__(
        self, journal: Journal, worker: WriterThread | WriterProcess | None = None
    ) -> None:
        super().__init__()
        self.journal = journal
        self._worker = WriterThread() if worker is None else worker
        """Where the transactions run (`_writer_process`)."""
        self.owner = Owner.of_this_runtime()
        self._unnotified: list[RunLedger] = []
        self._renew_every = journal.lease / 3
        self._next_renewal = math.inf
        self._unindexed: list[str] = []
        """Runs whose end is committed, to index after the batch (`index_runs`)."""

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
                try:
                    await self._blocking(close_journal, self.journal)
                except Exception:  # every record was committed or its run told
                    logger.warning("the journal could not be closed", exc_info=True)
                finally:
                    await self._worker.aclose()

    def _next_batch(self) -> tuple[list[Any], int, int]:
        """Take the oldest items off the queue, about `BATCH` records at most:
        the items, and the records and bytes they hold."""
        queue = self._queue
        if self._queued_records <= BATCH:  # the common case: take it all
            self._queue = []
            return queue, self._queued_records, self._queued_bytes
        records = weight = taken = 0
        for item in queue:
            taken += 1
            if type(item) is tuple:
                records += len(item[1])
                weight += item[0]
            if records >= BATCH:
                break
        batch = queue[:taken]
        del queue[:taken]
        return batch, records, weight

    async def _gather(self) -> None:
        """Let more records pile up while the runs are busy (see the module docstring)."""
        if self._urgent or self._queued_records >= GATHER_RECORDS:
            return
        # Never past a renewal: a lease is renewed in time however long its
        # run's records wait (a batch renews what is due).
        until = min(trio.current_time() + GATHER_SECONDS, self._next_renewal)
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
            # A run whose records can no longer be committed gets none
            # committed: its ledger does not cross (the worker sees no books).
            concerned = {
                run_id: ledger
                for run_id in {record[0] for record in records}
                if (ledger := ledgers.get(run_id)) is not None and ledger.error is None
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
