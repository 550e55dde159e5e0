"""What the control API costs a run: nothing when off, and no wait for its readers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from contextlib import AsyncExitStack
from typing import Any

import httpx
import trio
from control_helpers import fan, held, served, sse_events

from dagvisor import Pipeline, stage
from dagvisor.supervisor._control import _feed


def test_a_runtime_that_does_not_serve_imports_no_web_stack():
    # In a fresh interpreter: a runtime without serve= runs a pipeline, reads
    # its events, and never imports the ASGI stack or an HTTP library.
    code = textwrap.dedent(
        """
        import json, sys, trio
        from dagvisor import Pipeline, runtime, stage

        @stage
        async def one(ctx):
            return 1

        async def main():
            async with runtime() as rt:
                run = await rt.start(Pipeline("p").add(one))
                async for _ in run.events():
                    pass
                await run.wait()
            assert rt.url is None

        trio.run(main)
        roots = {name.partition(".")[0] for name in sys.modules}
        print(json.dumps(sorted(roots)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    roots = set(json.loads(out.stdout))
    assert "dagvisor" in roots
    web = {"starlette", "hypercorn", "h11", "h2", "wsproto", "httpx", "httpcore"}
    assert not roots & web, roots & web


async def test_readers_of_a_run_share_one_subscription(tmp_path):
    # However many clients follow a run's events, the run publishes to one
    # reader, and to none once they all left.
    async with served(tmp_path) as (rt, _, vi, _, _):
        run = await rt.start(held())
        log = run._supervisor.events
        async with (
            vi.stream("GET", f"/api/runs/{run.id}/events") as first,
            vi.stream("GET", f"/api/runs/{run.id}/events") as second,
            vi.stream("GET", f"/api/runs/{run.id}/events") as third,
        ):
            streams = [first.aiter_lines(), second.aiter_lines(), third.aiter_lines()]
            for lines in streams:
                assert (await anext(lines)).startswith(":")
            assert log.readers == 1
            await run.add_stage(fan, reason="fan out")
            await run.cancel()
            texts = ["\n".join([line async for line in lines]) for lines in streams]
            # Each stream's generator ended before its body did.
            assert log.readers == 0
    for text in texts:
        events = sse_events(text)
        assert events[-1][0] == "end"
        finished = [data["stage"] for kind, data in events if kind == "stage_finished"]
        assert "fan" in finished
        assert finished == [
            data["stage"]
            for kind, data in sse_events(texts[0])
            if kind == "stage_finished"
        ]


GATE: list[trio.Event] = []


@stage
async def gated(ctx: Any) -> int:
    await GATE[0].wait()
    return 0


@stage
async def step(ctx: Any) -> int:
    return 0


async def test_a_reader_that_never_reads_does_not_hold_the_run(tmp_path, monkeypatch):
    # Two clients whose sockets take almost nothing (a receive buffer of a
    # few KB), writes as often as they can: one reads nothing until the run
    # ended, the other never reads. The run goes to its end all the same;
    # the first then learns how many events it lost, and the runtime ends
    # with the second still connected.
    monkeypatch.setattr(_feed, "EVENT_BUFFER", 100)
    monkeypatch.setattr(_feed, "TAKE_BUFFER", 100)
    monkeypatch.setattr(_feed, "PACE", 0)
    stages = 3000  # some 130 KB of events, far more than the sockets hold
    GATE[:] = [trio.Event()]
    pipeline = Pipeline.chain(
        [gated.named("s0"), *(step.named(f"s{i}") for i in range(1, stages))],
        name="chain",
    )
    tiny = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    with trio.fail_after(20):  # a guard against a hang, not a measure
        async with (
            AsyncExitStack() as clients,
            served(tmp_path) as (rt, _, _, _, viewer),
        ):
            slow = await clients.enter_async_context(
                httpx.AsyncClient(
                    base_url=rt.url,
                    # The text itself: deflated, it would fit in the sockets.
                    headers={
                        "Authorization": f"Bearer {viewer}",
                        "Accept-Encoding": "identity",
                    },
                    transport=httpx.AsyncHTTPTransport(socket_options=tiny),
                    timeout=httpx.Timeout(10, read=None),
                )
            )
            run = await rt.start(pipeline)
            url = f"/api/runs/{run.id}/events"
            await clients.enter_async_context(slow.stream("GET", url))  # never read
            async with slow.stream("GET", url) as late:
                lines = late.aiter_lines()
                assert (await anext(lines)).startswith(":")
                GATE[0].set()
                result = await run.wait()
                assert result.status == "succeeded"
                events = sse_events("\n".join([line async for line in lines]))
        # The runtime block ended with a client still connected, unread.
    lost = [data["count"] for kind, data in events if kind == "lost"]
    assert lost
    assert all(count > 0 for count in lost)
    seen = [kind for kind, _ in events if kind not in ("lost", "end")]
    # Each stage started and finished, but the first had started before.
    assert len(seen) + sum(lost) == 2 * stages - 1
    assert seen[-1] == "stage_finished"
    assert events[-1] == ("end", {"id": run.id, "name": "chain", "status": "succeeded"})
