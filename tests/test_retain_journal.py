"""retain_outputs="journal": finished stages leave memory, the journal keeps them."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed

from dagvisor import Journal, Pipeline, StageState, runtime, stage
from dagvisor.errors import DuplicateStageError, InvalidRequestError, StageStateError

SEEN: dict[str, int] = {}
HOLD: dict[str, trio.Event] = {}


@stage
async def step(ctx):
    return sum(ctx.inputs.values()) + 1


@stage
async def watch(ctx):
    # The finished stages the supervisor holds while a stage deep in the chain runs.
    states = RUNS[0].snapshot().states.values()
    SEEN["held"] = sum(1 for state in states if state.is_terminal)
    return sum(ctx.inputs.values()) + 1


RUNS: list = []


def _chain(length: int) -> Pipeline:
    pipeline = Pipeline("chain").add(step.named("s0"))
    for i in range(1, length):
        spec = watch.named(f"s{i}") if i == length // 2 else step.named(f"s{i}")
        pipeline = pipeline.add(spec, after=[f"s{i - 1}"])
    return pipeline


async def test_a_long_chain_holds_only_what_is_in_flight(tmp_path):
    path = tmp_path / "runs.db"
    RUNS.clear()
    async with runtime(journal=path, retain_outputs="journal") as rt:
        run = await rt.start(_chain(2000))
        RUNS.append(run)
        result = await run.wait()
    assert SEEN["held"] == 1  # the stage before it, whose output it read
    assert result.stats.stages == 2000
    assert result.stats.counts[StageState.SUCCEEDED] == 2000
    assert dict(result.outputs) == {"s1999": 2000}  # the final stage stays
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    assert len(stored.states) == 2000
    assert stored.outputs["s700"] == 701
    assert stored.lineage("s701").consumed[0].stage == "s700"


@stage
async def hold(ctx):
    await HOLD["hold"].wait()


@stage
async def first(ctx):
    return 1


@stage
async def second(ctx):
    return ctx.inputs["first"] + 1


async def test_a_change_naming_a_dropped_stage_is_refused(tmp_path):
    HOLD["hold"] = trio.Event()
    pipeline = Pipeline("p").add(first).add(second, after=["first"]).add(hold)
    async with runtime(journal=tmp_path / "runs.db", retain_outputs="journal") as rt:
        run = await rt.start(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(StageStateError, match="left memory"):
            await run.add_stage(second.named("again"), after=["first"], reason="late")
        with pytest.raises(DuplicateStageError, match="'first'"):
            await run.add_stage(first, reason="a new stage under a used name")
        with pytest.raises(StageStateError, match="left memory"):
            await run.add_edge("first", "hold", reason="wire")
        HOLD["hold"].set()
        result = await run.wait()
    assert "first" not in result.states
    assert result.outputs["second"] == 2
    assert [record.accepted for record in result.audit] == [False, False, False]


def test_retain_journal_needs_a_journal():
    async def main():
        async with runtime(retain_outputs="journal"):
            pass

    with pytest.raises(
        InvalidRequestError, match=r"give runtime\(journal=\.\.\.\) too"
    ):
        trio.run(main)


@stage
async def source(ctx):
    return [1, 2, 3]


@stage
async def double(ctx):
    return ctx.item * 2


@stage
async def plan(ctx):
    names = await ctx.expand(double, ctx.inputs["source"], key=str, reason="map")
    await ctx.add_stage(collect.named("collect"), after=names, reason="collect")
    # Wait until the mapped stages and the collector have ended (so they are
    # dropped), then crash here on the first run.
    if "plan" in HOLD:
        await HOLD["plan"].wait()
    return len(names)


@stage
async def collect(ctx):
    return sum(ctx.inputs.values())


@stage
async def report(ctx):
    return {"plan": ctx.inputs["plan"]}


async def test_a_resumed_stage_asking_again_for_dropped_stages_is_a_no_op(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    HOLD["plan"] = trio.Event()
    pipeline = Pipeline("p").add(source).add(plan, after=["source"])
    pipeline = pipeline.add(report, after=["plan"])
    async with runtime(journal=live, retain_outputs="journal") as rt:
        run = await rt.start(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        held = set(run.snapshot().states)
        assert "double[1]" not in held  # ended, and its only dependent too
        await run.wait_committed()
        copy_as_crashed(live, crashed)
        await run.cancel()
    HOLD.clear()
    async with runtime(journal=crashed, retain_outputs="journal") as rt:
        result = await rt.resume(run.id)
    assert result.outputs["report"] == {"plan": 3}
    expands = [record for record in result.audit if record.kind == "expand"]
    assert [record.added for record in expands] == [
        ("double[1]", "double[2]", "double[3]"),
        (),
    ]
    with Journal(crashed, readonly=True) as journal:
        stored = journal.result(run.id)
    assert stored.outputs["collect"] == 12


@stage
async def grow(ctx):
    index = int(ctx.name[1:])
    if index + 1 < ctx.run_inputs["stages"]:
        await ctx.add_stage(
            grow.named(f"g{index + 1}"), after=[ctx.name], reason="the next step"
        )
    return index


async def test_a_grown_chain_keeps_only_recent_audit_records_in_memory(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path, retain_outputs="journal") as rt:
        run = await rt.start(
            Pipeline("grown").add(grow.named("g0")), inputs={"stages": 3000}
        )
        result = await run.wait()
    trail = run.audit()
    assert len(trail) == 2999  # every change is counted ...
    assert result.audit == trail  # the same log, of the same type
    assert len(result.audit) == 2999
    recent = result.audit.snapshot()
    assert 900 <= len(recent) <= 1001  # ... the recent ones stay in memory
    assert [r.seq for r in recent] == list(range(2999 - len(recent), 2999))
    assert result.stats.changes == 2999
    assert result.origins["g2999"] is trail[2998]  # the stage in memory keeps its own
    with pytest.raises(LookupError, match="left memory"):
        trail[5]
    with Journal(path, readonly=True) as journal:
        assert len(journal.result(run.id).audit) == 2999
