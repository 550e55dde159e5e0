"""The monitor actor: memory samples and throttled progress for long runs.

Off unless asked for (``runtime(monitor_interval=...)`` or ``on_progress=``):
a run without it pays nothing. When on, one task per run wakes every
interval, samples the process's RSS with psutil (no tracemalloc, whose
overhead distorts deep runs), reads the supervisor's counters (O(1), never a
scan of the graph) and calls the progress callback: at most once per
interval, never once per stage.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, final

import attrs
import psutil
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._core import RunCore

__all__ = ["Monitor", "Progress"]

_MAX_SAMPLES = 10_000


@final
@attrs.frozen(kw_only=True)
class Progress:
    """Where a run stands, as given to ``runtime(on_progress=...)``.

    Attributes:
        run_id: the run.
        elapsed: seconds since the run started (run clock).
        stages: stages known so far: done, running, queued or pending (a
            run that grows adds to it; stages removed before they ran leave
            it).
        done: stages that reached a terminal state (a counter: it never
            decreases, and finished stages that left memory still count).
        running: stages running: an ``async def`` stage once its actor
            started, any other once its first attempt had its room (a
            thread, a worker process, a Dask slot, its named limit).
        pending: stages waiting for their dependencies.
        queued: stages whose actor started and that wait for room to run.
        added: stages added while the run ran (changes, not the pipeline).
        failed: stages that failed.
        stages_per_second: stages that reached a terminal state per second
            of run time so far (``done / elapsed``; 0.0 before any time passed),
            the same measure as `RunStats.stages_per_second`.
        rss: the process's resident memory in bytes when sampled.
    """

    run_id: str
    elapsed: float
    stages: int
    done: int
    running: int
    pending: int
    added: int
    failed: int
    stages_per_second: float
    rss: int
    queued: int = 0

    @property
    def fraction(self) -> float:
        """Done over known stages (a run that grows may go backwards)."""
        return self.done / self.stages if self.stages else 1.0


class Monitor:
    """Samples memory and reports progress for one run."""

    def __init__(
        self,
        core: RunCore,
        started_at: float,
        interval: float,
        on_progress: Callable[[Progress], object] | None,
    ) -> None:
        self._core = core
        self._started_at = started_at
        self._interval = interval
        self._on_progress = on_progress
        self._process = psutil.Process()
        self.samples: list[tuple[float, int]] = []
        """(run clock, RSS bytes), thinned to at most 10,000 samples."""
        self.peak_rss = 0

    def sample(self) -> Progress:
        """Take one sample now."""
        core = self._core
        now = trio.current_time()
        rss = int(self._process.memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        self.samples.append((now, rss))
        if len(self.samples) > _MAX_SAMPLES:
            del self.samples[1::2]  # halve the resolution, keep the span
        unfinished = core.unfinished
        running = core.running
        queued = core.queued
        elapsed = now - self._started_at
        done = core.done
        total = done + unfinished
        return Progress(
            run_id=core.run_id,
            elapsed=elapsed,
            stages=total,
            done=done,
            running=running,
            queued=queued,
            pending=unfinished - running - queued,
            added=core.added,
            failed=core.failed,
            stages_per_second=done / elapsed if elapsed > 0 else 0.0,
            rss=rss,
        )

    async def run(self) -> None:
        """Sample until cancelled (when the run ends)."""
        while True:
            progress = self.sample()
            if self._on_progress is not None:
                try:
                    self._on_progress(progress)
                except Exception as exc:
                    # The run matters more than its progress display: warn
                    # once and stop calling a callback that fails.
                    warnings.warn(
                        f"on_progress raised {type(exc).__name__}: {exc}; "
                        "it will not be called again for this run",
                        RuntimeWarning,
                        stacklevel=1,
                    )
                    self._on_progress = None
            await trio.sleep(self._interval)
