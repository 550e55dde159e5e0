"""Failure mode: resource leak. What a stage opens is closed however it ends."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio
from conftest import tasks_below

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import RunFailed


class Pool:
    """Counts resources open at any moment."""

    def __init__(self) -> None:
        self.open = 0
        self.opened = 0

    @asynccontextmanager
    async def resource(self, slow_open: float = 0.0):
        self.open += 1
        self.opened += 1
        try:
            if slow_open:
                await trio.sleep(slow_open)  # cancelled here: mid-__aenter__
            yield self
        finally:
            self.open -= 1


async def test_many_dynamic_stages_fail_and_every_resource_closes(autojump_clock):
    pool = Pool()

    @stage
    async def worker(ctx):
        await ctx.enter(pool.resource())
        await ctx.enter(pool.resource(slow_open=ctx.item % 3))
        await trio.sleep(10)
        return ctx.item

    @stage
    async def fan_out(ctx):
        await ctx.expand(worker, range(200), reason="many workers")
        await ctx.enter(pool.resource())
        await trio.sleep(1)
        raise RuntimeError("the planner fails while its workers run")

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(fan_out))
        assert tasks_below() == []
    assert pool.open == 0
    assert pool.opened > 200
    states = info.value.result.states
    assert states["fan_out"] is StageState.FAILED
    assert {states[f"worker[{i}]"] for i in range(200)} == {StageState.CANCELLED}


async def test_resources_close_on_success_and_on_cancel_stage(autojump_clock):
    pool = Pool()

    @stage
    async def user(ctx):
        await ctx.enter(pool.resource())
        await trio.sleep(ctx.run_inputs["sleep"])
        return pool.open

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(user), inputs={"sleep": 1})
        assert result.outputs["user"] == 1
        assert pool.open == 0
        run = await rt.start(Pipeline("q").add(user), inputs={"sleep": 100})
        await trio.sleep(1)
        assert pool.open == 1
        await run.cancel_stage("user", reason="no longer needed")
        result = await run.wait()
    assert pool.open == 0
    assert result.states["user"] is StageState.CANCELLED


async def test_a_resource_that_fails_to_close_fails_the_stage(autojump_clock):
    @asynccontextmanager
    async def bad_close():
        yield
        raise OSError("could not flush")

    @stage
    async def uses(ctx):
        await ctx.enter(bad_close())
        return "body done"

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(uses))
    assert isinstance(info.value.errors["uses"], OSError)


async def test_cleanup_is_bounded_by_the_cleanup_timeout(autojump_clock):
    closed_at = []

    @asynccontextmanager
    async def stubborn():
        try:
            yield
        finally:
            try:
                await trio.sleep(1000)
            finally:
                closed_at.append(trio.current_time())

    @stage
    async def holds(ctx):
        await ctx.enter(stubborn())
        await trio.sleep_forever()

    async with runtime(cleanup_timeout=3) as rt:
        run = await rt.start(Pipeline("p").add(holds))
        await trio.sleep(1)
        await run.cancel(reason="stop")
    assert closed_at == [pytest.approx(4)]
