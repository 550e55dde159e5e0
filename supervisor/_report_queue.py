"""The report's picture of queue time: waits drawn apart from runs.

A stage that waited for room to run (a thread, a worker process, a Dask
slot, a named limit) is drawn in the timeline as a hatched bar from when it
queued to when it started (or ended, if it never ran), before its run bar
(a stage that never ran gets a lane of its own);
past the report's bar limit, a dashed curve counts the stages queued at
each moment beside the count of those running. The summary gives the queue time
apart from the run time. Self-contained: the report calls these pieces and
needs nothing else from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._text import html_text, shortened

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._stats import RunStats, StageTiming

__all__ = [
    "QUEUE_CSS",
    "QUEUE_DEFS",
    "QUEUE_NOTE",
    "queue_bar",
    "queue_figures",
    "queue_lanes",
    "queue_waits",
    "queued_curve",
    "waited_only",
]

QUEUE_CSS: Final = (
    ".queued{fill:url(#queued-hatch);stroke:#999;stroke-width:.5}"
    ".queued-area{fill:none;stroke:#999;stroke-width:2;stroke-dasharray:4 3}"
)
QUEUE_DEFS: Final = (
    '<defs><pattern id="queued-hatch" width="6" height="6" '
    'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="6" height="6" fill="#f4f4f4"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#bbb" stroke-width="2"/>'
    "</pattern></defs>"
)
QUEUE_NOTE: Final = (
    "Hatched: waiting for a slot or a named limit (queued), before the run."
)


def queue_waits(
    timings: Mapping[str, StageTiming], offset: float
) -> dict[str, tuple[float, float]]:
    """Each stage that waited for room: ``(queued, until)`` in wall-clock time,
    ``until`` being when it started (or ended, if it never ran)."""
    waits = {}
    for name, timing in timings.items():
        queued = timing.queued
        if queued is not None:
            until = timing.finished if timing.started is None else timing.started
            waits[name] = (queued + offset, until + offset)
    return waits


def waited_only(
    waits: Mapping[str, tuple[float, float]], ran: Sequence[tuple[str, Any, Any, Any]]
) -> list[tuple[str, float, float]]:
    """The waits of stages that never ran (not in ``ran``), in the order they queued."""
    if not waits:
        return []
    names = {row[0] for row in ran}
    return sorted(
        ((name, *wait) for name, wait in waits.items() if name not in names),
        key=lambda row: row[1],
    )


def queue_bar(
    x_of: Callable[[float], float],
    wait: tuple[float, float] | None,
    y: float,
    name: str,
) -> str:
    """A stage's wait, ``(queued, until)``, as a hatched bar ("" if none)."""
    if wait is None:
        return ""
    queued, until = wait
    x1 = x_of(queued)
    width = max(x_of(until) - x1, 0.0)
    if width <= 0:
        return ""
    return (
        f'<rect class="queued" x="{x1:.1f}" y="{y}" width="{width:.1f}" '
        f'height="12"><title>{html_text(name)}: queued {until - queued:.4f} s'
        "</title></rect>"
    )


def queue_lanes(
    unran: Sequence[tuple[str, float, float]],
    x_of: Callable[[float], float],
    top: float,
    left: float,
) -> list[str]:
    """A lane per stage that waited and never ran (cancelled, or the run ended)."""
    parts = []
    for row, (name, queued, until) in enumerate(unran):
        y = top + row * 16
        parts.append(
            f'<text class="lane" x="{left - 6}" y="{y + 10}">'
            f"{html_text(shortened(name, 22))}</text>"
            f"{queue_bar(x_of, (queued, until), y, name)}"
        )
    return parts


def queued_curve(
    waits: Sequence[tuple[float, float]],
    x_of: Callable[[float], float],
    start: float,
    span: float,
    bins: int,
) -> str:
    """How many stages were queued at each moment (dashed, on a scale of its own,
    labelled on the right): ``waits`` holds each wait as ``(queued, until)``."""
    if not waits:
        return ""
    changes = [0] * (bins + 1)
    for begun, ended in waits:
        first = int((begun - start) / span * bins)
        last = int((ended - start) / span * bins)
        changes[min(max(first, 0), bins)] += 1
        changes[min(max(last, 0), bins)] -= 1
    queued, counts = 0, []
    for step in changes[:bins]:
        queued += step
        counts.append(max(queued, 0))
    peak = max(counts) or 1
    points = " ".join(
        f"{x_of(start + (i + 0.5) / bins * span):.1f},{150 - c / peak * 120:.1f}"
        for i, c in enumerate(counts)
    )
    return (
        f'<polyline class="queued-area" points="{points}"/>'
        f'<text class="axis" x="{x_of(start + span) + 16:.1f}" y="34" '
        f'text-anchor="end">{peak:,} queued</text>'
    )


def queue_figures(stats: RunStats) -> list[tuple[str, str]]:
    """The summary's figures of queue time and run time (none if nothing queued)."""
    queue = stats.queue_latency
    if queue is None or not len(queue):
        return []
    return [
        ("queued", f"{len(queue):,} stages, {queue.total:.3f} s"),
        ("longest wait", f"{queue.max:.3f} s"),
        ("run time (all stages)", f"{stats.run_time:.3f} s"),
    ]
