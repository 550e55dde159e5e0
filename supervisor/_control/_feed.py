"""A run's event stream as server-sent events: encoded once, sent in batches.

However many clients follow a run, the run has one reader (a `Feed`), and
each event is encoded once, into a bounded ring of text shared by the
clients. Each client keeps its own position in that ring and is sent what
gathered since its last write as one batch, at most every `PACE` seconds,
so that what a client costs grows with the time it follows the run, not
with the number of events. Nothing here runs on the supervisor's task: the
run publishes to its event log and never waits for a client. A client that
falls more than `EVENT_BUFFER` events behind (slow, or not reading at all)
loses the oldest and is told how many in a ``lost`` event.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from json.encoder import encode_basestring_ascii as _quoted
from typing import TYPE_CHECKING, final

import trio

from .._events import EventsLost, StageFinished, StageQueued, StageStarted
from ._forms import dumps, event_form, run_summary

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .._events import RunEvent
    from .._run import Run

__all__ = ["EVENT_BUFFER", "PACE", "Feeds", "event_stream", "event_text"]

EVENT_BUFFER = 10_000
"""How many events one client may fall behind before it loses some."""

PACE = 0.05
"""Seconds between two writes to one client: the events in between go as one batch."""


def event_text(event: RunEvent) -> bytes:
    """One event as server-sent-event text (``event: KIND``, ``data: JSON``)."""
    # The stage events are most of a run's: spelled out, with the JSON
    # library's own escaping of a name, rather than a dict dumped.
    match event:
        case StageStarted(stage=name):
            text = 'event: stage_started\ndata: {"stage":' + _quoted(name) + "}\n\n"
        case StageFinished(stage=name, state=state):
            text = (
                'event: stage_finished\ndata: {"stage":'
                + _quoted(name)
                + ',"state":'
                + _quoted(state.value)
                + "}\n\n"
            )
        case StageQueued(stage=name):
            text = 'event: stage_queued\ndata: {"stage":' + _quoted(name) + "}\n\n"
        case _:
            kind, data = event_form(event)
            return (
                b"event: " + kind.encode("ascii") + b"\ndata: " + dumps(data) + b"\n\n"
            )
    return text.encode("ascii")


def _lost_text(count: int) -> bytes:
    return b'event: lost\ndata: {"count":%d}\n\n' % count


@final
class Feed:
    """One run's events as text, for every client following it.

    The ring holds the text of the last `EVENT_BUFFER` events and, beside
    it, how many events each entry stands for (one, or the count of a
    ``lost`` entry), so that a client that skips entries knows how many
    events it lost. Whichever client wakes first takes what the run
    published into the ring; the others only copy from it.
    """

    __slots__ = (
        "_first",
        "_lot",
        "_sizes",
        "_skipped",
        "_stream",
        "_taking",
        "_texts",
        "clients",
        "ended",
        "run",
    )

    def __init__(self, run: Run) -> None:
        self.run = run
        self._stream = run.events(buffer=EVENT_BUFFER)
        self._texts: deque[bytes] = deque()
        self._sizes: deque[int] = deque()
        self._first = 0
        """The position of ``_texts[0]`` among every entry ever added."""
        self._skipped = 0
        """Events the entries dropped from the ring stood for."""
        self._lot = trio.lowlevel.ParkingLot()
        self._taking = False
        self.clients = 0
        self.ended = False

    @property
    def end(self) -> int:
        """The position after the last entry."""
        return self._first + len(self._texts)

    def start(self) -> tuple[int, int]:
        """A new client's position (from now on) and its count of events."""
        self._take()
        return self.end, self._count(self.end)

    def _count(self, position: int) -> int:
        """Events the entries before ``position`` stood for (a ring position)."""
        return self._skipped + sum(islice(self._sizes, 0, position - self._first))

    def _add(self, text: bytes, size: int) -> None:
        if len(self._texts) >= EVENT_BUFFER:
            self._texts.popleft()
            self._skipped += self._sizes.popleft()
            self._first += 1
        self._texts.append(text)
        self._sizes.append(size)

    def _take(self) -> None:
        """Move what the run published since into the ring (never waits)."""
        stream = self._stream
        while True:
            try:
                event = stream.receive_nowait()
            except trio.WouldBlock:
                return
            except trio.EndOfChannel:
                self.ended = True
                return
            if type(event) is EventsLost:
                self._add(_lost_text(event.count), event.count)
            else:
                self._add(event_text(event), 1)

    def read(self, position: int, count: int) -> tuple[bytes, int, int]:
        """What a client at ``position`` has not had: its text, new position and count.

        A client whose position left the ring is sent a ``lost`` event first.
        """
        self._take()
        parts: list[bytes] = []
        if position < self._first:
            parts.append(_lost_text(self._skipped - count))
            position, count = self._first, self._skipped
        start = position - self._first
        parts.extend(islice(self._texts, start, None))
        count += sum(islice(self._sizes, start, None))
        return b"".join(parts), self.end, count

    async def wait(self, position: int) -> None:
        """Wait until there is something past ``position``, or the run's events ended."""
        self._take()
        if position < self.end or self.ended:
            await trio.lowlevel.checkpoint()
            return
        if self._taking:  # another client waits on the run: it wakes us
            await self._lot.park()
            return
        self._taking = True
        try:
            event = await self._stream.receive()
        except trio.EndOfChannel:
            self.ended = True
        else:
            if type(event) is EventsLost:
                self._add(_lost_text(event.count), event.count)
            else:
                self._add(event_text(event), 1)
        finally:
            # Woken also when this client left: another one takes its place.
            self._taking = False
            self._lot.unpark_all()

    def close(self) -> None:
        """The last client left: the run forgets this reader."""
        self._stream.close()


@final
class Feeds:
    """The feeds of the runs that clients follow now, by run id."""

    __slots__ = ("_feeds",)

    def __init__(self) -> None:
        self._feeds: dict[str, Feed] = {}

    def join(self, run: Run) -> Feed:
        """The run's feed, opened for its first client."""
        feed = self._feeds.get(run.id)
        if feed is None or feed.run is not run:  # a run resumed under its id
            feed = self._feeds[run.id] = Feed(run)
        feed.clients += 1
        return feed

    def leave(self, run: Run, feed: Feed) -> None:
        """A client left; the last one closes the feed."""
        feed.clients -= 1
        if feed.clients == 0:
            feed.close()
            if self._feeds.get(run.id) is feed:
                del self._feeds[run.id]


async def event_stream(feeds: Feeds, run: Run) -> AsyncIterator[bytes]:
    """The text of one client's event stream, until the run ended."""
    feed = feeds.join(run)
    try:
        position, count = feed.start()
        yield b": the events of one run, until it ends\n\n"
        while True:
            await feed.wait(position)
            text, position, count = feed.read(position, count)
            if text:
                yield text
            if feed.ended and position == feed.end:
                break
            await trio.sleep(PACE)  # let the next batch gather
        await run._done.wait()
        yield b"event: end\ndata: " + dumps(run_summary(run)) + b"\n\n"
    finally:
        feeds.leave(run, feed)
