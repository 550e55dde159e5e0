"""A run's events for its readers: one shared ring, a cursor per reader.

The supervisor appends each event once to a bounded ring (O(1), whatever
the number of readers) and only while someone reads: with no reader, no
event is even built. Each reader (`EventStream`) keeps its own position in
the ring. A reader that falls behind by more than its ``buffer`` loses the
oldest events it has not read and is told how many, in order, by an
`EventsLost` event. A reader that stops (``break`` out of ``async for``,
or simply dropping the object) costs nothing: the run holds no reference
to it, and its count of readers drops when it is closed or collected.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, TypeAlias, final

import attrs
import trio

if TYPE_CHECKING:
    from types import TracebackType

    from dagvisor.actors import StageState

    from ._audit import AuditRecord

__all__ = [
    "Event",
    "EventLog",
    "EventStream",
    "EventsLost",
    "GraphChanged",
    "RunEvent",
    "StageFinished",
    "StageQueued",
    "StageStarted",
]


@final
@attrs.frozen
class StageQueued:
    """A stage's actor was started and waits for room to run (a thread, a
    worker process, a Dask slot, a named limit): the stage is ``queued``."""

    stage: str
    time: float


@final
@attrs.frozen
class StageStarted:
    """A stage began to run: its first attempt has its room (after a
    `StageQueued`), or, for an ``async def`` stage without a limit, its
    actor was started."""

    stage: str
    time: float


@final
@attrs.frozen
class StageFinished:
    """A stage reached a terminal state."""

    stage: str
    state: StageState
    time: float


@final
@attrs.frozen
class GraphChanged:
    """A change request was applied or refused, or a signal sent (see its record)."""

    record: AuditRecord


@final
@attrs.frozen
class EventsLost:
    """This reader fell behind and lost ``count`` events, just before the next one."""

    count: int


RunEvent: TypeAlias = (
    StageQueued | StageStarted | StageFinished | GraphChanged | EventsLost
)
"""What `Run.events` yields."""

Event: TypeAlias = RunEvent
"""The former name of `RunEvent` (which does not read like ``trio.Event``)."""


@final
class EventLog:
    """The recent events of one run (the supervisor writes, readers read)."""

    __slots__ = ("_lot", "_ring", "closed", "published", "readers")

    def __init__(self) -> None:
        self._ring: deque[Event] = deque(maxlen=1)
        self._lot = trio.lowlevel.ParkingLot()
        self.published = 0
        """Events published so far (a reader's cursor counts in these)."""
        self.readers = 0
        """Readers open now: the supervisor publishes only while there are some."""
        self.closed = False

    def publish(self, event: Event) -> None:
        """Append an event and wake the readers waiting for one (never blocks)."""
        self._ring.append(event)
        self.published += 1
        if self._lot:
            self._lot.unpark_all()

    def close(self) -> None:
        """The run ended: readers get what is left, then the end of the stream."""
        self.closed = True
        self._lot.unpark_all()

    def subscribe(self, buffer: int) -> EventStream:
        """A new reader of the events published from now on."""
        if buffer > (self._ring.maxlen or 0):
            self._ring = deque(self._ring, maxlen=buffer)
        return EventStream(self, buffer)

    def _event(self, stream: EventStream) -> Event | None:
        """The next event for ``stream``, moving its cursor; None when it is up to date."""
        behind = self.published - stream._cursor
        if behind <= 0:
            return None
        kept = min(stream._buffer, len(self._ring))
        if behind > kept:
            lost = behind - kept
            stream._cursor += lost
            stream.lost += lost
            return EventsLost(lost)
        stream._cursor += 1
        return self._ring[len(self._ring) - behind]

    def take(self, stream: EventStream) -> list[Event]:
        """Every event ``stream`` has not read, oldest first, moving its cursor
        (an `EventsLost` first if it fell behind); empty when it is up to date."""
        behind = self.published - stream._cursor
        if behind <= 0:
            return []
        taken: list[Event] = []
        kept = min(stream._buffer, len(self._ring))
        if behind > kept:
            lost = behind - kept
            stream.lost += lost
            taken.append(EventsLost(lost))
            behind = kept
        stream._cursor = self.published
        # From the right end: O(behind), however long the ring.
        newest = list(islice(reversed(self._ring), behind))
        newest.reverse()
        taken += newest
        return taken

    async def _wait(self) -> None:
        await self._lot.park()


@final
class EventStream:
    """The events of a run, from when it was asked for: ``async for event in run.events()``.

    Yields `StageQueued`, `StageStarted`, `StageFinished` and `GraphChanged` events in the
    order they happened, and `EventsLost` where this reader fell more than
    ``buffer`` events behind; ends when the run has ended and every event
    kept for it was read. Not constructed by users (see `Run.events`).

    Attributes:
        lost: how many events this reader has lost so far.
    """

    __slots__ = ("__weakref__", "_buffer", "_closed", "_cursor", "_log", "lost")

    def __init__(self, log: EventLog, buffer: int) -> None:
        self._log = log
        self._buffer = buffer
        self._cursor = log.published
        self._closed = False
        self.lost = 0
        log.readers += 1

    def close(self) -> None:
        """Stop reading: the run forgets this reader (also done when it is collected)."""
        if not self._closed:
            self._closed = True
            self._log.readers -= 1

    def __del__(self) -> None:
        self.close()

    async def aclose(self) -> None:
        """`close`, as an async method (for ``contextlib.aclosing``)."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def receive_nowait(self) -> Event:
        """The next event if there is one.

        Raises:
            trio.WouldBlock: none yet.
            trio.EndOfChannel: the run ended and every event was read (or the
                reader was closed).
        """
        if self._closed:
            raise trio.EndOfChannel
        event = self._log._event(self)
        if event is not None:
            return event
        if self._log.closed:
            self.close()
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def _take_all(self) -> list[Event]:
        """Every event available now, oldest first (for readers that batch).

        Raises:
            trio.EndOfChannel: as `receive_nowait`.
        """
        if not self._closed:
            taken = self._log.take(self)
            if taken:
                return taken
            if not self._log.closed:
                return taken
            self.close()
        raise trio.EndOfChannel

    async def receive(self) -> Event:
        """Wait for the next event (see `receive_nowait` for the end)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._log._wait()  # cancellable: nothing taken yet
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
