"""The live view of a served runtime, over HTTP: pages, logging in, the graph's data.

A real server on port 0 and a real client (httpx); the pages themselves
are drawn in a real browser by tests/test_live_view_browser.py.
"""

from __future__ import annotations

import httpx
from control_helpers import held, served

CSP_MUST = (
    "default-src 'none'",
    "script-src 'self'",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
)


def _cookie_of(answer: httpx.Response) -> str:
    header = answer.headers["set-cookie"]
    parts = [part.strip() for part in header.split(";")]
    assert "HttpOnly" in parts, header
    assert "SameSite=Strict" in parts or "samesite=strict" in header.lower(), header
    assert "Path=/" in parts, header
    return parts[0]


async def test_a_token_in_the_url_once_sets_a_cookie_and_redirects_without_it(
    tmp_path,
):
    async with served(tmp_path) as (rt, _, _, _, viewer):
        run = await rt.start(held())
        async with httpx.AsyncClient(base_url=rt.url) as browser:
            # Without the token: asked to log in, no page, no cookie.
            refused = await browser.get(f"/runs/{run.id}")
            assert refused.status_code == 401
            assert "?token=" in refused.text
            assert "set-cookie" not in refused.headers
            wrong = await browser.get(f"/runs/{run.id}?token=not-a-secret")
            assert wrong.status_code == 401
            assert "set-cookie" not in wrong.headers
            assert "not-a-secret" not in wrong.text

            answer = await browser.get(f"/runs/{run.id}?token={viewer}&x=1")
            assert answer.status_code == 303
            assert answer.headers["location"] == f"/runs/{run.id}?x=1"
            assert answer.headers["referrer-policy"] == "no-referrer"
            cookie = _cookie_of(answer)
            assert viewer not in cookie  # a session, not the secret

            page = await browser.get(answer.headers["location"])
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            for rule in CSP_MUST:
                assert rule in csp, csp
            assert "unsafe-inline" not in csp
            assert "<script>" not in page.text  # scripts come only from files
            assert 'src="/static/dagre.js"' in page.text
            assert 'src="/static/graph_view.js"' in page.text
            assert page.headers["x-content-type-options"] == "nosniff"

            # The cookie reads the API too: the graph's data, the events' source.
            graph = await browser.get(f"/runs/{run.id}/graph")
            assert graph.status_code == 200
            assert (await browser.get("/api/runs")).status_code == 200
            index = await browser.get("/")
            assert index.status_code == 200
            assert f'href="/runs/{run.id}"' in index.text
        await run.cancel()


async def test_the_cookie_never_changes_a_run_even_an_operators(tmp_path):
    async with served(tmp_path) as (rt, _, _, operator, _):
        run = await rt.start(held())
        async with httpx.AsyncClient(base_url=rt.url) as browser:
            answer = await browser.get(f"/?token={operator}")
            assert answer.status_code == 303
            assert answer.headers["location"] == "/"
            assert (await browser.get("/")).status_code == 200
            # A cross-site form could make the browser send the cookie: a POST
            # with it alone is not authenticated.
            for path in ("stages", "cancel"):
                posted = await browser.post(
                    f"/api/runs/{run.id}/{path}",
                    json={"stage": "extra", "reason": "riding the cookie"},
                )
                assert posted.status_code == 401, path
        assert len(run.audit()) == 0
        assert not run.done
        await run.cancel()


async def test_the_graph_data_marks_added_stages_and_carries_the_audit(tmp_path):
    async with served(tmp_path) as (rt, op, vi, _, _):
        run = await rt.start(held())
        added = await op.post(
            f"/api/runs/{run.id}/stages",
            json={"stage": "hold", "name": "late", "after": ["hold"], "reason": "why"},
        )
        assert added.status_code == 201
        graph = (await vi.get(f"/runs/{run.id}/graph")).json()
        assert graph["run"] == {"id": run.id, "name": "held", "status": "running"}
        model = graph["model"]
        names = {
            model["stages"][i]["name"]: box
            for box in model["boxes"]
            for i in box["stages"]
        }
        assert set(names) == {"hold", "late"}
        assert names["late"]["added"] == 1
        assert names["hold"]["added"] == 0
        assert names["hold"]["state"] == "running"
        assert names["late"]["state"] == "pending"
        late = next(s for s in model["stages"] if s["name"] == "late")
        assert late["why"] == "why"
        assert "api:alice" in late["added"]
        assert [r["requester"] for r in graph["audit"]] == ["api:alice"]
        assert graph["audit_total"] == 1
        assert set(model["colours"]) >= {"running", "pending", "succeeded"}
        await run.cancel()


async def test_static_scripts_are_served_and_nothing_else(tmp_path):
    async with (
        served(tmp_path) as (rt, *_),
        httpx.AsyncClient(base_url=rt.url) as browser,
    ):
        for name in ("dagre.js", "graph_view.js", "live_view.js", "view.css"):
            answer = await browser.get(f"/static/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert "dagvisorGraph" in (await browser.get("/static/graph_view.js")).text
        for name in ("../_assets.py", "%2e%2e/_assets.py", "dagre", "nope.js"):
            assert (await browser.get(f"/static/{name}")).status_code == 404
