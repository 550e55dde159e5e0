"""The report's picture of queue time: waits drawn apart from runs.

A stage that waited for room to run (a thread, a worker process, a Dask
slot, a named limit) is drawn in the timeline as a hatched bar from when it
queued to when it started (or ended, if it never ran), before its run bar;
past the report's bar limit, a dashed curve counts the stages queued at
each moment beside the count of those running. The summary gives the queue time
apart from the run time. Self-contained: the report calls these pieces and
needs nothing else from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._text import html_text

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._result import RunStats

__all__ = [
    "QUEUE_CSS",
    "QUEUE_DEFS",
    "QUEUE_NOTE",
    "queue_bar",
    "queue_figures",
    "queued_curve",
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


def queue_bar(
    x_of: Callable[[float], float], queued: float, until: float, y: float, name: str
) -> str:
    """A stage's wait, from ``queued`` until it ran (or ended), as a hatched bar."""
    x1 = x_of(queued)
    width = max(x_of(until) - x1, 0.0)
    if width <= 0:
        return ""
    return (
        f'<rect class="queued" x="{x1:.1f}" y="{y}" width="{width:.1f}" '
        f'height="12"><title>{html_text(name)}: queued {until - queued:.4f} s'
        "</title></rect>"
    )


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
