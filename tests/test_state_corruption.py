"""Failure mode: state corruption. Changes are atomic; inputs cannot be corrupted."""

from __future__ import annotations

import copy

import pytest
import trio
import trio.lowlevel

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import (
    DuplicateStageError,
    ReadOnlyInputError,
    StageStateError,
    UnknownStageError,
)


async def test_a_consumer_cannot_mutate_its_input_nor_touch_other_consumers_or_the_result():
    @stage
    async def produce(ctx):
        return {"items": [1, 2, 3], "meta": {"n": 3}}

    @stage
    async def vandal(ctx):
        data = ctx.inputs["produce"]
        with pytest.raises(ReadOnlyInputError):
            data["items"].append(99)
        with pytest.raises(ReadOnlyInputError):
            data["meta"]["n"] = 0
        with pytest.raises(TypeError):
            ctx.inputs["produce"] = "replaced"
        mine = copy.deepcopy(data)  # a private copy is the consumer's to change
        mine["items"].append(99)
        mine["meta"]["n"] = 0
        return mine

    @stage
    async def reader(ctx):
        await trio.lowlevel.checkpoint()
        return ctx.inputs["produce"]

    pipeline = (
        Pipeline("p")
        .add(produce)
        .add(vandal, after=["produce"])
        .add(reader, after=["produce"])
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs["reader"] == {"items": [1, 2, 3], "meta": {"n": 3}}
    assert result.outputs["produce"] == {"items": [1, 2, 3], "meta": {"n": 3}}
    assert result.outputs["vandal"] == {"items": [1, 2, 3, 99], "meta": {"n": 0}}


async def test_a_refused_change_leaves_the_graph_and_its_version_untouched():
    outcomes = {}

    @stage
    async def meddle(ctx):
        for label, change in {
            "before_running": ctx.add_stage(
                noop.named("x"), before=["meddle"], reason="r"
            ),
            "unknown_after": ctx.add_stage(noop.named("y"), after=["nope"], reason="r"),
            "duplicate": ctx.add_stage(noop.named("first"), reason="r"),
            "expand": ctx.expand(
                noop, [1, 2], key=lambda i: "first" if i == 2 else i, reason="r"
            ),
            "remove_running": ctx.remove_stage("meddle", reason="r"),
            "edge_to_done": ctx.add_edge("meddle", "first", reason="r"),
        }.items():
            try:
                await change
            except (StageStateError, UnknownStageError, DuplicateStageError) as exc:
                outcomes[label] = type(exc).__name__
        return "done"

    @stage
    async def first(ctx):
        return 1

    pipeline = Pipeline("p").add(first).add(meddle, after=["first"])
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert outcomes == {
        "before_running": "StageStateError",
        "unknown_after": "UnknownStageError",
        "duplicate": "DuplicateStageError",
        "remove_running": "StageStateError",
        "edge_to_done": "StageStateError",
    }
    # Only the expand was valid: its names noop[1] and noop[first] were free.
    accepted = [r for r in result.audit if r.accepted]
    assert [r.kind for r in accepted] == ["expand"]
    assert set(result.states) == {"first", "meddle", "noop[1]", "noop[first]"}
    assert all(
        r.version_before == r.version_after for r in result.audit if not r.accepted
    )
    assert [r.seq for r in result.audit] == list(range(6))


async def test_an_expand_with_one_clashing_name_adds_nothing():
    @stage
    async def fan(ctx):
        await ctx.add_stage(noop.named("noop[b]"), reason="taken first")
        with pytest.raises(DuplicateStageError):
            await ctx.expand(noop, ["a", "b", "c"], key=str, reason="one per letter")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(fan))
    assert set(result.states) == {"fan", "noop[b]"}
    assert result.audit[1].accepted is False
    assert result.audit[1].version_before == result.audit[1].version_after == 1


@stage
async def noop(ctx):
    return ctx.item if ctx.key is not None else None


async def test_results_are_read_only():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(noop))
    with pytest.raises(TypeError):
        result.outputs["noop"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        result.states["noop"] = StageState.FAILED  # type: ignore[index]
