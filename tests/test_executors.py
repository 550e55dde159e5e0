"""Where stage bodies run: threads and worker processes (trio-parallel)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import trio
import trio_parallel

from dagvisor import Pipeline, StageState, StageView, runtime, stage
from dagvisor.errors import (
    InvalidStageError,
    NotPicklableError,
    RunFailed,
    StageTimeoutError,
)

# Bodies that run in worker processes: defined at module level, so a worker
# can import them by reference.


def square(view: StageView) -> int:
    return view.item * view.item


def total(view: StageView) -> int:
    return sum(view.inputs.values())


def describe(view: StageView) -> tuple[str, int]:
    return type(view).__name__, os.getpid()


def crash_once(view: StageView) -> str:
    marker = Path(view.run_inputs["marker"])
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(3)  # the worker process dies mid-stage
    return "recovered"


def sleeps(view: StageView) -> int:
    time.sleep(60)
    return 1


def crunch(n: int) -> int:
    return sum(i * i for i in range(n))


square_in_process = stage(name="square", executor="process")(square)
total_in_process = stage(name="total", executor="process")(total)


async def test_a_dynamic_fan_out_of_process_stages():
    @stage
    async def plan(ctx):
        names = await ctx.expand(square_in_process, [1, 2, 3], reason="one per item")
        await ctx.add_stage(total_in_process, after=names, reason="fan in")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["square[2]"] == 9
    assert result.outputs["total"] == 14


async def test_a_process_body_gets_a_view_in_another_process():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(stage(executor="process")(describe)))
    kind, pid = result.outputs["describe"]
    assert kind == "StageView"
    assert pid != os.getpid()


async def test_the_runtime_default_executor_applies_to_plain_functions():
    plain = stage(describe)
    assert plain.executor is None
    async with runtime(executor="process") as rt:
        result = await rt.run(Pipeline("p").add(plain))
    assert result.outputs["describe"][1] != os.getpid()


async def test_a_worker_that_dies_fails_the_stage_and_a_retry_recovers(tmp_path):
    once = stage(name="once", executor="process")(crash_once)
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(
                Pipeline("p").add(once), inputs={"marker": str(tmp_path / "a")}
            )
        assert isinstance(info.value.errors["once"], trio_parallel.BrokenWorkerError)
        retried = stage(name="once", executor="process", retries=1)(crash_once)
        result = await rt.run(
            Pipeline("q").add(retried), inputs={"marker": str(tmp_path / "b")}
        )
    assert result.outputs["once"] == "recovered"


async def test_a_timeout_kills_the_worker():
    slow = stage(name="slow", executor="process", timeout=0.5)(sleeps)
    with trio.fail_after(30):  # a guard against a hang, not a timing assertion
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(slow))
    assert isinstance(info.value.errors["slow"], StageTimeoutError)


async def test_cancelling_a_run_kills_its_process_stages():
    slow = stage(name="slow", executor="process")(sleeps)
    with trio.fail_after(30):
        async with runtime() as rt:
            run = await rt.start(Pipeline("p").add(slow))
            await trio.sleep(0.5)
            await run.cancel(reason="stop")
            with pytest.raises(RunFailed):
                await run.wait()
    assert run.done


async def test_an_input_that_cannot_be_pickled_is_named():
    @stage
    async def make_lock(ctx):
        return threading.Lock()

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(
                Pipeline("p").add(make_lock).add(total_in_process, after=["make_lock"])
            )
    error = info.value.errors["total"]
    assert isinstance(error, NotPicklableError)
    assert error.what == "input 'make_lock'"
    assert "executor='thread'" in str(error)
    assert info.value.result.states["make_lock"] is StageState.SUCCEEDED


def test_what_cannot_leave_the_process_is_refused_when_declared():
    def nested(view):
        return 1

    with pytest.raises(InvalidStageError, match="module level"):
        stage(executor="process")(nested)
    with pytest.raises(InvalidStageError, match="module level"):
        stage(name="l", executor="process")(lambda view: 1)

    async def asynchronous(ctx):
        return 1

    with pytest.raises(InvalidStageError, match="run_in"):
        stage(executor="process")(asynchronous)


async def test_run_in_sends_the_heavy_part_elsewhere():
    @stage
    async def mixed(ctx):
        in_process = await ctx.run_in("process", crunch, 1000)
        in_thread = await ctx.run_in("thread", crunch, 1000)
        await ctx.add_stage(
            stage(name="described", executor="process")(describe),
            reason="and the graph still changes",
        )
        return in_process, in_thread

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(mixed))
    expected = sum(i * i for i in range(1000))
    assert result.outputs["mixed"] == (expected, expected)
    assert result.outputs["described"][0] == "StageView"


async def test_bad_executor_options():
    from dagvisor.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="executor"):
        async with runtime(executor="gpu"):  # type: ignore[arg-type]
            pass


async def test_a_dynamic_fan_out_of_thread_stages():
    square_in_thread = stage(name="square", executor="thread")(square)

    @stage
    async def plan(ctx):
        names = await ctx.expand(square_in_thread, [2, 3], reason="one per item")
        await ctx.add_stage(
            stage(name="total", executor="thread")(total), after=names, reason="fan in"
        )

    async with runtime(thread_limit=2) as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["total"] == 13
