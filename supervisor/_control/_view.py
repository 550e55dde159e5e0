"""The live view: the runs' page, a run's live graph page, its data, and its scripts.

``GET /`` lists the runtime's runs, kept up to date (``runs_view.js``
reads ``/api/runs`` every two seconds); ``GET /runs/{id}`` draws a run's graph
with the report's own drawing script and vendored dagre (`_assets`),
served from ``/static/`` (no network, no build step), and keeps it up to
date from the run's event stream (``live_view.js``). A page opened with
``?token=SECRET`` logs the browser in (`Access.login`) and redirects to
the same page without the secret.

Every page is sent with a Content-Security-Policy that runs scripts only
from this server's files (no inline script, no other origin), fetches
from nowhere else and cannot be framed; every text of a run on a page is
escaped here (HTML) or set as text by the scripts, never as markup.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

import trio
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._assets import dagre_script, graph_view_script
from .._report import _CSS as REPORT_CSS
from .._text import html_text, line_text
from ._access import Refusal, answering
from ._forms import dumps, run_summary
from ._live import live_graph

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from .._run import Run
    from ._access import Access
    from ._runs import RunIndex

__all__ = ["CSP", "view_routes"]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The pages' Content-Security-Policy: this server's own files, nothing inline."""

_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_LIVE_CSS: Final = """
body{margin:12px 18px}
header h1{margin-bottom:0} #status{margin:2px 0 8px}
.live{display:grid;grid-template-columns:minmax(0,1fr) 380px;gap:16px;align-items:start}
#trail{max-height:calc(100vh - 90px);overflow:auto;border-left:1px solid #eee;padding-left:12px}
#trail h2{margin-top:0} #trail td{font-size:12px} #trail td.mono{font-size:11px}
#runs td a{font-weight:600}
@media (max-width:900px){.live{grid-template-columns:1fr} #trail{border:0;padding:0}}
"""


def _read_static(name: str) -> str:
    return (
        resources.files("dagvisor.supervisor")
        .joinpath("_static", name)
        .read_text(encoding="utf-8")
    )


@functools.cache
def _static(name: str) -> tuple[bytes, str] | None:
    """A file the pages load, and its media type; None for any other name."""
    scripts: dict[str, Callable[[], str]] = {
        "dagre.js": dagre_script,
        "graph_view.js": graph_view_script,
        "live_view.js": functools.partial(_read_static, "live_view.js"),
        "runs_view.js": functools.partial(_read_static, "runs_view.js"),
    }
    if name in scripts:
        return scripts[name]().encode("utf-8"), "text/javascript; charset=utf-8"
    if name == "view.css":
        return (REPORT_CSS + _LIVE_CSS).encode("utf-8"), "text/css; charset=utf-8"
    return None


def _page(status: int, title: str, body: str) -> Response:
    text = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html_text(title)}</title>"
        '<link rel="stylesheet" href="/static/view.css"></head>'
        f"<body>{body}</body></html>\n"
    )
    return Response(
        text.encode("utf-8"),
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers=_HEADERS,
    )


def _refusal_page(refusal: Refusal) -> Response:
    if refusal.status == 401:
        body = (
            "<h1>Log in to this dagvisor runtime</h1><p>Open this page once with "
            "<code>?token=SECRET</code> added to its address, SECRET being a "
            "viewer's or an operator's token (<code>dagvisor token add</code> "
            "prints one). The browser then keeps a session cookie, and the "
            "address is shown without the secret.</p>"
        )
        return _page(401, "log in", body)
    body = f"<h1>{html_text(refusal.error)}</h1><p>{html_text(refusal.message)}</p>"
    return _page(refusal.status, refusal.error, body)


def _runs_table(runs: list[Run]) -> str:
    """The runs as the page first shows them; ``runs_view.js`` keeps them up to date."""
    rows = "".join(
        f'<tr><td><a href="/runs/{html_text(quote(run.id, safe=""))}">'
        f"{html_text(line_text(run.name))}</a></td>"
        f"<td>{html_text(summary['status'])}</td>"
        f'<td class="mono">{html_text(line_text(run.id))}</td></tr>'
        for run in runs
        for summary in (run_summary(run),)
    )
    hidden = " hidden" if runs else ""
    return (
        f'<p id="no-runs" class="note"{hidden}>This runtime has no run yet.</p>'
        '<table id="runs"><thead><tr><th>run</th><th>status</th><th>id</th>'
        f'</tr></thead><tbody id="runs-body">{rows}</tbody></table>'
        '<p id="runs-note" class="note"></p>'
        '<script src="/static/runs_view.js"></script>'
    )


def _run_page(run: Run) -> Response:
    name, run_id = html_text(line_text(run.name)), html_text(line_text(run.id))
    body = (
        f'<div id="live" data-run="{html_text(run.id)}"><header>'
        f'<h1>{name} <small>run {run_id} · <a href="/">all runs</a></small></h1>'
        '<p id="status" class="note">connecting…</p></header>'
        '<main class="live"><section id="graph"><div id="dag-host"></div></section>'
        '<aside id="trail"><h2>Audit trail</h2><p id="audit-note" class="note"></p>'
        '<table id="audit"><thead><tr><th>#</th><th>change</th><th>who</th>'
        '<th>why</th><th>what</th></tr></thead><tbody id="audit-body"></tbody>'
        "</table></aside></main></div>"
        '<script src="/static/dagre.js"></script>'
        '<script src="/static/graph_view.js"></script>'
        '<script src="/static/live_view.js"></script>'
    )
    return _page(200, f"{run.name} · dagvisor", body)


class _View:
    """The handlers of the live view's pages."""

    __slots__ = ("_access", "_limiter", "_runs")

    def __init__(self, runs: RunIndex, access: Access) -> None:
        self._runs = runs
        self._access = access
        self._limiter = trio.CapacityLimiter(1)

    def _logged_in(self, request: Request, here: str) -> Response | None:
        """A redirect that logs in, for a URL with ``?token=``; else None."""
        if "token" not in request.query_params:
            self._access.who(request, change=False)
            return None
        session = self._access.login(request.query_params["token"])
        if session is None:
            raise Refusal(401, "Unauthorized", "that token is not known here")
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        answer = RedirectResponse(
            here + (f"?{urlencode(kept)}" if kept else ""),
            status_code=303,
            headers=_HEADERS,
        )
        answer.set_cookie(
            self._access.cookie,
            session,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return answer

    def _run(self, request: Request) -> Run:
        run = self._runs.get(request.path_params["run_id"])
        if run is None:
            raise Refusal(404, "UnknownRunError", "this runtime has no run of that id")
        return run

    async def index(self, request: Request) -> Response:
        login = self._logged_in(request, "/")
        if login is not None:
            return login
        body = (
            "<h1>dagvisor <small>the runs of this runtime</small></h1>"
            f"{_runs_table(self._runs.all())}"
        )
        return _page(200, "runs · dagvisor", body)

    async def run(self, request: Request) -> Response:
        here = "/runs/" + quote(request.path_params["run_id"], safe="")
        login = self._logged_in(request, here)
        if login is not None:
            return login
        return _run_page(self._run(request))

    async def graph(self, request: Request) -> Response:
        self._access.who(request, change=False)
        drawn = await live_graph(self._run(request), self._limiter)
        return Response(
            dumps(drawn),
            media_type="application/json",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def static(self, request: Request) -> Response:
        found = _static(request.path_params["name"])
        if found is None:
            return _page(404, "not found", "<h1>Not found</h1>")
        content, media = found
        return Response(
            content,
            media_type=media,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )


def _html(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    return answering(handler, _refusal_page)


def _json_refusal(refusal: Refusal) -> Response:
    body: Any = {"error": refusal.error, "message": refusal.message}
    return Response(
        dumps(body),
        status_code=refusal.status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _json(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    return answering(handler, _json_refusal)


def view_routes(runs: RunIndex, access: Access) -> list[Route]:
    """The live view's routes."""
    view = _View(runs, access)
    return [
        Route("/", _html(view.index), methods=["GET"]),
        Route("/runs/{run_id}", _html(view.run), methods=["GET"]),
        Route("/runs/{run_id}/graph", _json(view.graph), methods=["GET"]),
        Route("/static/{name}", _html(view.static), methods=["GET"]),
    ]
