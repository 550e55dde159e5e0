"""Readiness signals between a test and a body it starts elsewhere (a worker process, a Dask task).

A test that must act while a body runs in another process (cancel it, time
it out, check what holds its slot) waits for that body to say it runs, never
for a while: the body connects to the test over loopback TCP and says
"ready"; it then blocks until the test hangs up, and returns. No clock
orders anything, on either side.

    async with readiness() as ready:
        run = await rt.start(pipeline, inputs=ready.inputs)
        await ready.wait()        # the body is running, on its worker
        await run.cancel(...)     # the test hangs up when the block ends
"""

from __future__ import annotations

import contextlib
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def announce_and_wait(address: tuple[str, int]) -> None:
    """Tell the test at ``address`` that this body runs, then wait until it hangs up.

    Plain and blocking, for a worker process or a Dask task. A worker that
    is killed meanwhile drops the connection, which the test sees too.
    """
    with socket.create_connection(address) as conn:
        conn.sendall(b"ready\n")
        while conn.recv(1024):
            pass


def waits_for_the_test(view: Any) -> str:
    """A stage body: says it runs (``run_inputs["ready"]``), returns once released."""
    announce_and_wait(tuple(view.run_inputs["ready"]))
    return "released"


class Readiness:
    """The test's end: bodies connect here; `wait` returns once one has."""

    def __init__(self, listener: trio.SocketListener) -> None:
        host, port = listener.socket.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self.inputs = {"ready": self.address}
        """Run inputs for `waits_for_the_test`."""
        self._listener = listener
        self._bodies: list[tuple[trio.SocketStream, trio.Event]] = []
        self._announced = 0
        self._changed = trio.Event()

    async def wait(self, count: int = 1) -> None:
        """Return once ``count`` bodies in all have said they run."""
        while self._announced < count:
            await self._changed.wait()

    async def release(self) -> None:
        """Hang up on every body connected so far; return once each has let go.

        A body lets go when it returns, or when its worker dies.
        """
        bodies, self._bodies = self._bodies, []
        for stream, _ in bodies:
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError
            ):
                await stream.send_eof()
        for stream, gone in bodies:
            await gone.wait()
            await stream.aclose()

    async def _accept(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await self._listener.accept()
            except trio.ClosedResourceError:
                return  # the block is over
            gone = trio.Event()
            self._bodies.append((stream, gone))
            nursery.start_soon(self._follow, stream, gone)

    async def _follow(self, stream: trio.SocketStream, gone: trio.Event) -> None:
        """Read a body's announcement, then wait until it lets go."""
        received = b""
        try:
            while not received.endswith(b"\n"):
                data = await stream.receive_some()
                if not data:
                    return  # its process died before it said anything
                received += data
            self._announced += 1
            self._changed.set()
            self._changed = trio.Event()
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass  # its worker was killed
        finally:
            gone.set()


@asynccontextmanager
async def readiness() -> AsyncIterator[Readiness]:
    """A `Readiness` for the block; leaving it releases every body that connected."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    ready = Readiness(listener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ready._accept, nursery)
        try:
            yield ready
        finally:
            # Bounded and shielded: a test that failed still releases its bodies.
            with trio.CancelScope(shield=True), trio.move_on_after(60):
                await listener.aclose()
                await ready.release()
            nursery.cancel_scope.cancel()
