"""A run's events as the body of a ``text/event-stream`` answer (server-sent events).

Each event is ``event: KIND`` and ``data: JSON`` (`event_text`), after an
opening comment, and a last ``end`` event with the run's summary. The text
comes from the run's `Feed`, shared by every client that follows the run,
in batches: what gathered since the client's last write, at most every
`PACE` seconds.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, final

import trio
from starlette.responses import StreamingResponse

from . import _feed
from ._deflate import HEADER, adler_combine, alone, last
from ._forms import dumps, run_summary

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .._run import Run
    from ._feed import Feed, Feeds

__all__ = ["EventBody", "EventResponse"]

_TAKE = 0.05
"""Seconds between two takes from the run by the client that takes for the
feed: the run keeps only what came in between (`TAKE_BUFFER`)."""


async def _pace(feed: Feed) -> None:
    """Wait until the next multiple of `PACE` seconds on trio's clock (the
    clients of a feed wake together and share what they are sent); one
    waiting client at a time takes for the feed meanwhile, every `_TAKE`
    seconds (a client blocked on a send takes nothing)."""
    now = trio.current_time()
    pace = _feed.PACE
    deadline = (math.floor(now / pace) + 1) * pace if pace > 0 else now
    if feed.ticking:
        await trio.sleep_until(deadline)
        return
    feed.ticking = True
    try:
        while trio.current_time() < deadline:
            await trio.sleep_until(min(deadline, trio.current_time() + _TAKE))
            feed.take()
    finally:
        feed.ticking = False


@final
class EventBody:
    """A run's events as the body of a ``text/event-stream`` answer, until it ends.

    The run never waits for this reader: one that falls more than
    `EVENT_BUFFER` events behind (a slow or stuck client) loses the oldest
    and is told how many in a `lost` event. An iterator object, not an
    async generator: a client that goes away mid-stream, or a runtime that
    ends while one reads, leaves no generator for the collector to close;
    the feed forgets this client when it ends or is collected.
    """

    __slots__ = (
        "_checksum",
        "_count",
        "_feed",
        "_feeds",
        "_paced",
        "_position",
        "_run",
        "_size",
        "_step",
        "deflate",
    )

    def __init__(self, feeds: Feeds, run: Run, *, deflate: bool = False) -> None:
        self.deflate = deflate
        """Sent deflated (``Content-Encoding: deflate``): see `_deflate`."""
        self._checksum = 1  # the Adler-32 checksum and size of the text sent
        self._size = 0
        self._run = run
        self._feeds: Feeds | None = feeds
        self._feed: Feed = feeds.join(run)
        self._position, self._count = self._feed.start()
        self._step = 0  # 0: the opening comment, 1: events, 2: the end, 3: done
        self._paced = False  # a batch was just sent: the next waits PACE first

    def close(self) -> None:
        """This client is gone: its feed forgets it (also done when collected)."""
        self._leave()

    def _leave(self) -> None:
        if self._feeds is not None:
            self._feeds.leave(self._run, self._feed)
            self._feeds = None

    def __del__(self) -> None:
        self._leave()

    def __aiter__(self) -> EventBody:
        return self

    async def __anext__(self) -> bytes:
        if self._step == 0:
            self._step = 1
            await trio.lowlevel.checkpoint()
            return self._alone(b": the events of one run, until it ends\n\n")
        feed = self._feed
        while self._step == 1:
            if self._paced:  # let the next batch gather
                self._paced = False
                await _pace(feed)
            await feed.wait(self._position)
            if self.deflate:
                text, self._position, self._count, checksum, size = feed.read_packed(
                    self._position, self._count
                )
                self._checksum = adler_combine(self._checksum, checksum, size)
                self._size += size
            else:
                text, self._position, self._count = feed.read(
                    self._position, self._count
                )
            if feed.ended and self._position == feed.end:
                self._step = 2
            if text:
                self._paced = True
                return text
        if self._step == 2:
            await self._run._done.wait()
            self._step = 3
            self._leave()
            end = b"event: end\ndata: " + dumps(run_summary(self._run)) + b"\n\n"
            return last(end, self._checksum, self._size) if self.deflate else end
        self._leave()
        raise StopAsyncIteration

    def _alone(self, text: bytes) -> bytes:
        """The stream's first text, deflated after the zlib header if it is."""
        if not self.deflate:
            return text
        self._checksum = zlib.adler32(text)
        self._size = len(text)
        return HEADER + alone(text)


@final
class EventResponse(StreamingResponse):
    """The answer that sends an `EventBody`: Starlette's `StreamingResponse`,
    with its two tasks (send, and watch for the client leaving) in a trio
    nursery of their own rather than AnyIO's task group, whose layers every
    batch sent to every client would go through."""

    def __init__(self, body: EventBody, *, headers: dict[str, str]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._events = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_gone, receive, nursery.cancel_scope)
                async for chunk in self._events:
                    await send(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
                await send(
                    {"type": "http.response.body", "body": b"", "more_body": False}
                )
                nursery.cancel_scope.cancel()
        finally:  # the client left, or the stream ended: the feed forgets it now
            self._events.close()


async def _until_gone(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
