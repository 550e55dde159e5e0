"""Helpers shared by the benchmark scripts: RSS sampling, the trio floor, output."""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from typing import Any

import psutil
import trio


class RssSampler:
    """Samples this process's RSS in a thread (never on the event loop)."""

    def __init__(self, interval: float = 0.05) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.rss()
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def trio_floor(n: int) -> float:
    """Seconds a bare supervisor loop takes for ``n`` tasks: spawn, then receive."""

    async def main() -> float:
        send, receive = trio.open_memory_channel[int](1)

        async def task(i: int) -> None:
            send.send_nowait(i)

        async with trio.open_nursery() as nursery:
            start = time.perf_counter()
            for i in range(n):
                nursery.start_soon(task, i, name="floor")
                await receive.receive()
            return time.perf_counter() - start

    return trio.run(main)


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    return {
        "python": platform.python_version(),
        "trio": trio.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(data: Any, path: str | None) -> None:
    text = json.dumps(data, indent=2)
    print(text)
    if path:
        with open(path, "w") as out:
            out.write(text + "\n")


BURN_LOOPS = 60_000
"""Loops of `burn` in about 5 ms on the benchmark machine (calibrated at run)."""


def burn(view: Any) -> int:
    """About 5 ms of pure-Python work (a module-level body for any executor)."""
    loops = view.run_inputs["loops"]
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def calibrate(target: float = 0.005) -> int:
    """How many loops of `burn` take ``target`` seconds here."""

    class View:
        run_inputs: dict[str, int]

    view = View()
    loops = 10_000
    while True:
        view.run_inputs = {"loops": loops}
        start = time.perf_counter()
        burn(view)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            return max(1, int(loops * target / elapsed))
        loops *= 2
