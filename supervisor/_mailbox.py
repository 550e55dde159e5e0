"""A run's signal mailbox: the signals sent and not yet taken, and who waits.

Owned by the run's supervisor, which calls it between messages: synchronous,
free of trio and of user code (it holds each payload as the JSON text its
sender made). A signal is given to the stage that waits longest for its
name, else kept, first in, first out. What a stage took is held for the
attempt until the stage ends: kept for good when it succeeded, put back at
the front of the mailbox when the attempt failed (before a retry), the
stage failed or was cancelled, or its wait was withdrawn after the answer.

With a journal, each signal is written whole when sent (``signal``), and
each time a stage takes one or gives one back (``signal_taken``,
``signal_returned``): a resume keeps in the mailbox every signal not held by
a stage that succeeded (see ``_replay``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, final

import outcome

from dagvisor.actors import RunClosedError, StageState

from ._audit import AuditRecord
from ._events import GraphChanged

if TYPE_CHECKING:
    from collections.abc import Iterable

    from dagvisor.actors._errors import DagvisorError
    from dagvisor.actors._signal_messages import SendSignal, Signal, WaitSignal

    from ._core import RunCore
    from ._graph import Node

__all__ = ["Mailbox"]

RUNNING = StageState.RUNNING
QUEUED = StageState.QUEUED


@final
class Mailbox:
    """The signals of one run (its supervisor's; see the module docstring)."""

    __slots__ = ("_core", "_kept", "_waiters", "held")

    def __init__(self, core: RunCore, kept: Iterable[Signal] = ()) -> None:
        self._core = core
        self._kept: dict[str, deque[Signal]] = {}
        self._waiters: dict[str, deque[WaitSignal]] = {}
        self.held: dict[Node, list[tuple[Signal, WaitSignal]]] = {}
        """What each running stage took (empty for nearly every run: tested first)."""
        for signal in kept:
            self._kept.setdefault(signal[1], deque()).append(signal)

    def pending(self, name: str) -> int:
        """How many signals ``name`` wait for a stage to take them."""
        kept = self._kept.get(name)
        return 0 if kept is None else len(kept)

    def waiting(self, name: str) -> int:
        """How many waits for ``name`` are registered (some may be stale)."""
        waiters = self._waiters.get(name)
        return 0 if waiters is None else len(waiters)

    # -- requests -------------------------------------------------------------------

    def send(self, request: SendSignal) -> None:
        """Audit the signal, keep it, give it to a waiter if one waits; answer."""
        if request.refused is not None:
            self.refuse(request, request.refused)
            return
        record = self._record(request, None)
        signal = (record.seq, request.name, request.text)
        records = self._core.records
        if records is not None:
            records.signal(record, request.text)
        request.reply.send_nowait(outcome.Value(None))
        self._kept.setdefault(request.name, deque()).append(signal)
        self._pump(request.name)

    def refuse(self, request: SendSignal, error: DagvisorError) -> None:
        """Audit and answer a signal that is refused (the run is ending)."""
        record = self._record(request, error)
        records = self._core.records
        if records is not None:
            records.signal(record, None)
        request.reply.send_nowait(outcome.Error(error))

    def wait(self, request: WaitSignal) -> None:
        """Answer with the oldest signal of its name, or register the wait."""
        self._waiters.setdefault(request.name, deque()).append(request)
        self._pump(request.name)

    def withdraw(self, request: WaitSignal) -> None:
        """A waiter was cancelled: drop its wait, or put back what it was given."""
        waiters = self._waiters.get(request.name)
        if waiters is not None and request in waiters:
            waiters.remove(request)
            if not waiters:
                del self._waiters[request.name]
            return
        node: Node = request.token  # type: ignore[assignment]  # a stage's token is its node
        held = self.held.get(node)
        if not held:
            return
        for position, (signal, taker) in enumerate(held):
            if taker is request:
                del held[position]
                if not held:
                    del self.held[node]
                self._give_back(node, [signal])
                return

    def returned(self, node: Node) -> None:
        """An attempt of ``node`` failed and is retried: what it took goes back."""
        held = self.held.pop(node, None)
        if held:
            self._give_back(node, [signal for signal, _ in held])

    def ended(self, node: Node, succeeded: bool) -> None:
        """``node`` ended: what it took is consumed if it succeeded, else goes back."""
        held = self.held.pop(node, None)
        if held and not succeeded:
            self._give_back(node, [signal for signal, _ in held])

    def close(self) -> None:
        """The run ends: every wait still registered is answered with `RunClosedError`."""
        error = RunClosedError(self._core.run_id)
        for waiters in self._waiters.values():
            for request in waiters:
                if not request.reply.answered:
                    request.reply.send_nowait(outcome.Error(error))
        self._waiters.clear()

    # -- inside ---------------------------------------------------------------------

    def _give_back(self, node: Node, signals: list[Signal]) -> None:
        records = self._core.records
        names = set()
        for signal in reversed(signals):  # the first taken ends up first
            if records is not None:
                records.signal_moved("signal_returned", signal[0], node.name)
            self._kept.setdefault(signal[1], deque()).appendleft(signal)
            names.add(signal[1])
        for name in names:
            self._pump(name)

    def _pump(self, name: str) -> None:
        """Give the kept signals of ``name`` to its waiters, oldest to oldest."""
        kept = self._kept.get(name)
        waiters = self._waiters.get(name)
        while kept and waiters:
            request = waiters.popleft()
            node: Node = request.token  # type: ignore[assignment]  # see withdraw
            if request.reply.answered or (
                node.state is not RUNNING and node.state is not QUEUED
            ):
                continue  # a stage that has ended: never told, it takes nothing
            signal = kept.popleft()
            self.held.setdefault(node, []).append((signal, request))
            records = self._core.records
            if records is not None:
                records.signal_moved("signal_taken", signal[0], node.name)
            request.reply.send_nowait(outcome.Value(signal[2]))
        if not kept:
            self._kept.pop(name, None)
        if not waiters:
            self._waiters.pop(name, None)

    def _record(self, request: SendSignal, error: DagvisorError | None) -> AuditRecord:
        core = self._core
        record = AuditRecord(
            seq=core.audit.next_seq,
            run_id=core.run_id,
            kind="signal",
            requester=request.requester,
            reason=request.reason,
            accepted=error is None,
            version_before=core.version,
            version_after=core.version,
            wall_time=time.time(),
            monotonic_time=core.now(),
            error_type=None if error is None else type(error).__name__,
            error=None if error is None else str(error),
            signal=request.name,
            carried=request.summary,
        )
        core.audit.append(record)
        if core.events.readers:
            core.events.publish(GraphChanged(record))
        return record
