"""Failure mode: resource leak. What a stage opens is closed however it ends."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio
from conftest import tasks_below

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import InvalidRequestError, ResourceCloseError, RunFailed


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
    error = info.value.errors["uses"]
    assert isinstance(error, ResourceCloseError)
    assert isinstance(error.__cause__, OSError)
    assert "could not flush" in str(error)


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


# -- every resource entered on a stage's behalf closes, each within its bound ----------


class Tracked:
    """A resource that records its opening and closing, and what it was told."""

    def __init__(self, log: list, name: str, *, close=None) -> None:
        self.log = log
        self.name = name
        self.close = close

    async def __aenter__(self):
        self.log.append(("open", self.name))
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self.log.append(("close", self.name, exc_type))
        if self.close == "hang":
            await trio.sleep_forever()
        if self.close == "raise":
            raise OSError(f"{self.name} could not flush")
        return False

    def __repr__(self) -> str:
        return f"<Tracked {self.name}>"


def _closed(log):
    return [entry[1] for entry in log if entry[0] == "close"]


class Opener:
    """An interceptor whose hooks open resources for the stage."""

    name = "opener"

    def __init__(self, log: list) -> None:
        self.log = log

    async def before_stage(self, ctx):
        await ctx.enter(Tracked(self.log, f"before:{ctx.name}:{ctx.attempt}"))

    async def after_stage(self, ctx, value):
        await ctx.enter(Tracked(self.log, f"after:{ctx.name}:{ctx.attempt}"))

    async def on_error(self, ctx, exc):
        await ctx.enter(Tracked(self.log, f"error:{ctx.name}:{ctx.attempt}"))


async def test_resources_entered_in_hooks_are_closed(autojump_clock):
    log: list = []

    @stage(retries=1)
    async def flaky(ctx):
        await ctx.enter(Tracked(log, f"body:{ctx.name}:{ctx.attempt}"))
        if ctx.attempt == 0:
            raise ConnectionError("first attempt fails")
        return "ok"

    async with runtime(interceptors=[Opener(log)]) as rt:
        result = await rt.run(Pipeline("p").add(flaky))
    assert result.outputs["flaky"] == "ok"
    opened = [entry[1] for entry in log if entry[0] == "open"]
    assert sorted(opened) == sorted(_closed(log))
    # The hook that wraps the body closes after it, in reverse order.
    assert _closed(log) == [
        "body:flaky:0",
        "before:flaky:0",
        "error:flaky:0",
        "body:flaky:1",
        "before:flaky:1",
        "after:flaky:1",
    ]


async def test_a_resource_sees_the_exception_that_ended_the_attempt(autojump_clock):
    log: list = []

    @stage
    async def fails(ctx):
        await ctx.enter(Tracked(log, "tx"))
        raise KeyError("rolled back")

    async with runtime() as rt:
        with pytest.raises(RunFailed):
            await rt.run(Pipeline("p").add(fails))
    assert log == [("open", "tx"), ("close", "tx", KeyError)]


async def test_a_hanging_exit_is_bounded_per_resource_and_the_others_close(
    autojump_clock,
):
    log: list = []

    @stage
    async def holds(ctx):
        await ctx.enter(Tracked(log, "first"))
        await ctx.enter(Tracked(log, "hangs", close="hang"))
        await ctx.enter(Tracked(log, "last"))
        return "body done"

    async with runtime(cleanup_timeout=3) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(holds))
        assert trio.current_time() == pytest.approx(3)
    assert _closed(log) == ["last", "hangs", "first"]
    error = info.value.errors["holds"]
    assert isinstance(error, ResourceCloseError)
    assert error.stage == "holds"
    assert error.resource == "<Tracked hangs>"
    assert "3 s" in str(error)
    assert "succeeded" not in info.value.result.states["holds"].value


async def test_a_resource_that_fails_to_close_names_the_stage_and_the_resource(
    autojump_clock,
):
    log: list = []

    @stage(retries=1)
    async def commits(ctx):
        await ctx.enter(Tracked(log, f"tx{ctx.attempt}", close="raise"))
        return "body done"

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(commits))
    error = info.value.errors["commits"]
    assert isinstance(error, ResourceCloseError)
    assert isinstance(error.__cause__, OSError)
    assert (error.stage, error.resource) == ("commits", "<Tracked tx1>")
    assert "'commits'" in str(error)
    assert "tx1 could not flush" in str(error)
    assert "commits" not in info.value.result.outputs
    assert _closed(log) == ["tx0", "tx1"]  # the failed close was retried


async def test_a_failed_close_after_a_failed_body_keeps_the_body_error(autojump_clock):
    log: list = []

    @stage
    async def both(ctx):
        await ctx.enter(Tracked(log, "tx", close="raise"))
        raise KeyError("the body's own error")

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(both))
    error = info.value.errors["both"]
    assert isinstance(error, KeyError)
    assert any("tx could not flush" in note for note in error.__notes__)


async def test_resources_of_a_cancelled_thread_stage_close_after_its_thread_ends(
    autojump_clock,
):
    import threading
    from functools import partial

    log: list = []
    gate = threading.Event()

    @stage
    def threaded(ctx):
        trio.from_thread.run(partial(ctx.enter, Tracked(log, "conn")))
        gate.wait(30)
        log.append(("thread ended",))
        return "late"

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(threaded))
        await trio.sleep(1)
        await run.cancel_stage("threaded", reason="stop")
        gate.set()
        result = await run.wait()
    assert result.states["threaded"] is StageState.CANCELLED
    assert log[-2:] == [("thread ended",), ("close", "conn", trio.Cancelled)]


async def test_enter_after_the_stage_ended_is_refused(autojump_clock):
    log: list = []
    leaked = []

    @stage
    async def leaks(ctx):
        leaked.append(ctx)
        return 1

    async with runtime() as rt:
        await rt.run(Pipeline("p").add(leaks))
    with pytest.raises(InvalidRequestError, match="has ended"):
        await leaked[0].enter(Tracked(log, "late"))
    assert log == []


async def test_enter_refuses_what_is_not_an_async_context_manager(autojump_clock):
    @stage
    async def wrong(ctx):
        await ctx.enter(open)  # not an async context manager

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(wrong))
    assert isinstance(info.value.errors["wrong"], TypeError)
    assert "async context manager" in str(info.value.errors["wrong"])


async def test_a_cancelled_stage_whose_resource_fails_to_close_stays_cancelled(
    autojump_clock, caplog
):
    log: list = []

    @stage
    async def holds(ctx):
        await ctx.enter(Tracked(log, "tx", close="raise"))
        await trio.sleep_forever()

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(holds))
        await trio.sleep(1)
        await run.cancel_stage("holds", reason="stop")
        result = await run.wait()
    assert result.states["holds"] is StageState.CANCELLED
    assert log[-1] == ("close", "tx", trio.Cancelled)
    (warning,) = [r for r in caplog.records if r.name == "dagvisor"]
    assert "tx could not flush" in warning.getMessage()
    assert "cancelled" in warning.getMessage()
