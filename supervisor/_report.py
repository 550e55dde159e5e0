"""The HTML run report: one self-contained file (inline CSS, SVG and a little JS).

Nothing is fetched when the file is viewed. It shows the summary figures, the
final graph (states as colours, stages added at run time dashed), a timeline
of stage execution with the graph changes marked on it, the changes (who,
when, why), failures with their tracebacks, and the memory curve when the run
was sampled.

The graph is drawn by ``_report_graph`` (large graphs collapsed). The
timeline draws one bar per stage up to `MAX_BARS` stages, else how many
stages ran at each moment. Every name, reason and error is escaped for HTML,
and the JSON data block for a script element (`_script_json`): no text of a
run can end the page's script or stop it.
"""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING, Final

from dagvisor.actors import RecordedError

from ._export import COLOURS
from ._report_graph import graph_svg
from ._report_queue import (
    QUEUE_CSS,
    QUEUE_DEFS,
    QUEUE_NOTE,
    queue_bar,
    queue_figures,
    queued_curve,
)
from ._result import renders
from ._text import html_text, shortened, when_text

if TYPE_CHECKING:
    from ._audit import AuditRecord
    from ._result import RunResult

__all__ = ["MAX_BARS", "render_report"]

MAX_BARS: Final = 300
MAX_CHANGES: Final = 500
MAX_FAILURES: Final = 50


def _script_json(value: object) -> str:
    """JSON that stays data inside a ``<script>`` element, whatever its strings.

    ``<``, ``>`` and ``&`` are written as ``\\u003c``-style escapes, so no
    ``</script>``, ``<!--`` or ``<script`` can end or re-enter the element;
    ASCII output also escapes U+2028, U+2029 and lone surrogates.
    """
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- the timeline ----------------------------------------------------------------


def _timeline_svg(result: RunResult, offset: float, start: float, end: float) -> str:
    span = max(end - start, 1e-9)
    width, left = 900, 160

    def x_of(wall: float) -> float:
        return left + (wall - start) / span * (width - left - 20)

    # Each stage that ran or waited: its run from start to end, and the wait
    # before it (from when it queued), drawn apart (`_report_queue`).
    ran = [
        (
            name,
            timing.started + offset if timing.started is not None else None,
            timing.finished + offset,
            result.states[name],
            None if timing.queued is None else timing.queued + offset,
        )
        for name, timing in result.timings.items()
        if timing.started is not None or timing.queued is not None
    ]
    ran.sort(key=lambda row: row[1] if row[1] is not None else row[4] or 0.0)
    parts = []
    if len(ran) <= MAX_BARS:
        height = 40 + 16 * len(ran)
        parts.append(
            f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" role="img" aria-label="stage timeline">{QUEUE_DEFS}'
        )
        for row, (name, begun, ended, state, queued) in enumerate(ran):
            y = 24 + row * 16
            parts.append(
                f'<text class="lane" x="{left - 6}" y="{y + 10}">{html_text(shortened(name, 22))}</text>'
            )
            if queued is not None:
                until = ended if begun is None else begun
                parts.append(queue_bar(x_of, queued, until, y, name))
            if begun is None:
                continue
            fill, stroke = COLOURS[state]
            x1 = x_of(begun)
            bar = max(x_of(ended) - x1, 1.5)
            parts.append(
                f'<rect x="{x1:.1f}" y="{y}" width="{bar:.1f}" height="12" fill="{fill}" '
                f'stroke="{stroke}"><title>{html_text(name)}: {ended - begun:.4f} s, '
                f"{state.value}</title></rect>"
            )
    else:
        bins = 200
        height = 180
        changes = [0] * (bins + 1)
        for _, begun, ended, _state, _queued in ran:
            if begun is None:
                continue
            first = int((begun - start) / span * bins)
            last = int((ended - start) / span * bins)
            changes[min(max(first, 0), bins)] += 1
            changes[min(max(last, 0), bins)] -= 1
        running, counts = 0, []
        for step in changes[:bins]:
            running += step
            counts.append(max(running, 0))
        peak = max(counts) or 1
        points = " ".join(
            f"{x_of(start + (i + 0.5) / bins * span):.1f},{150 - c / peak * 120:.1f}"
            for i, c in enumerate(counts)
        )
        parts.append(
            f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" role="img" aria-label="stages running over time">'
            f'<text class="lane" x="{left - 6}" y="34">{peak:,} running</text>'
            f'<text class="lane" x="{left - 6}" y="150">0</text>'
            f'<polyline class="area" points="{points}"/>'
        )
        waits = [
            (queued, ended if begun is None else begun)
            for _, begun, ended, _state, queued in ran
            if queued is not None
        ]
        parts.append(queued_curve(waits, x_of, start, span, bins))
    for record in result.audit[:MAX_CHANGES]:
        x = x_of(record.wall_time)
        kind = "accepted" if record.accepted else "refused"
        parts.append(
            f'<line class="change {kind}" x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="18">'
            f"<title>#{record.seq} {record.kind} by {html_text(record.requester)}: "
            f"{html_text(record.reason)}</title></line>"
        )
    parts.append(
        f'<text class="axis" x="{left}" y="{height - 4}">0 s</text>'
        f'<text class="axis" x="{width - 20}" y="{height - 4}" text-anchor="end">'
        f"{span:.3f} s</text></svg>"
    )
    return "".join(parts)


def _memory_svg(result: RunResult, offset: float) -> str:
    samples = result.stats.memory
    if len(samples) < 2:
        return '<p class="note">Memory was not sampled for this run (runtime(monitor_interval=...) samples it).</p>'
    width, height = 900, 160
    first, last = samples[0][0], samples[-1][0]
    span = max(last - first, 1e-9)
    top = max(rss for _, rss in samples) or 1
    points = " ".join(
        f"{40 + (t - first) / span * (width - 60):.1f},{140 - rss / top * 120:.1f}"
        for t, rss in samples
    )
    return (
        f'<svg id="memory" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="memory">'
        f'<polyline class="memory" points="{points}"/>'
        f'<text class="axis" x="4" y="24">{top / 2**20:,.0f} MB</text>'
        f'<text class="axis" x="4" y="140">0</text></svg>'
    )


# -- tables ----------------------------------------------------------------------


def _changes_table(audit: tuple[AuditRecord, ...], start: float) -> str:
    rows = []
    for record in audit[:MAX_CHANGES]:
        what = []
        if record.added:
            what.append(
                f"added {', '.join(record.added[:6])}{' …' if len(record.added) > 6 else ''}"
            )
        if record.removed:
            what.append(f"removed {', '.join(record.removed[:6])}")
        if record.edges:
            what.append(
                "edges "
                + ", ".join(f"{u}→{d}" for u, d in record.edges[:4])
                + (" …" if len(record.edges) > 4 else "")
            )
        if record.cancelled:
            what.append(f"cancelled {', '.join(record.cancelled[:6])}")
        if not record.accepted:
            what.append(f"refused: {record.error_type}: {record.error}")
        rows.append(
            f'<tr class="{"accepted" if record.accepted else "refused"}">'
            f"<td>{record.seq}</td><td>+{record.wall_time - start:.3f} s</td>"
            f"<td>{html_text(record.requester)}</td><td>{html_text(record.kind)}</td>"
            f"<td>{html_text('; '.join(what) or 'no change needed')}</td>"
            f"<td>{html_text(record.reason)}</td></tr>"
        )
    more = (
        f'<p class="note">{len(audit) - MAX_CHANGES:,} more changes are not listed.</p>'
        if len(audit) > MAX_CHANGES
        else ""
    )
    return (
        '<input id="filter" type="search" placeholder="filter changes">'
        '<table id="changes"><thead><tr><th>#</th><th>when</th><th>who</th>'
        "<th>what</th><th>effect</th><th>why</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + more
    )


def _failures(result: RunResult) -> str:
    if not result.errors:
        return '<p class="note">No stage failed.</p>'
    parts = []
    for name, error in list(result.errors.items())[:MAX_FAILURES]:
        if isinstance(error, RecordedError):
            text = error.traceback or error.recorded
        else:
            text = "".join(traceback.format_exception(error))
        parts.append(
            f'<details class="failure" open><summary>{html_text(name)}: '
            f"{html_text(type(error).__name__ if not isinstance(error, RecordedError) else error.recorded.split(':', 1)[0])}"
            f"</summary><pre>{html_text(text)}</pre></details>"
        )
    if len(result.errors) > MAX_FAILURES:
        parts.append(
            f'<p class="note">{len(result.errors) - MAX_FAILURES:,} more failures.</p>'
        )
    return "".join(parts)


# -- the page --------------------------------------------------------------------

_CSS: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.figures{display:flex;flex-wrap:wrap;gap:10px}
.figure{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px}
.figure b{display:block;font-size:18px}
.scroll{overflow:auto;max-height:640px;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif} .lane{text-anchor:end}
.edge{fill:none;stroke:#999;stroke-width:1}
.change{stroke-width:2} .change.accepted{stroke:#3366cc} .change.refused{stroke:#cc2222}
.area{fill:none;stroke:#3366cc;stroke-width:2} .memory{fill:none;stroke:#884488;stroke-width:2}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;vertical-align:top}
tr.refused td{color:#aa2222} .note{color:#666} pre{background:#f8f8f8;padding:8px;overflow:auto}
.legend span{display:inline-block;margin-right:10px;padding:1px 6px;border-radius:4px;border:1px solid}
"""

_JS: Final = """
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));document.body.dataset.errors=errors.join('\\n');});
  var filter=document.getElementById('filter');
  if(filter){filter.addEventListener('input',function(){
    var q=filter.value.toLowerCase();
    document.querySelectorAll('#changes tbody tr').forEach(function(tr){
      tr.style.display=tr.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
  var summary=JSON.parse(document.getElementById('summary-data').textContent);
  document.getElementById('drawn').textContent=
    document.querySelectorAll('#dag g.stage').length+' boxes drawn for '+summary.stages+' stages';
  document.body.dataset.ready='yes';
})();
"""


@renders("html")
def render_report(result: RunResult) -> str:
    """The HTML report of ``result`` (a live run's or one read from a journal)."""
    offset = result._wall_offset
    timings = result.timings
    starts = [t.started + offset for t in timings.values() if t.started is not None]
    starts += [t.queued + offset for t in timings.values() if t.queued is not None]
    ends = [
        t.finished + offset
        for t in timings.values()
        if t.started is not None or t.queued is not None
    ]
    walls = [record.wall_time for record in result.audit]
    start = min([*starts, *walls], default=result.stats.started_at)
    end = max([*ends, *walls], default=start)
    stats = result.stats
    counts = {state.value: count for state, count in stats.counts.items() if count}
    accepted = sum(1 for record in result.audit if record.accepted)
    figures = [
        ("status", result.status),
        ("stages", f"{stats.stages:,}"),
        ("added at run time", f"{stats.added:,}"),
        ("changes", f"{accepted:,} accepted, {len(result.audit) - accepted:,} refused"),
        ("duration", f"{stats.duration:.3f} s"),
        ("stages/s", f"{stats.stages_per_second:,.0f}"),
    ]
    figures.extend(queue_figures(stats))
    if stats.peak_rss is not None:
        figures.append(("peak RSS", f"{stats.peak_rss / 2**20:,.0f} MB"))
    figures.extend((f"{state}", f"{count:,}") for state, count in counts.items())
    summary = {
        "run_id": result.run_id,
        "name": result.name,
        "status": result.status,
        "stages": stats.stages,
        "changes": len(result.audit),
        "counts": counts,
    }
    legend = "".join(
        f'<span style="background:{fill};border-color:{stroke}">{state.value}</span>'
        for state, (fill, stroke) in COLOURS.items()
    )
    body = (
        f"<h1>Run {html_text(result.name)} <small>{html_text(result.run_id)}</small></h1>"
        f"<p>started {html_text(when_text(stats.started_at))}</p>"
        '<section id="summary"><div class="figures">'
        + "".join(
            f'<div class="figure"><span>{html_text(label)}</span><b>{html_text(value)}</b></div>'
            for label, value in figures
        )
        + "</div></section>"
        + '<section id="graph"><h2>Final graph</h2>'
        f'<p class="legend">{legend} dashed: added at run time; '
        '<span id="drawn"></span></p>'
        f'<div class="scroll">{graph_svg(result.states, result.dependencies, result.origins)}</div></section>'
        + '<section id="timeline-section"><h2>Timeline</h2>'
        '<p class="note">Ticks on top: graph changes (blue accepted, red refused). '
        f"{QUEUE_NOTE}</p>"
        f'<div class="scroll">{_timeline_svg(result, offset, start, end)}</div></section>'
        + f'<section id="changes-section"><h2>Graph changes</h2>{_changes_table(result.audit, start)}</section>'
        + f'<section id="failures"><h2>Failures</h2>{_failures(result)}</section>'
        + f'<section id="memory-section"><h2>Memory</h2>{_memory_svg(result, offset)}</section>'
    )
    data = _script_json(summary)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>dagvisor run {html_text(result.name)} {html_text(result.run_id[:8])}</title>"
        f"<style>{_CSS}{QUEUE_CSS}</style></head><body>{body}"
        f'<script id="summary-data" type="application/json">{data}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )
