"""Clients that open more connections than the control API keeps."""

from __future__ import annotations

import logging

import trio
from control_helpers import held, served

from dagvisor.supervisor._control import _server

_REQUEST = b"GET /api/runs HTTP/1.1\r\nHost: x\r\n\r\n"


async def _answered(port: int, secret: str) -> bool:
    """Whether a new connection gets an HTTP answer (False: closed unanswered)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = _REQUEST.replace(
            b"\r\n\r\n", f"\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()
        )
        try:
            await stream.send_all(request)
            return (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
        except trio.BrokenResourceError:
            return False


async def test_connections_beyond_the_most_are_closed_and_room_comes_back(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(_server, "MAX_CONNECTIONS", 3)
    caplog.set_level(logging.WARNING, logger="dagvisor.control")
    async with served(tmp_path) as (rt, _, _, operator, _):
        run = await rt.start(held())
        port = int(rt.url.rsplit(":", 1)[1])
        following = []  # three connections following the run's events
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(
                f"GET /api/runs/{run.id}/events HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {operator}\r\n\r\n".encode()
            )
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
            following.append(stream)
        # A fourth connection is closed unanswered, however many times it tries.
        for _ in range(5):
            assert not await _answered(port, operator)
        warned = [r for r in caplog.records if "connections open" in r.getMessage()]
        assert len(warned) == 1  # once, not once a refused connection
        await following.pop().aclose()
        with trio.fail_after(10):
            # Each try waits on the network: the server sees the close meanwhile.
            while not await _answered(port, operator):
                pass
        for stream in following:
            await stream.aclose()
        await run.cancel()
