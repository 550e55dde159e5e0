"""The reply slot a request carries: where the supervisor puts its one answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import trio

if TYPE_CHECKING:
    import outcome

__all__ = ["ReplySlot"]


@final
class ReplySlot:
    """Where the supervisor puts its answer to one request: filled once, read once.

    It plays the part of a memory channel with a buffer of one, minus what
    this one-shot use does not need. Answering never blocks and never fails,
    even when the requester was cancelled and went away: a late answer is
    simply dropped. (A channel whose receiver closed would raise
    ``BrokenResourceError`` into the supervisor instead.) A requester
    already waiting is woken with the answer itself, which its wait
    returns or raises; the slot is its own abort function while a
    requester waits (see `trio.lowlevel.wait_task_rescheduled`). Nothing is
    made per request but the slot and the answer: thousands of requests
    may wait at once, and each object they hold is one more for Python's
    cyclic collector to walk.
    """

    __slots__ = ("_answer", "_waiter", "answered")

    def __init__(self) -> None:
        self._answer: outcome.Outcome[Any] | None = None
        self._waiter: trio.lowlevel.Task | None = None
        self.answered = False
        """Whether the answer has been given."""

    def send_nowait(self, answer: outcome.Outcome[Any]) -> None:
        """Give the answer (the supervisor's side; never waits)."""
        if self.answered:
            msg = "a request was answered twice"
            raise RuntimeError(msg)
        self.answered = True
        waiter = self._waiter
        if waiter is None:
            self._answer = answer  # read when the requester comes to wait
        else:
            self._waiter = None
            trio.lowlevel.reschedule(waiter, answer)

    async def wait(self) -> Any:
        """Wait for the answer (the requester's side; a checkpoint): its value,
        or the error it carries, raised."""
        if not self.answered:
            self._waiter = trio.lowlevel.current_task()
            return await trio.lowlevel.wait_task_rescheduled(self)
        await trio.lowlevel.checkpoint()
        assert self._answer is not None
        return self._answer.unwrap()

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        """The waiting requester is cancelled: it waits no more (a late answer is dropped)."""
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED
