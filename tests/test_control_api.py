"""The control API served by a runtime, over the network with a real HTTP client."""

from __future__ import annotations

import httpx
import pytest
import trio
from control_helpers import extra, fan, held, served, sse_events, waiting

from dagvisor import EventStream, StageFinished, runtime
from dagvisor.errors import InvalidRequestError, RunFailedError
from dagvisor.supervisor._control import _feed


async def test_the_api_lists_shows_and_audits_runs(tmp_path):
    async with served(tmp_path) as (rt, _, vi, _, _):
        run = await rt.start(held())
        listed = (await vi.get("/api/runs")).json()
        assert listed == [{"id": run.id, "name": "held", "status": "running"}]
        shown = await vi.get(f"/api/runs/{run.id}")
        assert shown.status_code == 200
        assert shown.json() == {
            "id": run.id,
            "name": "held",
            "status": "running",
            "version": 0,
            "stages": {"hold": "running"},
            "edges": [],
        }
        assert (await vi.get(f"/api/runs/{run.id}/audit")).json() == []
        assert (await vi.get("/api/runs/nope")).status_code == 404
        assert (await vi.get("/api/runs/nope/audit")).status_code == 404


async def test_rt_url_is_none_without_serve():
    async with runtime() as rt:
        assert rt.url is None


async def test_an_operator_adds_a_registered_stage_audited_as_its_token(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        watched = run.events(buffer=100)
        answer = await op.post(
            f"/api/runs/{run.id}/stages",
            json={"stage": "extra", "name": "late", "reason": "a new check"},
        )
        assert answer.status_code == 201
        assert answer.json() == {"name": "late", "seq": 0}
        answer = await op.post(
            f"/api/runs/{run.id}/stages",
            json={"stage": "extra", "after": ["hold"], "reason": "after it"},
        )
        assert answer.status_code == 201
        assert answer.json() == {"name": "extra", "seq": 1}
        (first, second) = run.audit()
        assert first.requester == second.requester == "api:alice"
        assert first.reason == "a new check"
        assert ["hold", "extra"] in (await op.get(f"/api/runs/{run.id}")).json()[
            "edges"
        ]
        await finished(watched, 1)
        assert run.snapshot().states["late"] == "succeeded"
        unknown = await op.post(
            f"/api/runs/{run.id}/stages", json={"stage": "rm -rf", "reason": "r"}
        )
        assert unknown.status_code == 422
        assert unknown.json()["error"] == "UnknownStageError"
        await run.cancel()


async def test_a_stage_added_through_the_api_keeps_its_declared_options(tmp_path):
    # `careful` is declared with retries=2: added by its registered name, it
    # runs as declared (its third attempt succeeds), under its declared name
    # or the one asked for.
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        watched = run.events(buffer=100)
        for body in (
            {"stage": "careful", "reason": "as declared"},
            {"stage": "careful", "name": "careful_2", "reason": "renamed"},
        ):
            answer = await op.post(f"/api/runs/{run.id}/stages", json=body)
            assert answer.status_code == 201
        await finished(watched, 2)
        states = run.snapshot().states
        assert states["careful"] == states["careful_2"] == "succeeded"
        await run.cancel()
        with pytest.raises(RunFailedError) as info:
            await run.wait()
    outputs = info.value.result.outputs
    assert outputs["careful"] == outputs["careful_2"] == "ran 3 times"


async def test_a_refused_change_is_409_with_its_typed_error(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        body = {"stage": "extra", "after": ["hold"], "reason": "r"}
        assert (
            await op.post(f"/api/runs/{run.id}/stages", json=body)
        ).status_code == 201
        other = {"stage": "leaf", "name": "extra", "reason": "r"}
        twice = await op.post(f"/api/runs/{run.id}/stages", json=other)
        assert twice.status_code == 409
        assert twice.json()["error"] == "DuplicateStageError"
        assert "extra" in twice.json()["message"]
        cycle = await op.post(
            f"/api/runs/{run.id}/edges",
            json={"upstream": "extra", "downstream": "hold", "reason": "r"},
        )
        assert cycle.status_code == 409
        assert cycle.json()["error"] in ("CycleError", "StageStateError")
        missing = await op.post(
            f"/api/runs/{run.id}/stages/ghost/cancel", json={"reason": "r"}
        )
        assert missing.status_code == 409
        assert missing.json()["error"] == "UnknownStageError"
        audit = (await op.get(f"/api/runs/{run.id}/audit")).json()
        assert [r["accepted"] for r in audit] == [True, False, False, False]
        assert audit[1]["error_type"] == "DuplicateStageError"
        assert audit[0]["requester"] == "api:alice"
        assert audit[0]["signal"] is None
        await run.cancel()


async def test_an_edge_between_pending_stages_is_201(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        for name in ("x", "y"):
            body = {"stage": "extra", "name": name, "after": ["hold"], "reason": "r"}
            await op.post(f"/api/runs/{run.id}/stages", json=body)
        edge = await op.post(
            f"/api/runs/{run.id}/edges",
            json={"upstream": "x", "downstream": "y", "reason": "y reads x"},
        )
        assert edge.status_code == 201
        assert edge.json()["seq"] == 2
        assert ["x", "y"] in (await op.get(f"/api/runs/{run.id}")).json()["edges"]
        await run.cancel()


async def test_cancel_a_stage_then_the_run(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held().add(extra, after=["hold"]))
        cancelled = await op.post(
            f"/api/runs/{run.id}/stages/extra/cancel", json={"reason": "too slow"}
        )
        assert cancelled.status_code == 200
        assert run.snapshot().states["extra"] == "cancelled"
        answer = await op.post(f"/api/runs/{run.id}/cancel", json={"reason": "stop"})
        assert answer.status_code == 200
        with pytest.raises(Exception, match="cancelled"):
            await run.wait()
        assert [(r.kind, r.requester) for r in run.audit()] == [
            ("cancel_stage", "api:alice"),
            ("cancel_run", "api:alice"),
        ]
        assert (await op.get("/api/runs")).json()[0]["status"] == "cancelled"
        late = await op.post(f"/api/runs/{run.id}/cancel", json={"reason": "again"})
        assert late.status_code == 409
        assert late.json()["error"] == "RunClosedError"


async def finished(stream: EventStream, count: int) -> None:
    """Wait for ``count`` stages to succeed, as a run's own event stream tells."""
    seen = 0
    with trio.fail_after(30):
        async for event in stream:
            if isinstance(event, StageFinished) and event.state == "succeeded":
                seen += 1
                if seen == count:
                    return
    raise AssertionError(f"the run ended after {seen} of {count} stages")


async def test_the_event_stream_follows_the_run_until_it_ends(tmp_path):
    async with served(tmp_path) as (rt, op, vi, _, _):
        run = await rt.start(held())
        async with vi.stream("GET", f"/api/runs/{run.id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(":")  # the stream is open
            await op.post(
                f"/api/runs/{run.id}/stages", json={"stage": "extra", "reason": "go"}
            )
            await op.post(f"/api/runs/{run.id}/cancel", json={"reason": "done"})
            text = "\n".join([line async for line in lines])
        events = sse_events(text)
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "graph_changed"
        assert events[0][1]["requester"] == "api:alice"
        assert ("stage_finished", {"stage": "extra", "state": "succeeded"}) in events
        assert events[-1] == (
            "end",
            {"id": run.id, "name": "held", "status": "cancelled"},
        )


async def test_a_stuck_reader_loses_events_and_is_told_how_many(tmp_path, monkeypatch):
    # A reader that reads nothing while 600 events are published in a burst:
    # the run ends all the same, and the reader learns what it lost. The 300
    # leaves start in one step of the supervisor, more than the run keeps
    # for the stream's feed between two takes.
    monkeypatch.setattr(_feed, "EVENT_BUFFER", 4)
    monkeypatch.setattr(_feed, "TAKE_BUFFER", 4)
    async with served(tmp_path) as (rt, _, vi, _, _):
        run = await rt.start(held())
        async with vi.stream("GET", f"/api/runs/{run.id}/events") as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(":")
            watched = run.events(buffer=10_000)
            await run.add_stage(fan, reason="fan out")
            await finished(watched, 301)  # fan and its 300 leaves
            await run.cancel()
            events = sse_events("\n".join([line async for line in lines]))
        lost = [data["count"] for kind, data in events if kind == "lost"]
        assert lost
        assert all(count > 0 for count in lost)
        seen = len([kind for kind, _ in events if kind not in ("lost", "end")])
        assert seen + sum(lost) >= 600
        assert events[-1][0] == "end"


async def test_serve_needs_tokens_and_a_valid_address(tmp_path):
    with pytest.raises(InvalidRequestError, match="tokens"):
        async with runtime(serve="127.0.0.1:0"):
            pass  # pragma: no cover
    for bad in ("127.0.0.1", "127.0.0.1:99999", ":80", "::1:80", "a b:1", 8470):
        with pytest.raises(InvalidRequestError, match="HOST:PORT"):
            async with runtime(serve=bad, tokens=tmp_path / "t"):
                pass  # pragma: no cover
    with pytest.raises(InvalidRequestError, match="serve too"):
        async with runtime(tokens=tmp_path / "t"):
            pass  # pragma: no cover


async def test_a_taken_port_is_a_typed_error(tmp_path):
    async with served(tmp_path) as (rt, _, _, _, _):
        port = httpx.URL(rt.url).port
        path = tmp_path / "tokens.txt"
        with pytest.raises(InvalidRequestError, match="cannot listen"):
            async with runtime(serve=f"127.0.0.1:{port}", tokens=path):
                pass  # pragma: no cover


async def test_an_operator_signals_a_run_audited_and_streamed(tmp_path):
    async with served(tmp_path) as (rt, op, vi, _, _):
        run = await rt.start(waiting())
        payload = {"approved": True, "by": ["dr-okafor"], "score": 0.5, "n": None}
        async with vi.stream("GET", f"/api/runs/{run.id}/events") as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(":")  # following from now on
            answer = await op.post(
                f"/api/runs/{run.id}/signals/go",
                json={"payload": payload, "reason": "reviewed"},
            )
            assert answer.status_code == 202
            assert answer.json() == {"signal": "go", "seq": 0}
            text = "\n".join([line async for line in lines])
        events = sse_events(text)
        signals = [data for kind, data in events if kind == "signal"]
        assert len(signals) == 1
        assert signals[0]["signal"] == "go"
        assert signals[0]["requester"] == "api:alice"
        assert signals[0]["reason"] == "reviewed"
        result = await run.wait()
        assert result.outputs["waits"] == payload
        (record,) = run.audit()
        assert (record.kind, record.requester, record.signal) == (
            "signal",
            "api:alice",
            "go",
        )
        audited = (await vi.get(f"/api/runs/{run.id}/audit")).json()
        assert audited[0]["signal"] == "go"
        # The run has ended: a signal is refused with the typed error.
        late = await op.post(
            f"/api/runs/{run.id}/signals/go", json={"payload": 1, "reason": "late"}
        )
        assert late.status_code == 409
        assert late.json()["error"] == "RunClosedError"


async def test_a_signal_without_payload_carries_null(tmp_path):
    async with served(tmp_path) as (rt, op, vi, _, _):
        run = await rt.start(waiting())
        body = {"reason": "no payload"}
        assert (
            await vi.post(f"/api/runs/{run.id}/signals/go", json=body)
        ).status_code == 403
        answer = await op.post(f"/api/runs/{run.id}/signals/go", json=body)
        assert answer.status_code == 202
        assert (await run.wait()).outputs["waits"] is None
        assert (
            await op.post("/api/runs/nope/signals/go", json=body)
        ).status_code == 404
