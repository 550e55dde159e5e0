"""A run's statistics: each stage's timings, latency percentiles, the run's figures.

Computed from the run's graph when read (a result's ``stats``), never on the
run's hot path.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from dagvisor.actors import StageState

    from ._graph import Node

__all__ = ["RunStats", "StageLatency", "StageTiming", "queue_time_of", "run_time_of"]


@final
@attrs.frozen
class StageTiming:
    """When a stage waited, ran and finished, on the run's trio clock (seconds).

    A stage that may wait for room to run (a thread, a worker process, a
    Dask slot, a named limit) is queued from ``queued`` until ``started``,
    when its first attempt had that room; an ``async def`` stage without a
    limit never queues (``queued`` is None) and starts when its actor does.

    Attributes:
        started: when it began to run; None for a stage that never ran
            (skipped by its dependencies, cancelled before it ran).
        finished: when it reached its final state.
        queued: when it began to wait for room; None if it never waited.
    """

    started: float | None
    finished: float
    queued: float | None = None

    @property
    def duration(self) -> float:
        """Seconds it ran, from start to finish (queue time excluded); 0.0 if it never ran."""
        return 0.0 if self.started is None else self.finished - self.started

    @property
    def queue_time(self) -> float:
        """Seconds it waited for room before it ran (or until it ended without
        running); 0.0 if it never queued."""
        if self.queued is None:
            return 0.0
        until = self.finished if self.started is None else self.started
        return until - self.queued


def run_time_of(node: Node) -> float | None:
    started = node.started
    return None if started is None else node.finished - started


def queue_time_of(node: Node) -> float | None:
    queued = node.queued
    if queued is None:
        return None
    started = node.started
    return (node.finished if started is None else started) - queued


@final
class StageLatency:
    """Percentiles and total of stage times (seconds), computed when first read.

    `RunStats.latency` holds the stages' run times (from start to finish,
    queue time excluded); `RunStats.queue_latency` the queue times of the
    stages that waited for room to run.
    """

    __slots__ = ("_measure", "_nodes", "_sorted", "_total")

    def __init__(
        self,
        nodes: Mapping[str, Node],
        measure: Callable[[Node], float | None] = run_time_of,
    ) -> None:
        self._nodes = nodes
        self._measure = measure
        self._sorted: list[float] | None = None
        self._total = 0.0

    def _durations(self) -> list[float]:
        if self._sorted is None:
            measure = self._measure
            measured = [measure(node) for node in self._nodes.values()]
            self._sorted = sorted(value for value in measured if value is not None)
            self._total = math.fsum(self._sorted)
        return self._sorted

    def __len__(self) -> int:
        """How many stages are measured (those that ran, or that queued)."""
        return len(self._durations())

    @property
    def total(self) -> float:
        """The sum of the times measured."""
        self._durations()
        return self._total

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) of the times measured; 0.0 if none."""
        durations = self._durations()
        if not durations:
            return 0.0
        index = min(len(durations) - 1, max(0, round(p / 100 * (len(durations) - 1))))
        return durations[index]

    @property
    def p50(self) -> float:
        """The median."""
        return self.percentile(50)

    @property
    def p90(self) -> float:
        """The 90th percentile."""
        return self.percentile(90)

    @property
    def p99(self) -> float:
        """The 99th percentile."""
        return self.percentile(99)

    @property
    def max(self) -> float:
        """The longest."""
        return self.percentile(100)

    def __repr__(self) -> str:
        return (
            f"<StageLatency p50={self.p50:.6f} p99={self.p99:.6f} max={self.max:.6f}>"
        )


@final
@attrs.frozen(kw_only=True)
class RunStats:
    """Summary figures of a run.

    Attributes:
        stages: stages in the final graph.
        counts: how many stages ended in each state.
        started_at: wall-clock start, seconds since the epoch.
        duration: seconds the run ran: from its start to its end, less the
            time it was stopped (``stopped``) between an interruption (or
            an earlier end) and a resume.
        changes: change requests received (accepted and refused).
        added: stages added while the run ran.
        latency: percentiles and total of stage run times (from start to
            finish: queue time excluded), computed when read.
        queue_latency: percentiles and total of the queue times of the
            stages that waited for room to run (a thread, a worker process,
            a Dask slot, a named limit), computed when read.
        peak_rss: highest RSS sampled in bytes, when the monitor was on.
        memory: the RSS samples ``(run clock, bytes)`` when the monitor was on.
        stopped: seconds the run stood still between an interruption (or an
            earlier end) and the resume that went on with it.
        stages_per_second: stages that reached a terminal state per second of
            run time (the same measure as `Progress.stages_per_second`).
    """

    stages: int
    counts: Mapping[StageState, int]
    started_at: float
    duration: float
    changes: int
    added: int = 0
    latency: StageLatency | None = None
    peak_rss: int | None = None
    memory: tuple[tuple[float, int], ...] = ()
    stopped: float = 0.0
    queue_latency: StageLatency | None = None

    @property
    def run_time(self) -> float:
        """Seconds stages ran, summed over the stages (queue time excluded)."""
        return 0.0 if self.latency is None else self.latency.total

    @property
    def queue_time(self) -> float:
        """Seconds stages waited for room to run, summed over the stages."""
        return 0.0 if self.queue_latency is None else self.queue_latency.total

    @property
    def stages_per_second(self) -> float:
        """Stages that reached a terminal state per second of run time (0.0 if none passed)."""
        return self.stages / self.duration if self.duration > 0 else 0.0
