"""Running static pipelines: outcomes, failure policies, retries, timeouts, cleanup."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from conftest import tasks_below

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import (
    InvalidRequestError,
    RunClosedError,
    RunFailed,
    StageTimeoutError,
)


@stage
async def one(ctx):
    return 1


@stage
async def plus_one(ctx):
    (value,) = ctx.inputs.values()
    return value + 1


@stage
async def boom(ctx):
    raise ValueError("boom")


@stage
async def forever(ctx):
    await trio.sleep_forever()


async def test_the_quick_start_of_the_issue():
    @stage
    async def a(ctx):
        return 1

    @stage(retries=2, timeout=5.0)
    async def b(ctx):
        return ctx.inputs["a"] + 1

    pipeline = Pipeline("demo").add(a).add(b, after=["a"])
    async with runtime() as rt:
        result = await rt.run(pipeline, inputs={"x": 1})
    assert result.outputs["b"] == 2
    assert result.status == "succeeded"
    assert result.ok
    assert dict(result.states) == {"a": StageState.SUCCEEDED, "b": StageState.SUCCEEDED}
    assert result.stats.stages == 2
    assert result.stats.counts[StageState.SUCCEEDED] == 2


async def test_stages_see_inputs_read_only_run_inputs_and_their_name():
    seen = {}

    @stage
    async def look(ctx):
        seen["name"] = ctx.name
        seen["inputs"] = dict(ctx.inputs)
        seen["x"] = ctx.run_inputs["x"]
        with pytest.raises(TypeError):
            ctx.inputs["one"] = 5
        with pytest.raises(TypeError):
            ctx.run_inputs["x"] = 5
        return "ok"

    async with runtime() as rt:
        result = await rt.run(
            Pipeline("p").add(one).add(look, after=["one"]), inputs={"x": 7}
        )
    assert seen == {"name": "look", "inputs": {"one": 1}, "x": 7}
    assert result.outputs["look"] == "ok"


async def test_plain_functions_run_in_a_worker_thread():
    loop_thread = threading.get_ident()

    @stage
    def blocking(ctx):
        return (threading.get_ident(), ctx.inputs["one"] * 5)

    async with runtime(thread_limit=2) as rt:
        result = await rt.run(Pipeline("p").add(one).add(blocking, after=["one"]))
    thread_id, value = result.outputs["blocking"]
    assert value == 5
    assert thread_id != loop_thread


async def test_timings_are_recorded_on_the_run_clock(autojump_clock):
    @stage
    async def slow(ctx):
        await trio.sleep(3)
        return 1

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(slow).add(plus_one, after=["slow"]))
    assert result.timings["slow"].duration == pytest.approx(3)
    assert result.timings["plus_one"].started == pytest.approx(
        result.timings["slow"].finished
    )
    assert result.stats.duration == pytest.approx(3)


async def test_several_runs_share_one_runtime_concurrently(autojump_clock):
    @stage
    async def wait_then_add(ctx):
        await trio.sleep(ctx.run_inputs["delay"])
        return ctx.run_inputs["delay"]

    results = {}
    async with runtime() as rt:

        async def go(delay):
            results[delay] = await rt.run(
                Pipeline(f"p{delay}").add(wait_then_add), inputs={"delay": delay}
            )

        async with trio.open_nursery() as nursery:
            for delay in (3, 1, 2):
                nursery.start_soon(go, delay)
    assert {d: r.outputs["wait_then_add"] for d, r in results.items()} == {
        1: 1,
        2: 2,
        3: 3,
    }
    assert len({r.run_id for r in results.values()}) == 3
    assert trio.current_time() == pytest.approx(3)


async def test_start_returns_a_handle_whose_wait_gives_the_result():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(one))
        assert not run.done
        result = await run.wait()
        assert run.done
    assert result.run_id == run.id
    assert result.outputs["one"] == 1


async def test_fail_fast_cancels_running_stages_and_reports_the_error(autojump_clock):
    @stage
    async def fails_later(ctx):
        await trio.sleep(1)
        raise ValueError("bad input")

    pipeline = (
        Pipeline("p").add(forever).add(fails_later).add(one, after=["fails_later"])
    )
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
        assert tasks_below() == []  # the run ended: none of its tasks is left
    result = info.value.result
    assert result.status == "failed"
    assert dict(result.states) == {
        "forever": StageState.CANCELLED,
        "fails_later": StageState.FAILED,
        "one": StageState.UPSTREAM_FAILED,
    }
    error = info.value.errors["fails_later"]
    assert isinstance(error, ValueError)
    assert str(error) == "bad input"
    assert "'fails_later' (ValueError: bad input)" in str(info.value)
    assert isinstance(info.value.__cause__, ExceptionGroup)
    assert trio.current_time() == pytest.approx(1)


async def test_continue_policy_lets_independent_branches_finish(autojump_clock):
    @stage
    async def slow_ok(ctx):
        await trio.sleep(5)
        return "done"

    pipeline = (
        Pipeline("p")
        .add(boom)
        .add(plus_one, after=["boom"])
        .add(one.named("after_plus"), after=["plus_one"])
        .add(slow_ok)
    )
    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    result = info.value.result
    assert result.states["slow_ok"] is StageState.SUCCEEDED
    assert result.outputs["slow_ok"] == "done"
    assert result.states["boom"] is StageState.FAILED
    assert result.states["plus_one"] is StageState.UPSTREAM_FAILED
    assert result.states["after_plus"] is StageState.UPSTREAM_FAILED
    assert set(result.errors) == {"boom"}


async def test_the_policy_can_be_set_per_run():
    pipeline = Pipeline("p").add(boom).add(one)
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline, on_failure="continue")
    assert info.value.result.states["one"] is StageState.SUCCEEDED


async def test_when_false_skips_the_stage_and_its_dependents():
    @stage(when=lambda ctx: ctx.run_inputs["go"])
    async def maybe(ctx):
        return "ran"

    pipeline = Pipeline("p").add(maybe).add(plus_one, after=["maybe"])
    async with runtime() as rt:
        skipped = await rt.run(pipeline, inputs={"go": False})
        ran = await rt.run(Pipeline("q").add(maybe), inputs={"go": True})
    assert skipped.ok
    assert skipped.states["maybe"] is StageState.SKIPPED
    assert skipped.states["plus_one"] is StageState.SKIPPED
    assert "maybe" not in skipped.outputs
    assert ran.outputs["maybe"] == "ran"


async def test_a_none_failed_join_runs_after_a_skipped_branch():
    @stage(when=lambda ctx: False)
    async def left(ctx):
        return "left"

    @stage
    async def right(ctx):
        return "right"

    @stage(trigger="none_failed")
    async def join(ctx):
        return dict(ctx.inputs)

    pipeline = Pipeline("p").add(left).add(right).add(join, after=["left", "right"])
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs["join"] == {"right": "right"}
    assert result.states["left"] is StageState.SKIPPED


async def test_a_none_failed_join_still_fails_after_a_failure():
    @stage(trigger="none_failed")
    async def join(ctx):
        return 1

    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(boom).add(join, after=["boom"]))
    assert info.value.result.states["join"] is StageState.UPSTREAM_FAILED


async def test_retries_with_backoff_on_virtual_time(autojump_clock):
    attempts = []

    @stage(retries=3, backoff=1.0)
    async def flaky(ctx):
        attempts.append((ctx.attempt, trio.current_time()))
        if ctx.attempt < 2:
            raise ConnectionError("try again")
        return "third time lucky"

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(flaky))
    assert result.outputs["flaky"] == "third time lucky"
    # Backoff doubles: 1 s before the first retry, 2 s before the second.
    assert attempts == [(0, 0.0), (1, 1.0), (2, 3.0)]


async def test_retries_exhausted_fail_the_stage_with_the_last_error():
    attempts = []

    @stage(retries=2)
    async def always_fails(ctx):
        attempts.append(ctx.attempt)
        raise KeyError(f"attempt {ctx.attempt}")

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(always_fails))
    assert attempts == [0, 1, 2]
    assert info.value.errors["always_fails"].args == ("attempt 2",)


async def test_a_timeout_cancels_the_attempt_and_counts_as_a_failure(autojump_clock):
    cleaned = []

    @stage(timeout=2.0, retries=1)
    async def too_slow(ctx):
        try:
            await trio.sleep(10)
        finally:
            cleaned.append(trio.current_time())

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(too_slow))
    error = info.value.errors["too_slow"]
    assert isinstance(error, StageTimeoutError)
    assert isinstance(error, TimeoutError)
    assert error.timeout == 2.0
    assert cleaned == [2.0, 4.0]


async def test_a_thread_stage_failure_is_reported():
    @stage
    def plain_boom(ctx):
        raise RuntimeError("from a thread")

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(plain_boom))
    assert str(info.value.errors["plain_boom"]) == "from a thread"


async def test_leaving_the_runtime_cancels_runs_and_closes_their_resources(
    autojump_clock,
):
    opened = []
    closed = []

    @asynccontextmanager
    async def resource(name):
        opened.append(name)
        try:
            yield name
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.5)  # cleanup that must await
            closed.append(name)

    @stage
    async def holds(ctx):
        await ctx.enter(resource(ctx.name))
        await trio.sleep_forever()

    pipeline = (
        Pipeline("p")
        .add(holds.named("h1"))
        .add(holds.named("h2"))
        .add(one, after=["h1"])
    )
    async with runtime() as rt:
        run = await rt.start(pipeline)
        await trio.sleep(1)
        assert sorted(opened) == ["h1", "h2"]
    assert sorted(closed) == ["h1", "h2"]
    assert tasks_below() == []
    with pytest.raises(RunFailed) as info:
        await run.wait()
    result = info.value.result
    assert result.status == "cancelled"
    assert set(result.states.values()) == {StageState.CANCELLED}


async def test_run_cancel_from_outside(autojump_clock):
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(forever).add(one, after=["forever"]))
        await trio.sleep(1)
        await run.cancel(reason="operator pressed stop")
        with pytest.raises(RunFailed, match="cancelled") as info:
            await run.wait()
        # Cancelling again, or changing the run, after it ended:
        await run.cancel()
        with pytest.raises(RunClosedError):
            await run.add_stage(one.named("late"), reason="too late")
    result = info.value.result
    assert result.status == "cancelled"
    assert result.states["forever"] is StageState.CANCELLED
    assert result.states["one"] is StageState.CANCELLED
    assert [(r.kind, r.requester, r.reason) for r in result.audit] == [
        ("cancel_run", "external", "operator pressed stop")
    ]


async def test_cancelling_the_caller_of_run_cancels_the_run(autojump_clock):
    async with runtime() as rt:
        with trio.move_on_after(2):
            await rt.run(Pipeline("p").add(forever))
        assert tasks_below() == []


async def test_a_runtime_is_closed_after_its_block():
    async with runtime() as rt:
        pass
    with pytest.raises(RunClosedError):
        await rt.start(Pipeline("p").add(one))


async def test_an_error_in_the_block_reaches_the_caller_unwrapped(autojump_clock):
    async def leave_with_an_error():
        async with runtime() as rt:
            await rt.start(Pipeline("p").add(forever))
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await leave_with_an_error()
    assert tasks_below() == []


async def test_bad_runtime_options_are_refused():
    with pytest.raises(InvalidRequestError, match="on_failure"):
        async with runtime(on_failure="explode"):  # type: ignore[arg-type]
            pass
    with pytest.raises(InvalidRequestError, match="thread_limit"):
        async with runtime(thread_limit=0):
            pass
    async with runtime() as rt:
        with pytest.raises(TypeError, match="Pipeline"):
            await rt.run("not a pipeline")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="mapping"):
            await rt.run(Pipeline("p"), inputs=[1, 2])  # type: ignore[arg-type]


async def test_an_empty_pipeline_ends_at_once():
    async with runtime() as rt:
        result = await rt.run(Pipeline("empty"))
    assert result.ok
    assert len(result.outputs) == 0


async def test_a_hundred_thousand_stage_chain():
    n = 100_000
    pipeline = Pipeline.chain(
        [one.named("s0"), *(plus_one.named(f"s{i}") for i in range(1, n))], name="deep"
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs[f"s{n - 1}"] == n
    assert result.stats.counts[StageState.SUCCEEDED] == n


async def test_a_thread_stage_changes_the_graph_through_trio():
    from functools import partial

    @stage
    def plain_adder(ctx):
        return trio.from_thread.run(
            partial(ctx.add_stage, one.named("added"), reason="from a thread")
        )

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plain_adder))
    assert result.outputs["plain_adder"] == "added"
    assert result.outputs["added"] == 1
    assert result.audit[0].requester == "plain_adder"
