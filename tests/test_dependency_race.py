"""Failure mode: dependency race. A new stage waits for running dependencies."""

from __future__ import annotations

import pytest
import trio

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import RunFailed, UnknownStageError


@stage
async def echo_inputs(ctx):
    return dict(ctx.inputs)


async def test_a_new_stage_waits_for_a_running_dependency_and_sees_its_output(
    autojump_clock,
):
    @stage
    async def slow(ctx):
        await trio.sleep(5)
        return "slow result"

    @stage
    async def adder(ctx):
        await ctx.add_stage(echo_inputs, after=["slow"], reason="use slow's output")
        return trio.current_time()

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(slow).add(adder))
    assert result.outputs["echo_inputs"] == {"slow": "slow result"}
    assert result.timings["echo_inputs"].started == pytest.approx(5)
    assert result.outputs["adder"] == pytest.approx(0)


async def test_a_new_stage_after_finished_stages_starts_at_once():
    @stage
    async def adder(ctx):
        await ctx.add_stage(echo_inputs, after=["first"], reason="first is done")

    @stage
    async def first(ctx):
        return 1

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(first).add(adder, after=["first"]))
    assert result.outputs["echo_inputs"] == {"first": 1}


async def test_a_dependency_on_a_missing_stage_is_refused():
    @stage
    async def adder(ctx):
        with pytest.raises(UnknownStageError) as info:
            await ctx.add_stage(echo_inputs, after=["ghost"], reason="typo")
        return str(info.value)

    async with runtime() as rt:
        result = await rt.run(Pipeline("demo").add(adder))
    assert (
        "stage 'echo_inputs' depends on 'ghost', which is not in run"
        in result.outputs["adder"]
    )
    assert "echo_inputs" not in result.states


async def test_a_dependency_on_a_failed_stage_settles_the_new_stage_at_once(
    autojump_clock,
):
    @stage
    async def fails(ctx):
        raise ValueError("no")

    @stage
    async def adder(ctx):
        await trio.sleep(1)  # `fails` has failed by now
        await ctx.add_stage(echo_inputs, after=["fails"], reason="too late to run")
        await ctx.add_stage(
            echo_inputs.named("second"), after=["echo_inputs"], reason="chain"
        )
        return "added"

    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(fails).add(adder))
    states = info.value.result.states
    assert states["echo_inputs"] is StageState.UPSTREAM_FAILED
    assert states["second"] is StageState.UPSTREAM_FAILED
    assert info.value.result.outputs["adder"] == "added"


async def test_a_dependency_on_a_skipped_stage_is_skipped_at_once(autojump_clock):
    @stage(when=lambda ctx: False)
    async def never(ctx):
        return 1

    @stage
    async def adder(ctx):
        await trio.sleep(1)
        await ctx.add_stage(
            echo_inputs, after=["never"], reason="after a skipped stage"
        )
        await ctx.add_stage(
            echo_inputs.options(name="join", trigger="none_failed"),
            after=["never"],
            reason="a join runs anyway",
        )

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(never).add(adder))
    assert result.states["echo_inputs"] is StageState.SKIPPED
    assert result.outputs["join"] == {}


async def test_stages_added_from_outside_while_the_run_goes(autojump_clock):
    gate = trio.Event()

    @stage
    async def held(ctx):
        await gate.wait()
        return "held"

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(held))
        name = await run.add_stage(
            echo_inputs, after=["held"], reason="operator adds a check"
        )
        assert name == "echo_inputs"
        gate.set()
        result = await run.wait()
    assert result.outputs["echo_inputs"] == {"held": "held"}
    assert result.audit[0].requester == "external"
    assert result.origins["echo_inputs"] is result.audit[0]
    assert result.origins["held"] is None
