"""The run's end: stopping it, closing its inbox, settling what is left.

`RunEnd` is the part of `GraphSupervisor` that ends a run: `_stop` begins
the end (no new stage starts, the running ones are cancelled), `_close` is
the one way out, also when the supervisor itself failed: every request
still waiting is answered, the inbox and the mailbox are closed, every
stage still unfinished is settled, and the journal gets the run's end and
what stopped it. `host_stages` holds the stage actors' nursery and wakes
the supervisor once the last actor has ended. Nothing here is on a stage's
path: the message loop and its dispatch stay in `_supervisor`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

import outcome
import trio

from dagvisor.actors import InternalError, RunClosedError, StageState
from dagvisor.actors._messages import (
    AttemptFailed,
    AttemptStarted,
    FlushJournal,
    JournalFailed,
    SendSignal,
    SignalsReturned,
    SlotTaken,
    StageCancelled,
    StageFailed,
    StagesEnded,
    StageSkipped,
    StageSucceeded,
    WaitSignal,
    WithdrawWait,
)

if TYPE_CHECKING:
    from dagvisor.actors._env import RunEnv
    from dagvisor.actors._messages import Message

    from ._changes import Changes
    from ._core import RunCore
    from ._events import EventLog
    from ._mailbox import Mailbox

__all__ = ["RunEnd"]

CANCELLED = StageState.CANCELLED

_OUTCOMES = (
    StageSucceeded,
    StageFailed,
    StageCancelled,
    StageSkipped,
    AttemptFailed,
    AttemptStarted,
    SlotTaken,
    StagesEnded,
    JournalFailed,
    FlushJournal,
    WithdrawWait,
    SignalsReturned,
)


class RunEnd:
    """How a `GraphSupervisor` ends its run (see the module's docstring)."""

    # Set by GraphSupervisor.__init__.
    run_id: str
    errors: dict[str, BaseException]
    status: Literal["running", "succeeded", "failed", "cancelled"]
    ended_at: float | None
    core: RunCore
    events: EventLog
    mailbox: Mailbox
    _cancel_reason: str | None
    _stopped_early: bool
    _env: RunEnv
    _inbox: trio.MemoryReceiveChannel[Message]
    _nursery: trio.Nursery | None
    _stages_closed: trio.Event
    _stopping: bool
    _closed: bool
    _changes: Changes

    def _handle(self, message: Message) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def host_stages(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        """Hold the nursery that stage actors run in (its scope is the run's).

        Ends when the supervisor cancels it, after every actor has ended.
        """
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()
        finally:
            self._stages_closed.set()
            # Wake the supervisor, which keeps serving its inbox meanwhile.
            # If the inbox is full it is awake anyway; if closed, the run ended.
            with contextlib.suppress(
                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                self._env.outbox.send_nowait(StagesEnded())

    def _drain(self) -> None:
        """Handle what is queued without waiting (after every actor ended)."""
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._handle(message)

    def _close(self) -> None:
        """End the run: answer every request, close the inbox, settle every stage.

        Also the way out when the supervisor itself failed (a bug): then the
        request it was serving is answered with `InternalError`, queued ones
        with `RunClosedError`, and stages are settled even if settling one
        fails again. Nobody waits forever for an answer.
        """
        core = self.core
        now = trio.current_time()
        self._stopping = True
        self._closed = True
        serving, self._changes.serving = self._changes.serving, None
        if serving is not None and not serving.reply.answered:
            msg = "the run ended on a failure of dagvisor while serving this request; please report it"
            serving.reply.send_nowait(outcome.Error(InternalError(msg)))
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(message, FlushJournal):
                self._handle(message)  # its marker goes out with the last records
            elif isinstance(message, SendSignal | WaitSignal):
                self._refuse_signal(message)
            elif not isinstance(message, _OUTCOMES):
                try:
                    self._changes.refuse_closed(message)
                except Exception:  # not even the audit: still answer
                    if not message.reply.answered:
                        error = RunClosedError(self.run_id)
                        message.reply.send_nowait(outcome.Error(error))
        self._inbox.close()
        self.mailbox.close()
        if core.unfinished:
            for node in list(core.graph):
                if not node.state.is_terminal:
                    try:
                        core.finish(node, CANCELLED, now)
                    except Exception:  # settled without its effects: the run is over
                        node.state = CANCELLED
                        node.finished = now
        core.ready.clear()
        if self.status == "running":
            self.status = "failed" if self.errors else "succeeded"
        self.ended_at = now
        if core.records is not None:
            core.records.end(self.status, *self._stopped_by())
        self.events.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _stopped_by(self) -> tuple[str | None, str]:
        """What stopped the run before it finished, for its journal."""
        if self.status == "succeeded":
            return None, ""
        if self.status == "failed":
            if not self._stopped_early:  # every stage ran: nothing was cut short
                return None, ""
            return (
                "failure",
                "a stage failed, and the run was stopped (on_failure='cancel')",
            )
        if self._cancel_reason is not None:
            return "cancel", self._cancel_reason
        return "closed", (
            "the run's task was cancelled: its runtime() block was left while "
            "it ran, or the caller of rt.run was cancelled"
        )

    def _stop(self, status: Literal["failed", "cancelled"]) -> None:
        """Begin ending the run: no new stage starts, running ones are cancelled."""
        if self._stopping:
            return
        self._stopping = True
        self._stopped_early = True
        self.status = status
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def _refuse_signal(self, message: SendSignal | WaitSignal) -> None:
        """The run is ending: a signal is refused (and audited), a wait answered."""
        error = RunClosedError(self.run_id)
        if isinstance(message, SendSignal):
            self.mailbox.refuse(message, error)
        elif not message.reply.answered:
            message.reply.send_nowait(outcome.Error(error))
