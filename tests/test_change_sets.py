"""Changes that belong together are applied together: change sets and ``collect=``."""

from __future__ import annotations

import pytest
import trio

from dagvisor import Journal, Pipeline, StageState, runtime, stage
from dagvisor.errors import RunFailed, StageStateError, UnknownStageError


@stage
async def score(ctx):
    await ctx.add_stage(
        review.named(f"review[{ctx.key}]"),
        before=["report"],
        reason="every score is reviewed before the report",
    )
    return ctx.item * 10


@stage
async def review(ctx):
    return "ok"


@stage
async def report(ctx):
    return sorted(name for name in ctx.inputs if name.startswith("score"))


@stage
async def plan(ctx):
    await ctx.expand(
        score, [1, 2, 3, 4, 5], collect=report, reason="score, then report"
    )


async def test_mapped_stages_may_add_stages_before_the_collector_every_time():
    # The README's fan-in pattern: with collect=, the collector exists before
    # any mapped stage starts. Without it, about half of the runs failed.
    async with runtime() as rt:
        for _ in range(1000):
            result = await rt.run(Pipeline("p").add(plan))
            assert result.outputs["report"] == [f"score[{i}]" for i in range(5)]
            assert set(result.dependencies["report"]) == {
                *(f"score[{i}]" for i in range(5)),
                *(f"review[{i}]" for i in range(5)),
            }


async def test_collect_is_one_audited_change_with_its_parts():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    first = result.audit[0]
    assert first.kind == "change_set"
    assert first.requester == "plan"
    assert first.parts == (
        ("expand", tuple(f"score[{i}]" for i in range(5))),
        ("add_stage", ("report",)),
    )
    assert first.added == (*(f"score[{i}]" for i in range(5)), "report")
    assert first.version_after == first.version_before + 1


async def test_collecting_over_no_items_runs_the_collector_with_no_inputs():
    @stage
    async def empty_plan(ctx):
        return await ctx.expand(score, [], collect=report, reason="nothing to score")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(empty_plan))
    assert result.outputs["empty_plan"] == []
    assert result.outputs["report"] == []


async def test_a_refused_part_refuses_the_whole_set_and_nothing_is_applied():
    seen: dict[str, object] = {}

    @stage
    async def meddle(ctx):
        try:
            async with ctx.changes(reason="three changes") as batch:
                batch.add_stage(review.named("a"))
                batch.expand(review, [1, 2])
                batch.add_stage(review.named("b"), after=["nope"])
        except UnknownStageError as exc:
            seen["error"] = exc

    @stage
    async def after(ctx):
        return "after"

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(meddle).add(after, after=["meddle"]))
    assert isinstance(seen["error"], UnknownStageError)
    assert set(result.states) == {"meddle", "after"}
    (record,) = result.audit
    assert record.kind == "change_set"
    assert not record.accepted
    assert record.error_type == "UnknownStageError"
    assert record.version_before == record.version_after == 0


async def test_no_stage_of_a_set_starts_before_all_of_it_is_applied():
    started: list[str] = []

    @stage
    async def first(ctx):
        started.append(ctx.name)

    @stage
    async def planner(ctx):
        async with ctx.changes(reason="a, then b before it") as batch:
            batch.add_stage(first.named("a"))
            # Were 'a' started before this part was applied, it would be
            # running and could not wait for 'b' any more.
            batch.add_stage(first.named("b"), before=["a"])

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(planner))
    assert started == ["b", "a"]
    assert result.dependencies["a"] == ("b",)


async def test_a_block_that_raises_sends_nothing():
    async def change_my_mind(ctx):
        async with ctx.changes(reason="never sent") as batch:
            batch.add_stage(review.named("a"))
            raise RuntimeError("changed my mind")

    @stage
    async def planner(ctx):
        with pytest.raises(RuntimeError):
            await change_my_mind(ctx)

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(planner))
    assert result.audit == ()
    assert set(result.states) == {"planner"}


async def test_a_change_set_from_outside_and_its_refusal_of_a_started_stage():
    gate = trio.Event()

    @stage
    async def hold(ctx):
        await gate.wait()

    async with runtime(on_failure="continue") as rt:
        run = await rt.start(Pipeline("p").add(hold))
        async with run.changes(reason="operator's batch") as batch:
            names = batch.expand(review, ["x", "y"], after=["hold"])
            batch.add_stage(report, after=names)
        with pytest.raises(StageStateError):
            async with run.changes(reason="too late for hold") as batch:
                batch.add_stage(review.named("c"), before=["hold"])
        gate.set()
        result = await run.wait()
    assert result.states["report"] is StageState.SUCCEEDED
    assert [r.accepted for r in result.audit] == [True, False]
    assert result.audit[0].requester == "external"


async def test_a_change_set_is_journaled_and_read_back(tmp_path):
    path = tmp_path / "j.db"
    async with runtime(journal=path) as rt:
        live = await rt.run(Pipeline("p").add(plan))
    with Journal(path, readonly=True) as journal:
        back = journal.result(live.run_id)
    assert dict(back.states) == dict(live.states)
    assert {k: set(v) for k, v in back.dependencies.items()} == {
        k: set(v) for k, v in live.dependencies.items()
    }
    assert back.audit[0].parts == live.audit[0].parts
    assert back.outputs["report"] == live.outputs["report"]


async def test_an_unjournalable_part_refuses_the_set(tmp_path):
    async with runtime(journal=tmp_path / "j.db") as rt:
        with pytest.raises(RunFailed) as caught:
            await rt.run(Pipeline("p").add(bad_plan))
    (record,) = caught.value.result.audit
    assert record.kind == "change_set"
    assert record.error_type == "NotRestorableError"
    assert set(caught.value.result.states) == {"bad_plan"}


@stage
async def bad_plan(ctx):
    async def unregistered(ctx):
        return 1

    from dagvisor import stage as declare

    async with ctx.changes(reason="one part cannot be journaled") as batch:
        batch.add_stage(review.named("fine"))
        batch.add_stage(declare(unregistered))
