"""The HTML run report: one self-contained file (inline CSS, SVG and a little JS).

Nothing is fetched when the file is viewed. It shows the summary figures, the
final graph (states as colours, stages added at run time dashed), a timeline
of stage execution with the graph changes marked on it, the changes (who,
when, why), failures with their tracebacks, and the memory curve when the run
was sampled.

The graph is modelled by ``_report_graph`` (groups, families, chains: a
summary at any size), given to the page as data (``_report_data``: each
box's stages with their outputs and parameters, shortened and bounded) and
laid out in the browser by the vendored dagre (``_assets``), with zoom, pan
and a box's stages on demand. The timeline draws one bar per stage up to
`MAX_BARS` stages, else how many stages ran at each moment. Every name,
reason and error is escaped for HTML, and the JSON data blocks for a script
element (`_script_json`): no text of a run can end the page's script or
stop it.
"""

from __future__ import annotations

import json
import traceback
from typing import TYPE_CHECKING, Final

from dagvisor.actors import RecordedError, StageState

from ._assets import dagre_script, graph_view_script
from ._export import COLOURS
from ._report_data import graph_data
from ._report_graph import graph_model
from ._report_history import history_section
from ._report_queue import (
    QUEUE_CSS,
    QUEUE_DEFS,
    QUEUE_NOTE,
    queue_bar,
    queue_figures,
    queue_lanes,
    queue_waits,
    queued_curve,
    waited_only,
)
from ._result import renders
from ._text import html_text, shortened, when_text

if TYPE_CHECKING:
    from collections.abc import Sequence

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


def _timeline_svg(
    result: RunResult,
    ran: list[tuple[str, float, float, StageState]],
    start: float,
    end: float,
    waits: dict[str, tuple[float, float]],
) -> str:
    span = max(end - start, 1e-9)
    width, left = 900, 160

    def x_of(wall: float) -> float:
        return left + (wall - start) / span * (width - left - 20)

    parts = []
    # Stages that waited and never ran get a lane of their own, after the rest.
    unran = waited_only(waits, ran)
    if len(ran) + len(unran) <= MAX_BARS:
        height = 40 + 16 * (len(ran) + len(unran))
        parts.append(
            f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" role="img" aria-label="stage timeline">{QUEUE_DEFS}'
        )
        for row, (name, begun, ended, state) in enumerate(ran):
            y = 24 + row * 16
            fill, stroke = COLOURS[state]
            x1 = x_of(begun)
            bar = max(x_of(ended) - x1, 1.5)
            parts.append(
                f'<text class="lane" x="{left - 6}" y="{y + 10}">{html_text(shortened(name, 22))}</text>'
                f"{queue_bar(x_of, waits.get(name), y, name)}"
                f'<rect x="{x1:.1f}" y="{y}" width="{bar:.1f}" height="12" fill="{fill}" '
                f'stroke="{stroke}"><title>{html_text(name)}: {ended - begun:.4f} s, '
                f"{state.value}</title></rect>"
            )
        parts.extend(queue_lanes(unran, x_of, 24 + len(ran) * 16, left))
    else:
        bins = 200
        height = 180
        changes = [0] * (bins + 1)
        for _, begun, ended, _state in ran:
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
            f"{queued_curve(list(waits.values()), x_of, start, span, bins)}"
        )
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


def _changes_table(audit: Sequence[AuditRecord], start: float) -> str:
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
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 2px} h1 small{font-size:13px;color:#666;font-weight:normal}
h2{font-size:17px;margin:22px 0 6px}
.figures{display:flex;flex-wrap:wrap;gap:8px}
.figure{border:1px solid #ddd;border-radius:6px;padding:3px 10px;min-width:90px;font-size:12px;color:#555}
.figure b{display:block;font-size:15px;color:#222}
.scroll{overflow:auto;max-height:640px;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif} .lane{text-anchor:end}
.edge{fill:none;stroke:#8a8f98;stroke-width:1.2}
#dag{display:block} #dag text{font:12px system-ui,sans-serif;fill:#1d2330} #dag text.count,#dag text.cell{font-size:11px}
#dag text.count{fill:#4a5060} #dag .chain-bg{fill:#f6f7f9;stroke:#cfd4db}
#dag g.stage{cursor:pointer} #dag g.stage:hover rect:first-of-type{stroke-width:2.4}
.dag-tools{display:flex;gap:6px;align-items:center;margin:0 0 6px}
.dag-tools button{font:13px system-ui,sans-serif;min-width:34px;padding:2px 8px;border:1px solid #bbb;border-radius:4px;background:#fafafa;cursor:pointer}
.dag-view{overflow:auto;border:1px solid #e3e3e3;border-radius:6px;cursor:grab;background:#fff}
.dag-view.dragging{cursor:grabbing;user-select:none}
.dag-details{margin-top:8px} .dag-details h3{font-size:15px;margin:8px 0 2px}
.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.edge.added-by{stroke:#7b3fbf;stroke-dasharray:2,3}
.added{display:inline-block;width:14px;height:14px;border-radius:7px;background:#7b3fbf;color:#fff;text-align:center;line-height:14px;font-size:12px;font-weight:bold}
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
  var graph=JSON.parse(document.getElementById('graph-data').textContent);
  window.dagvisorGraph.draw(document.getElementById('dag-host'),graph);
  document.body.dataset.ready='yes';
})();
"""


@renders("html")
def render_report(result: RunResult) -> str:
    """The HTML report of ``result`` (a live run's or one read from a journal)."""
    offset = result._wall_offset
    # The result's mappings are views computed per read: read each once.
    states = dict(result.states)
    ran = [
        (name, timing.started + offset, timing.finished + offset, states[name])
        for name, timing in result.timings.items()
        if timing.started is not None
    ]
    ran.sort(key=lambda row: row[1])
    walls = [record.wall_time for record in result.audit]
    waits = queue_waits(result.timings, offset)  # queue time, drawn apart
    start = min(
        [*(row[1] for row in ran), *(w[0] for w in waits.values()), *walls],
        default=result.stats.started_at,
    )
    end = max(
        [*(row[2] for row in ran), *(w[1] for w in waits.values()), *walls],
        default=start,
    )
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
        f'<p class="note">started {html_text(when_text(stats.started_at))}</p>'
        '<section id="summary"><div class="figures">'
        + "".join(
            f'<div class="figure"><span>{html_text(label)}</span><b>{html_text(value)}</b></div>'
            for label, value in figures
        )
        + "</div></section>"
        + '<section id="graph"><h2>Final graph</h2>'
        f'<p class="legend">{legend} <b class="added">+</b> dashed: added at run '
        "time, by the stage a dotted arrow comes from. Click a box to list its "
        "stages.</p>"
        '<div id="dag-host"><p class="note">The graph is drawn by the page\'s '
        "script.</p></div></section>"
        + '<section id="timeline-section"><h2>Timeline</h2>'
        '<p class="note">Ticks on top: graph changes (blue accepted, red refused). '
        f"{QUEUE_NOTE}</p>"
        f'<div class="scroll">{_timeline_svg(result, ran, start, end, waits)}</div></section>'
        + f'<section id="changes-section"><h2>Graph changes</h2>{_changes_table(result.audit, start)}</section>'
        + f'<section id="failures"><h2>Failures</h2>{_failures(result)}</section>'
        + history_section(result)
        + f'<section id="memory-section"><h2>Memory</h2>{_memory_svg(result, offset)}</section>'
    )
    data = _script_json(summary)
    model = graph_model(states, dict(result.dependencies), dict(result.origins))
    drawing = _script_json(graph_data(result, model, states))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>dagvisor run {html_text(result.name)} {html_text(result.run_id[:8])}</title>"
        f"<style>{_CSS}{QUEUE_CSS}</style></head><body>{body}"
        f'<script id="summary-data" type="application/json">{data}</script>'
        f'<script id="graph-data" type="application/json">{drawing}</script>'
        f"<script>{dagre_script()}</script><script>{graph_view_script()}</script>"
        f"<script>{_JS}</script></body></html>\n"
    )
