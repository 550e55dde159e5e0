"""A run's events as server-sent-event text: encoded once, for every client.

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

import zlib
from collections import deque
from itertools import islice
from json.encoder import encode_basestring_ascii as _quoted
from typing import TYPE_CHECKING, Any, TypeVar, final

import trio

from dagvisor.actors import StageState

from .._events import (
    EVENT,
    ITEMS,
    EventsLost,
    StageFinished,
    StageQueued,
    StageStarted,
)
from ._deflate import adler_combine, alone, pack, packer
from ._forms import dumps, event_form

if TYPE_CHECKING:
    from .._events import RunEvent
    from .._run import Run

__all__ = [
    "EVENT_BUFFER",
    "PACE",
    "TAKE_BUFFER",
    "Feed",
    "Feeds",
    "event_text",
    "kept_text",
]

_T = TypeVar("_T")

EVENT_BUFFER = 50_000
"""How many events one client may fall behind before it loses some."""

PACE = 0.25
"""Seconds between two writes to one client: the events in between go as one batch."""

TAKE_BUFFER = 20_000
"""How many events the run keeps for its feed between two takes (the text
ring keeps `EVENT_BUFFER`): the run keeps them as items of its ring
(`EventLog`), nothing Python's collector tracks; 20,000 events are 60,000
references (480 KB)."""


def event_text(event: RunEvent) -> str:
    """One event as server-sent-event text (``event: KIND``, ``data: JSON``)."""
    # The stage events are most of a run's: spelled out, with the JSON
    # library's own escaping of a name, rather than a dict dumped.
    kind = type(event)
    if kind is StageStarted:
        return _STARTED % _quoted(event.stage)  # type: ignore[union-attr]  # its type is checked
    if kind is StageFinished:
        return _FINISHED % (_quoted(event.stage), _quoted(event.state))  # type: ignore[union-attr]  # its type is checked
    if kind is StageQueued:
        return _QUEUED % _quoted(event.stage)  # type: ignore[union-attr]  # its type is checked
    name, data = event_form(event)
    return "event: " + name + "\ndata: " + dumps(data).decode("ascii") + "\n\n"


_STARTED = 'event: stage_started\ndata: {"stage":%s}\n\n'
_FINISHED = 'event: stage_finished\ndata: {"stage":%s,"state":%s}\n\n'
_QUEUED = 'event: stage_queued\ndata: {"stage":%s}\n\n'


def _template(state: StageState) -> str:
    if state is StageState.QUEUED:
        return _QUEUED
    if state is StageState.RUNNING:
        return _STARTED
    finished = '{"stage":%s,"state":' + _quoted(state.value) + "}"
    return "event: stage_finished\ndata: " + finished + "\n\n"


_MOVED = {state.value: _template(state) for state in StageState}
"""The text of a stage's move, by the state it entered, with ``%s`` where
its quoted name goes."""

_BEFORE = {value: text.partition("%s")[0] for value, text in _MOVED.items()}
"""The text of a stage's move before its quoted name, by the state it entered."""

_AFTER = {value: text.partition("%s")[2] for value, text in _MOVED.items()}
"""The text of a stage's move after its quoted name, by the state it entered."""


def _moves_text(kept: list[Any]) -> str:
    # Stage moves only: the text before each name, the name quoted by the
    # JSON library's own escaping, the text after it, interleaved by slice
    # and joined once, with no Python code run per event (a KeyError if
    # anything else is among them). About a fifth cheaper than one template
    # for the batch and one ``%``: nothing is parsed for ``%s``.
    states = kept[0::ITEMS]
    parts: list[str] = [""] * (3 * len(states))
    parts[0::3] = map(_BEFORE.__getitem__, states)
    parts[1::3] = map(_quoted, kept[1::ITEMS])
    parts[2::3] = map(_AFTER.__getitem__, states)
    return "".join(parts)


def kept_text(kept: list[Any]) -> str:
    """The events `EventLog.take` returned, as server-sent-event text:
    `event_text` of each event, in order, a stage's moves in one pass."""
    try:
        return _moves_text(kept)
    except KeyError:  # an event kept as its object among them
        pass
    parts: list[str] = []
    start = 0
    for at in range(0, len(kept), ITEMS):
        if kept[at] != EVENT:
            continue
        if start < at:
            parts.append(_moves_text(kept[start:at]))
        start = at + ITEMS
        event = kept[at + 1]
        if type(event) is EventsLost:
            parts.append(_lost_text(event.count).decode("ascii"))
        else:
            parts.append(event_text(event))
    if start < len(kept):
        parts.append(_moves_text(kept[start:]))
    return "".join(parts)


def _lost_text(count: int) -> bytes:
    return b'event: lost\ndata: {"count":%d}\n\n' % count


@final
class Feed:
    """One run's events as text, for every client following it.

    The ring holds batches: the text of the events taken from the run at
    once, and the count of events up to the end of each batch, so that a
    client that fell out of the ring knows how many it lost. It holds at
    most about `EVENT_BUFFER` events. Whichever client wakes first takes
    what the run published into the ring; the others only copy from it.
    """

    __slots__ = (
        "_copied",
        "_copied_packed",
        "_counts",
        "_first",
        "_lot",
        "_packed",
        "_packer",
        "_skipped",
        "_stream",
        "_sums",
        "_taking",
        "_texts",
        "clients",
        "ended",
        "run",
        "ticking",
    )

    def __init__(self, run: Run) -> None:
        self.run = run
        self._stream = run.events(buffer=TAKE_BUFFER)
        self._texts: deque[bytes] = deque()
        self._packed: deque[bytes] = deque()
        """Each batch of ``_texts`` deflated (`_deflate`), standing alone."""
        self._sums: deque[int] = deque()
        """The Adler-32 checksum of each batch of ``_texts``."""
        self._packer = packer()
        self._counts: deque[int] = deque()
        """The count of events up to the end of each batch of ``_texts``."""
        self._first = 0
        """The position of ``_texts[0]`` among every batch ever added."""
        self._skipped = 0
        """The count of events up to ``_texts[0]``."""
        self._lot = trio.lowlevel.ParkingLot()
        self._taking = False
        self._copied = (0, 0, b"")
        self._copied_packed = (0, 0, b"", 1, 0)
        """The last text read (from, to, text): clients paced alike share it."""
        self.clients = 0
        self.ended = False
        self.ticking = False
        """A client takes for the feed while it waits to write."""

    @property
    def end(self) -> int:
        """The position after the last batch."""
        return self._first + len(self._texts)

    @property
    def count(self) -> int:
        """The count of events up to the end of the last batch."""
        return self._counts[-1] if self._counts else self._skipped

    def start(self) -> tuple[int, int]:
        """A new client's position (from now on) and its count of events."""
        self.take()
        return self.end, self.count

    def _add(self, kept: list[Any]) -> None:
        size = len(kept) // ITEMS
        if type(kept[1]) is EventsLost:  # only ever first (`EventLog.take`)
            size += kept[1].count - 1
        text = kept_text(kept).encode("ascii")
        self._texts.append(text)
        self._packed.append(pack(self._packer, text))
        self._sums.append(zlib.adler32(text))
        self._counts.append(self.count + size)
        while self._counts[-1] - self._skipped > EVENT_BUFFER and len(self._texts) > 1:
            self._texts.popleft()
            self._packed.popleft()
            self._sums.popleft()
            self._skipped = self._counts.popleft()
            self._first += 1

    def take(self) -> None:
        """Move what the run published since into the ring (never waits)."""
        try:
            events = self._stream._take_all()
        except trio.EndOfChannel:
            self.ended = True
            return
        if events:
            self._add(events)

    def read(self, position: int, count: int) -> tuple[bytes, int, int]:
        """What a client at ``position`` has not had: its text, new position and count.

        A client whose position left the ring is sent a ``lost`` event first.
        """
        self.take()
        end = self.end
        if position == end:
            return b"", position, count
        parts: list[bytes] = []
        if position < self._first:
            parts.append(_lost_text(self._skipped - count))
            position = self._first
        elif self._copied[0] == position and self._copied[1] == end:
            return self._copied[2], end, self.count
        newest = self._newest(self._texts, end - position)
        if not parts:
            text = b"".join(newest)
            self._copied = (position, end, text)
            return text, end, self.count
        parts += newest
        return b"".join(parts), end, self.count

    def read_packed(
        self, position: int, count: int
    ) -> tuple[bytes, int, int, int, int]:
        """`read`, deflated: the bytes, new position and count, and the
        Adler-32 checksum and size of the text they hold."""
        self.take()
        end = self.end
        if position == end:
            return b"", position, count, 1, 0
        if position < self._first:
            lost = _lost_text(self._skipped - count)
            packed, checksum, size = self._packed_range(self._first, end)
            whole = adler_combine(zlib.adler32(lost), checksum, size)
            return alone(lost) + packed, end, self.count, whole, len(lost) + size
        packed, checksum, size = self._packed_range(position, end)
        return packed, end, self.count, checksum, size

    def _packed_range(self, position: int, end: int) -> tuple[bytes, int, int]:
        copied = self._copied_packed
        if copied[0] == position and copied[1] == end:
            return copied[2], copied[3], copied[4]
        many = end - position
        checksum, size = 1, 0
        for text, batch in zip(
            self._newest(self._texts, many), self._newest(self._sums, many), strict=True
        ):
            checksum = adler_combine(checksum, batch, len(text))
            size += len(text)
        packs: list[bytes] = self._newest(self._packed, many)
        packed = b"".join(packs)
        self._copied_packed = (position, end, packed, checksum, size)
        return packed, checksum, size

    @staticmethod
    def _newest(ring: deque[_T], many: int) -> list[_T]:
        # From the right end: O(batches read), however long the ring.
        newest = list(islice(reversed(ring), many))
        newest.reverse()
        return newest

    async def wait(self, position: int) -> None:
        """Wait until there is something past ``position``, or the run's events ended."""
        self.take()
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
            self._add([EVENT, event, 0.0])
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
