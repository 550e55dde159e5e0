"""The journal writer's queue items and what it does with a transaction's outcome.

`Flush`, `TakeOver` and `Release` are what the writer's queue carries
besides the runs' records. `Outcomes` is the part of `JournalWriter` that
takes note of what a transaction did (leases owned, renewed or released,
the next sequence numbers) and tells the runs that must stop
(`JournalFailed`), also after a bug in the writer: nobody waits forever.
The writer's loop and the runs' side stay in `_writer`.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import attrs
import outcome
import trio

from dagvisor.actors import JournalError, JournalWriteError, LeaseLostError
from dagvisor.actors._messages import JournalFailed

from ._ledger import Committed, RunLedger

__all__ = ["Flush", "Outcomes", "Release", "TakeOver"]


@attrs.frozen(eq=False)
class Flush:
    """A marker in the writer's queue: ``done`` is set once everything before it
    is committed (or known not to be)."""

    done: trio.Event


@attrs.define(eq=False)
class TakeOver:
    """A request to take a run over from another runtime (`JournalWriter.take_over`)."""

    ledger: RunLedger
    done: trio.Event
    answer: outcome.Outcome[Literal["taken", "changed"]] | None = None


@attrs.frozen(eq=False)
class Release:
    """A request to give up a run's lease (`JournalWriter.forget`)."""

    ledger: RunLedger


class Outcomes:
    """How a `JournalWriter` takes note of its transactions (see the module docstring)."""

    # Set by JournalWriter.__init__.
    _ledgers: dict[str, RunLedger]
    _unnotified: list[RunLedger]

    def _fail(self, batch: list[Any], exc: Exception) -> None:
        """After a bug in the writer: the runs of ``batch`` fail, nobody waits forever."""
        reason = f"the journal writer failed ({type(exc).__name__}: {exc})"
        failed: dict[str, JournalWriteError] = {}
        for item in batch:
            if type(item) is tuple:
                for record in item[1]:
                    failed[record[0]] = JournalWriteError(record[0], reason)
            elif isinstance(item, TakeOver):
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
