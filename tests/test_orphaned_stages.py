"""Failure mode: orphaned stages. Every accepted stage runs or gets a terminal state."""

from __future__ import annotations

import pytest
import trio

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import RunClosedError, RunFailed


@stage
async def noop(ctx):
    return ctx.name


def assert_all_terminal(result):
    assert all(state.is_terminal for state in result.states.values()), dict(
        result.states
    )


async def test_removing_the_only_blocker_lets_dependents_run(autojump_clock):
    @stage
    async def planner(ctx):
        await ctx.add_stage(
            noop.named("blocker"), after=["gate"], reason="wait for the gate"
        )
        await ctx.add_edge("blocker", "waiter", reason="waiter after blocker")
        await ctx.remove_stage("blocker", reason="changed my mind")

    @stage
    async def gate(ctx):
        await trio.sleep(100)

    pipeline = (
        Pipeline("p")
        .add(planner)
        .add(gate)
        .add(noop.named("waiter"), after=["planner"])
    )
    async with runtime() as rt:
        run = await rt.start(pipeline)
        await trio.sleep(1)
        await run.cancel_stage("gate", reason="not needed")
        result = await run.wait()
    assert result.states["waiter"] is StageState.SUCCEEDED
    assert "blocker" not in result.states
    assert result.states["gate"] is StageState.CANCELLED
    assert_all_terminal(result)


async def test_cancelling_a_pending_stage_cancels_what_waits_for_it(autojump_clock):
    @stage
    async def slow(ctx):
        await trio.sleep(10)

    pipeline = (
        Pipeline("p")
        .add(slow)
        .add(noop.named("a"), after=["slow"])
        .add(noop.named("b"), after=["a"])
        .add(noop.named("free"))
    )
    async with runtime() as rt:
        run = await rt.start(pipeline)
        await run.cancel_stage("a", reason="skip a")
        result = await run.wait()
    assert result.states["a"] is StageState.CANCELLED
    assert result.states["b"] is StageState.CANCELLED
    assert result.states["slow"] is StageState.SUCCEEDED
    assert result.ok  # a deliberate cancel is not a failure
    assert_all_terminal(result)


async def test_a_change_racing_the_end_of_the_run_is_answered_never_dropped(
    autojump_clock,
):
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(noop))
        result = await run.wait()
        with pytest.raises(RunClosedError):
            await run.add_stage(noop.named("late"), reason="late")
        with pytest.raises(RunClosedError):
            await run.cancel_stage("noop", reason="late")
    assert_all_terminal(result)


async def test_changes_during_fail_fast_are_refused_and_nothing_is_left_pending(
    autojump_clock,
):
    refused = []

    @stage
    async def keeps_adding(ctx):
        for i in range(5):
            await trio.sleep(1)
            try:
                await ctx.add_stage(
                    noop.named(f"extra{i}"), after=["never_ends"], reason="more"
                )
            except RunClosedError:
                refused.append(i)
                raise

    @stage
    async def never_ends(ctx):
        await trio.sleep_forever()

    @stage
    async def fails(ctx):
        await trio.sleep(2.5)
        raise ValueError("stop everything")

    pipeline = Pipeline("p").add(keeps_adding).add(never_ends).add(fails)
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    result = info.value.result
    assert_all_terminal(result)
    assert result.states["extra0"] is StageState.CANCELLED
    assert result.states["extra1"] is StageState.CANCELLED
    assert "extra2" not in result.states
    assert refused == []  # keeps_adding was cancelled in its sleep, not refused


async def test_every_stage_is_terminal_after_a_run_cancelled_mid_change(autojump_clock):
    @stage
    async def grower(ctx):
        for i in range(100):
            await ctx.add_stage(noop.named(f"g{i}"), after=["grower"], reason="grow")
            await trio.sleep(0.1)

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(grower))
        await trio.sleep(2.05)
        await run.cancel(reason="enough")
        with pytest.raises(RunFailed) as info:
            await run.wait()
    result = info.value.result
    assert_all_terminal(result)
    assert len(result.states) == 22  # grower and the 21 stages it added by t=2.0
