"""The report's section on a run's history: each interruption, what stopped it, its resume.

Self-contained: one function that renders `RunResult.interruptions` as a
table (the report's layout is `_report`'s). A run never stopped gets one
line saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._text import html_text, when_text

if TYPE_CHECKING:
    from ._result import RunResult

__all__ = ["history_section"]

_MAX_ROWS: Final = 200


def history_section(result: RunResult) -> str:
    """The ``<section id="history">`` of the report."""
    found = result.interruptions
    stopped = result.stats.stopped
    if not found:
        body = '<p class="note">Never interrupted.</p>'
    else:
        rows = "".join(
            "<tr>"
            f"<td>{html_text(when_text(each.at))}</td>"
            f"<td>{html_text(each.by)}</td>"
            f"<td>{html_text(each.detail)}</td>"
            "<td>"
            + (
                "not resumed"
                if each.resumed_at is None
                else html_text(
                    f"{when_text(each.resumed_at)} ({each.stopped or 0.0:.3f} s later)"
                )
            )
            + "</td></tr>"
            for each in found[:_MAX_ROWS]
        )
        more = (
            f'<p class="note">... and {len(found) - _MAX_ROWS:,} more.</p>'
            if len(found) > _MAX_ROWS
            else ""
        )
        body = (
            f'<p class="note">Stopped {len(found):,} time(s); the run time '
            f"({result.stats.duration:.3f} s) leaves out the {stopped:.3f} s it "
            "stood still.</p>"
            "<table><tr><th>stopped</th><th>by</th><th>why</th><th>resumed</th></tr>"
            f"{rows}</table>{more}"
        )
    return f'<section id="history"><h2>Interruptions</h2>{body}</section>'
