"""A run's events for its readers: one shared ring, a cursor per reader.

The supervisor appends each event once to a bounded ring (O(1), whatever
the number of readers) and only while someone reads: with no reader, no
event is even built. A stage's move is kept as three items of the ring
(the state it entered, its name, the time), objects that exist already:
keeping it allocates nothing Python's collector tracks, so a run that is
followed sets off no collection over its graph. The event objects are
built from these items only for a reader that asks for them
(`Run.events`); the control API's feed encodes the items themselves.

Each reader (`EventStream`) keeps its own position in the ring. A reader
that falls behind by more than its ``buffer`` loses the oldest events it
has not read and is told how many, in order, by an `EventsLost` event. A
reader that stops (``break`` out of ``async for``, or simply dropping the
object) costs nothing: the run holds no reference to it, and its count of
readers drops when it is closed or collected.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeAlias, final

import attrs
import trio

from dagvisor.actors import StageState

if TYPE_CHECKING:
    from types import TracebackType

    from ._audit import AuditRecord

__all__ = [
    "EVENT",
    "ITEMS",
    "Event",
    "EventLog",
    "EventStream",
    "EventsLost",
    "GraphChanged",
    "RunEvent",
    "StageFinished",
    "StageQueued",
    "StageStarted",
    "as_event",
    "as_events",
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

ITEMS = 3
"""Items of the ring an event takes: a stage's move is the value of the
state it entered (``queued``: a `StageQueued`, ``running``: a
`StageStarted`, any other state: a `StageFinished`), the stage's name and
the time; any other event is `EVENT`, the event object and ``0.0``."""

EVENT = ""
"""The first item of an event kept as its object."""

_QUEUED = StageState.QUEUED.value
_RUNNING = StageState.RUNNING.value
_STATES = {state.value: state for state in StageState}


def as_event(state: str, what: Any, time: float) -> RunEvent:
    """The event kept as these `ITEMS` (its object built now for a stage's move)."""
    if state == EVENT:
        event: RunEvent = what
        return event
    if state == _RUNNING:
        return StageStarted(what, time)
    if state == _QUEUED:
        return StageQueued(what, time)
    return StageFinished(what, _STATES[state], time)


def as_events(kept: list[Any]) -> list[RunEvent]:
    """The events of what `EventLog.take` returned, oldest first."""
    return [as_event(*kept[i : i + ITEMS]) for i in range(0, len(kept), ITEMS)]


@final
class EventLog:
    """The recent events of one run (the supervisor writes, readers read)."""

    __slots__ = ("_lot", "_ring", "_waiting", "closed", "published", "readers")

    def __init__(self) -> None:
        self._ring: deque[Any] = deque(maxlen=ITEMS)
        """`ITEMS` an event, the newest on the right."""
        self._lot = trio.lowlevel.ParkingLot()
        self._waiting = 0
        """Readers parked in `_wait` now."""
        self.published = 0
        """Events published so far (a reader's cursor counts in these)."""
        self.readers = 0
        """Readers open now: the supervisor publishes only while there are some."""
        self.closed = False

    def publish(self, event: Event) -> None:
        """Append an event and wake the readers waiting for one (never blocks)."""
        self._ring.extend((EVENT, event, 0.0))
        self.published += 1
        if self._waiting:
            self._lot.unpark_all()

    def moved(self, stage: str, state: str, time: float) -> None:
        """Stage ``stage`` entered ``state`` (a `StageState`'s value) at ``time``:
        `publish` of its event, without building it (the hot path)."""
        # The tuple is freed at once: what stays is the three objects.
        self._ring.extend((state, stage, time))
        self.published += 1
        if self._waiting:
            self._lot.unpark_all()

    def close(self) -> None:
        """The run ended: readers get what is left, then the end of the stream."""
        self.closed = True
        self._lot.unpark_all()

    def subscribe(self, buffer: int) -> EventStream:
        """A new reader of the events published from now on."""
        if buffer * ITEMS > (self._ring.maxlen or 0):
            self._ring = deque(self._ring, maxlen=buffer * ITEMS)
        return EventStream(self, buffer)

    def _event(self, stream: EventStream) -> Event | None:
        """The next event for ``stream``, moving its cursor; None when it is up to date."""
        behind = self.published - stream._cursor
        if behind <= 0:
            return None
        ring = self._ring
        kept = min(stream._buffer, len(ring) // ITEMS)
        if behind > kept:
            lost = behind - kept
            stream._cursor += lost
            stream.lost += lost
            return EventsLost(lost)
        stream._cursor += 1
        at = len(ring) - behind * ITEMS
        return as_event(ring[at], ring[at + 1], ring[at + 2])

    def take(self, stream: EventStream) -> list[Any]:
        """The `ITEMS` of every event ``stream`` has not read, oldest first,
        moving its cursor (an `EventsLost` first if it fell behind); empty
        when it is up to date. `as_events` makes them event objects."""
        behind = self.published - stream._cursor
        if behind <= 0:
            return []
        kept = min(stream._buffer, len(self._ring) // ITEMS)
        lost = behind - kept
        if lost > 0:
            stream.lost += lost
            behind = kept
        stream._cursor = self.published
        ring = self._ring
        if self.readers == 1 and behind * ITEMS >= len(ring):
            # Its only reader takes all the ring holds: the items leave it
            # now, while this take has them at hand, rather than when the
            # supervisor's appends push them out, long after.
            taken = list(ring)
            ring.clear()
            if lost > 0:
                taken[:0] = (EVENT, EventsLost(lost), 0.0)
            return taken
        # From the right end: O(behind), however long the ring.
        taken = list(islice(reversed(ring), behind * ITEMS))
        if lost > 0:  # read first, after the reversal: one copy of the items
            taken += (0.0, EventsLost(lost), EVENT)
        taken.reverse()
        return taken

    async def _wait(self) -> None:
        self._waiting += 1
        try:
            await self._lot.park()
        finally:
            self._waiting -= 1


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

    def _take_all(self) -> list[Any]:
        """Every event available now, oldest first, as `EventLog.take` gives
        them (for readers that batch, and encode a stage's move themselves).

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
