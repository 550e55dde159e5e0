"""A run's events as the body of a ``text/event-stream`` answer (server-sent events).

Each event is ``event: KIND`` and ``data: JSON`` (`event_form`), after an
opening comment, and a last ``end`` event with the run's summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import trio

from ._forms import dumps, event_form, run_summary

if TYPE_CHECKING:
    from .._run import Run

__all__ = ["EventBody"]


@final
class EventBody:
    """A run's events as the body of a ``text/event-stream`` answer, until it ends.

    The run never waits for this reader: one that falls more than
    ``buffer`` events behind (a slow or stuck client) loses the oldest
    and is told how many in a `lost` event. An iterator object, not an
    async generator: a client that goes away mid-stream, or a runtime that
    ends while one reads, leaves no generator for the collector to close.
    """

    __slots__ = ("_run", "_step", "_stream")

    def __init__(self, run: Run, buffer: int) -> None:
        self._run = run
        self._stream = run.events(buffer=buffer)
        self._step = 0  # 0: the opening comment, 1: events, 2: the end, 3: done

    def __aiter__(self) -> EventBody:
        return self

    async def __anext__(self) -> bytes:
        if self._step == 0:
            self._step = 1
            await trio.lowlevel.checkpoint()
            return b": the events of one run, until it ends\n\n"
        if self._step == 1:
            try:
                event = await self._stream.receive()
            except trio.EndOfChannel:
                self._step = 2
            else:
                kind, data = event_form(event)
                return (
                    b"event: "
                    + kind.encode("ascii")
                    + b"\ndata: "
                    + dumps(data)
                    + b"\n\n"
                )
        if self._step == 2:
            await self._run._done.wait()
            self._step = 3
            return b"event: end\ndata: " + dumps(run_summary(self._run)) + b"\n\n"
        self._stream.close()
        raise StopAsyncIteration
