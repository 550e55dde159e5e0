"""Headless chromium driven while a test's runtime runs: the DevTools protocol on a pipe.

The browser of tests/browser.py renders a finished page; a live page must
stay open while the test changes the run under it. Chromium's
``--remote-debugging-pipe`` reads protocol commands on its fd 3 and writes
answers and events on its fd 4 (JSON, each message ended by a NUL byte):
no port, no websocket library, nothing on the network.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import trio
from browser import chromium

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class Page:
    """One tab of a headless chromium, spoken to over the DevTools protocol."""

    def __init__(
        self, send: trio.lowlevel.FdStream, receive: trio.lowlevel.FdStream
    ) -> None:
        self._send = send
        self._receive = receive
        self._buffer = b""
        self._next = 0
        self._session: str | None = None
        self.events: list[dict[str, Any]] = []

    async def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = await self._receive.receive_some(1 << 16)
            if not chunk:
                raise AssertionError("chromium closed its DevTools pipe")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(line)
        return message

    async def send(self, method: str, **params: Any) -> int:
        """Send a command (to the tab once attached); its id, for `reply`."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        await self._send.send_all(json.dumps(message).encode() + b"\0")
        return self._next

    async def reply(self, number: int) -> dict[str, Any]:
        """The answer to command ``number``; events read meanwhile are kept."""
        while True:
            message = await self._message()
            if message.get("id") == number:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result
            if "method" in message:
                self.events.append(message)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        return await self.reply(await self.send(method, **params))

    async def wait_event(self, method: str) -> dict[str, Any]:
        """The first event ``method`` not yet taken (waiting for it if need be)."""
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            message = await self._message()
            if "method" in message:
                self.events.append(message)

    async def open(self, url: str, *, width: int, height: int) -> None:
        """Open ``url`` in a new tab of ``width`` x ``height`` CSS pixels, loaded."""
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self._session = attached["sessionId"]
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        await self.call("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (awaited if it is a promise)."""
        return self.value(await self.reply(await self.send_evaluate(expression)))

    async def send_evaluate(self, expression: str) -> int:
        """Start evaluating ``expression``; its answer comes by `reply`."""
        return await self.send(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )

    @staticmethod
    def value(answer: dict[str, Any]) -> Any:
        """The value an evaluation answered, or fail with the page's exception."""
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    async def screenshot(self, out: Path) -> Path:
        """A PNG of the tab as it is, written to ``out``."""
        shot = await self.call("Page.captureScreenshot", format="png")
        await trio.Path(out).write_bytes(base64.b64decode(shot["data"]))
        print(f"screenshot: {out}")
        return out


@asynccontextmanager
async def open_browser() -> AsyncIterator[Page]:
    """A headless chromium for the test's block, closed after it (or skip the test)."""
    program = chromium()
    to_chromium, commands = os.pipe()
    answers, from_chromium = os.pipe()
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--remote-debugging-pipe",
        "about:blank",
    ]
    # bash puts the pipes at the fds chromium reads and writes (3 and 4).
    script = f'exec "$0" "$@" 3<&{to_chromium} 4>&{from_chromium}'
    process = await trio.lowlevel.open_process(
        ["bash", "-c", script, program, *args],
        pass_fds=(to_chromium, from_chromium),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_chromium)
    os.close(from_chromium)
    send = trio.lowlevel.FdStream(commands)
    receive = trio.lowlevel.FdStream(answers)
    try:
        yield Page(send, receive)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await send.send_all(b'{"id": 999999, "method": "Browser.close"}\0')
            await process.wait()
        if process.returncode is None:
            process.kill()
        await send.aclose()
        await receive.aclose()
