"""retain_outputs="final": outputs released once every consumer has read them."""

from __future__ import annotations

import pytest
import trio

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import InvalidRequestError, StageStateError


@stage
async def first(ctx):
    return 1


@stage
async def step(ctx):
    return sum(ctx.inputs.values()) + 1


async def test_a_chain_keeps_only_its_final_output():
    pipeline = Pipeline.chain(
        [first.named("s0"), *(step.named(f"s{i}") for i in range(1, 500))]
    )
    async with runtime(retain_outputs="final") as rt:
        result = await rt.run(pipeline)
    assert dict(result.outputs) == {"s499": 500}
    assert result.stats.stages == 500


async def test_an_output_is_kept_until_its_last_consumer_starts(autojump_clock):
    seen = {}

    @stage
    async def slow(ctx):
        await trio.sleep(5)
        return "slow"

    @stage
    async def late_reader(ctx):
        seen["late_reader"] = dict(ctx.inputs)
        return "done"

    pipeline = (
        Pipeline("p")
        .add(first)
        .add(step, after=["first"])
        .add(slow)
        .add(late_reader, after=["first", "slow"])
    )
    async with runtime(retain_outputs="final") as rt:
        result = await rt.run(pipeline)
    assert seen["late_reader"] == {"first": 1, "slow": "slow"}
    assert dict(result.outputs) == {"step": 2, "late_reader": "done"}


async def test_a_change_that_would_read_a_released_output_is_refused(autojump_clock):
    @stage
    async def latecomer(ctx):
        await trio.sleep(1)  # s1 has read s0 by now: s0's output is gone
        with pytest.raises(StageStateError, match="released") as info:
            await ctx.add_stage(step.named("reader"), after=["s0"], reason="too late")
        return info.value.name

    pipeline = (
        Pipeline("p")
        .add(first.named("s0"))
        .add(step.named("s1"), after=["s0"])
        .add(latecomer)
    )
    async with runtime(retain_outputs="final") as rt:
        result = await rt.run(pipeline)
    assert result.outputs["latecomer"] == "s0"
    assert "reader" not in result.states


async def test_removing_the_last_pending_reader_releases_the_output(autojump_clock):
    @stage
    async def remover(ctx):
        await trio.sleep(0.5)  # early has started; reader still waits for gate
        await ctx.remove_stage("reader", reason="not needed")

    @stage
    async def gate(ctx):
        await trio.sleep(1)

    pipeline = (
        Pipeline("p")
        .add(first)
        .add(gate)
        .add(step.named("reader"), after=["first", "gate"])
        .add(step.named("early"), after=["first"])
        .add(remover)
    )
    async with runtime(retain_outputs="final") as rt:
        result = await rt.run(pipeline)
    # first's readers: early (it ran) and reader (removed).
    assert "first" not in result.outputs
    assert result.outputs["early"] == 2


async def test_by_default_every_output_is_kept():
    pipeline = Pipeline.chain(
        [first.named("s0"), *(step.named(f"s{i}") for i in range(1, 10))]
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert len(result.outputs) == 10


async def test_a_bad_option_is_refused():
    with pytest.raises(InvalidRequestError, match="retain_outputs"):
        async with runtime(retain_outputs="some"):  # type: ignore[arg-type]
            pass
