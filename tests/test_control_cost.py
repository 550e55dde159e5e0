"""What the control API costs a run: nothing when off, and no wait for its readers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from control_helpers import fan, held, served, sse_events


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
