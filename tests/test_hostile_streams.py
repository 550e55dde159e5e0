"""Hostile streams and event readers: names stay unique whatever left memory,
stream errors are typed, memory follows the stages in flight, and a reader
never costs the run more than it reads."""

from __future__ import annotations

import gc
import weakref

import pytest

from dagvisor import EventsLost, Journal, Pipeline, runtime, stage
from dagvisor.errors import (
    DuplicateStageError,
    InvalidRequestError,
    RunFailed,
    StageStateError,
)
from dagvisor.supervisor._graph import Node


@stage
async def step(ctx):
    return len(ctx.inputs) + 1


@stage
async def leaf(ctx):
    return "leaf"


@stage
async def sprout(ctx):
    # Each streamed stage adds a leaf at run time.
    await ctx.add_stage(leaf.named(f"leaf-of-{ctx.name}"), reason="one more")
    return 1


async def test_a_name_that_left_the_window_cannot_be_used_again():
    def stream():
        for i in range(50):
            yield step.named(f"s{i}")
        yield step.named("s0")  # long gone from a window of 4

    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as caught:
            await rt.run(Pipeline.stream(stream(), window=4))
    error = caught.value.errors["s0"]
    assert isinstance(error, DuplicateStageError)
    assert caught.value.result.stats.stages == 50


async def test_a_stage_added_at_run_time_cannot_reuse_a_name_that_left_memory():
    refused: list[Exception] = []

    @stage
    async def late(ctx):
        try:
            await ctx.add_stage(leaf.named("s1"), reason="reuse a finished name")
        except (DuplicateStageError, StageStateError) as exc:
            refused.append(exc)

    def stream():
        for i in range(40):
            yield step.named(f"s{i}")
        yield late

    async with runtime() as rt:
        await rt.run(Pipeline.stream(stream(), window=4))
    assert len(refused) == 1


async def test_an_after_iterable_that_raises_in_a_streamed_item_is_a_typed_failure():
    class Broken:
        def __iter__(self):
            raise RuntimeError("after= went away")

    def stream():
        yield step.named("a")
        yield step.named("b"), Broken()

    async with runtime() as rt:
        with pytest.raises(RunFailed) as caught:
            await rt.run(Pipeline.stream(stream(), window=4))
    error = caught.value.errors["b"]
    assert isinstance(error, InvalidRequestError)
    assert "after= went away" in str(error)


async def test_stages_added_at_run_time_to_a_stream_leave_memory_too():
    sprouts = (sprout.named(f"s{i}") for i in range(3000))
    async with runtime() as rt:
        run = await rt.start(Pipeline.stream(sprouts, window=20))
        largest = 0
        async for _ in run.events():
            largest = max(largest, len(run.snapshot().states))
        result = await run.wait()
    assert result.stats.stages == 6000
    assert largest <= 200
    assert len(result.states) <= 200


async def test_a_reader_that_stops_is_forgotten():
    async with runtime() as rt:
        run = await rt.start(
            Pipeline.stream((step.named(f"s{i}") for i in range(500)), window=10)
        )
        streams = [run.events() for _ in range(50)]
        refs = [weakref.ref(stream) for stream in streams]
        for stream in streams:
            async for _ in stream:
                break
        del streams, stream
        gc.collect()
        assert all(ref() is None for ref in refs)  # the run holds no reader
        result = await run.wait()
    assert result.stats.stages == 500


async def test_a_slow_reader_is_told_how_many_events_it_lost():
    async with runtime() as rt:
        run = await rt.start(
            Pipeline.stream((step.named(f"s{i}") for i in range(100)), window=10)
        )
        events = run.events(buffer=5)
        await run.wait()  # the reader has not read anything yet
        seen = [event async for event in events]
    lost = [event for event in seen if isinstance(event, EventsLost)]
    assert len(lost) == 1
    assert seen[0] is lost[0]
    assert len(seen) == 6  # told, then the last five
    # A start and an end per stage, but for the first start, which came
    # before there was a reader (events are only built while someone reads).
    assert lost[0].count + 5 == 199
    assert events.lost == lost[0].count


async def test_a_reader_that_never_reads_holds_no_more_than_its_buffer(autojump_clock):
    async with runtime() as rt:
        run = await rt.start(
            Pipeline.stream((step.named(f"s{i}") for i in range(1000)), window=10)
        )
        idle = [run.events(buffer=4) for _ in range(100)]
        await run.wait()
        for reader in idle:
            seen = [event async for event in reader]
            assert isinstance(seen[0], EventsLost)
            assert len(seen) == 5


# -- retain_outputs="journal": a dropped stage and its item are unreachable --------


@stage
async def batch(ctx):
    items = [bytes([int(ctx.name[1:])]) * 10_000 for _ in range(20)]
    await ctx.expand(
        mapped.named(f"m{ctx.name}"),
        items,
        collect=fan_in.named(f"in{ctx.name}"),
        reason="a batch of items",
    )


@stage
async def mapped(ctx):
    return len(ctx.item)


@stage
async def fan_in(ctx):
    return sum(ctx.inputs.values())


async def test_a_fan_in_does_not_keep_the_dropped_stages_it_read(tmp_path):
    pipeline = Pipeline.chain(batch.named(f"b{i}") for i in range(5))
    async with runtime(journal=tmp_path / "j.db", retain_outputs="journal") as rt:
        result = await rt.run(pipeline, inputs={})
    gc.collect()
    holding_items = [
        node
        for node in gc.get_objects()
        if isinstance(node, Node) and isinstance(node.item, bytes)
    ]
    assert holding_items == []
    assert result.stats.stages == 5 + 5 * 21
    assert result.outputs["inb4"] == 20 * 10_000
    assert set(result.dependencies["inb4"]) == {f"mb4[{i}]" for i in range(20)}
    with Journal(tmp_path / "j.db", readonly=True) as journal:
        back = journal.result(result.run_id)
    assert len(back.states) == result.stats.stages
