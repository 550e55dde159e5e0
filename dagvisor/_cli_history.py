"""What the reading commands print about a run's history: its interruptions and resumes.

`show` prints them under the run's figures (with the time it stood still,
which its duration leaves out); `audit` prints them among the changes, in
time order. `lineage` prints a stage's attempts itself (`Lineage`).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from ._cli_io import one_line

if TYPE_CHECKING:
    from dagvisor.supervisor import Interruption, RunResult

__all__ = ["history_events", "history_lines", "stopped_text"]


def _time(wall: Any) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return one_line(repr(wall))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _stopped(found: Interruption) -> str:
    line = f"stopped {_time(found.at)} UTC by {one_line(found.by)}"
    if found.detail:
        line += f" ({one_line(found.detail)})"
    if found.resumed_at is None:
        return line + "; not resumed"
    return (
        line + f"; resumed {_time(found.resumed_at)} UTC, {found.stopped:.3f} s later"
    )


def stopped_text(result: RunResult) -> str:
    """What follows the run's duration in `show`: the time it stood still, if any."""
    stopped = result.stats.stopped
    return f" (run time; stopped {stopped:.3f} s between stretches)" if stopped else ""


def history_lines(result: RunResult) -> list[str]:
    """`show`'s lines about the run's interruptions (none for a run that was never stopped)."""
    found = result.interruptions
    if not found:
        return []
    return ["  interruptions:", *(f"    {_stopped(each)}" for each in found)]


def history_events(result: RunResult) -> list[tuple[float, str]]:
    """`audit`'s lines about the run's interruptions and resumes, with their times."""
    lines: list[tuple[float, str]] = []
    for each in result.interruptions:
        what = f"run stopped by {one_line(each.by)}"
        if each.detail:
            what += f": {one_line(each.detail)}"
        lines.append((each.at, what))
    lines.extend((at, "run resumed") for at in result.resumed_at)
    return lines
