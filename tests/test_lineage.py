"""Lineage answers for every stage a change names: removed, replaced, dropped too."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dagvisor import Journal, Pipeline, StageState, runtime, stage
from dagvisor.errors import UnknownStageError
from dagvisor.supervisor import AuditLog, AuditRecord
from dagvisor.supervisor._lineage import NO_STAGE_GONE, lineage_of


@stage
async def load(ctx):
    return 1


@stage
async def legacy(ctx):
    raise AssertionError("a removed stage never runs")


@stage
async def fresh(ctx):
    return 2


@stage
async def retire(ctx):
    await ctx.add_stage(fresh.named("extra"), after=["retire"], reason="one more")
    await ctx.remove_stage("legacy", reason="retired: the export moved to v2")
    await ctx.remove_stage("extra", reason="not needed after all")


RETIRING = (
    Pipeline("retire")
    .add(load)
    .add(retire, after=["load"])
    .add(legacy, after=["retire"])
)


def _check_removed(lineage, *, added_by: str | None) -> None:
    assert lineage.in_graph is False
    assert lineage.dropped is False
    assert lineage.state is None
    assert lineage.started_at is None
    assert lineage.finished_at is None
    assert lineage.removed_by is not None
    assert lineage.removed_by.kind == "remove_stage"
    assert lineage.removed_by.requester == "retire"
    if added_by is None:
        assert lineage.created_by is None
    else:
        assert lineage.created_by is not None
        assert lineage.created_by.reason == added_by
    assert lineage.changes[-1] == lineage.removed_by


async def test_a_removed_stage_says_who_removed_it_when_and_why(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await rt.start(RETIRING)
        result = await run.wait()
        live = run.lineage("legacy")
    _check_removed(live, added_by=None)
    assert live.removed_by.reason == "retired: the export moved to v2"
    assert live == result.lineage("legacy")
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    assert stored.lineage("legacy") == live
    text = str(live)
    assert text.startswith("legacy [removed]\n")
    assert "origin: part of the pipeline the run started with" in text
    assert "removed by change #1 (remove_stage) requested by 'retire' at " in text
    assert ": retired: the export moved to v2" in text
    assert "it never ran" in text
    # Added at run time, then removed: both changes are told.
    extra = result.lineage("extra")
    _check_removed(extra, added_by="one more")
    assert [record.seq for record in extra.changes] == [0, 2]
    assert stored.lineage("extra") == extra


@stage
async def swap(ctx):
    replacement = (
        Pipeline("v2")
        .add(fresh.named("legacy"))
        .add(fresh.named("modern"), after=["legacy"])
    )
    await ctx.replace_pending(replacement, reason="schema changed")


@stage
async def gone(ctx):
    raise AssertionError("a replaced stage never runs")


async def test_stages_swapped_out_by_replace_pending(tmp_path):
    pipeline = (
        Pipeline("swap")
        .add(swap)
        .add(legacy, after=["swap"])
        .add(gone.named("obsolete"), after=["swap"])
    )
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline)
        result = await run.wait()
        replaced = run.lineage("obsolete")
        readded = run.lineage("legacy")
    assert replaced.in_graph is False
    assert replaced.removed_by is not None
    assert replaced.removed_by.kind == "replace_pending"
    assert replaced.removed_by.reason == "schema changed"
    assert replaced.created_by is None
    assert "removed by change #0 (replace_pending)" in str(replaced)
    # Removed and added again by the same change: the new stage is in the graph.
    assert readded.in_graph is True
    assert readded.removed_by is None
    assert readded.state is StageState.SUCCEEDED
    assert readded.created_by is not None
    assert readded.created_by.kind == "replace_pending"
    assert result.lineage("obsolete") == replaced
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    assert stored.lineage("obsolete") == replaced
    assert stored.lineage("legacy").created_by == readded.created_by


@stage
async def step(ctx):
    return sum(ctx.inputs.values()) + 1


@stage
async def grow(ctx):
    await ctx.add_stage(step.named("grown"), after=["grow"], reason="grow one")
    return 1


async def test_stages_dropped_from_memory_are_known_and_read_back_whole(tmp_path):
    pipeline = (
        Pipeline("drop")
        .add(step.named("s0"))
        .add(grow, after=["s0"])
        .add(step.named("s2"), after=["grow"])
    )
    path = tmp_path / "runs.db"
    async with runtime(journal=path, retain_outputs="journal") as rt:
        run = await rt.start(pipeline)
        result = await run.wait()
        live = run.lineage("s0")
    assert "s0" not in result.states  # dropped: its dependents have all ended
    assert live.in_graph is False
    assert live.dropped is True
    assert live.removed_by is None
    assert live.state is None
    assert live.created_by is None
    assert "dropped from memory" in str(live)
    assert result.lineage("s0") == live
    grown = result.lineage("grown")
    assert grown.created_by is not None
    assert grown.created_by.reason == "grow one"
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    whole = stored.lineage("s0")
    assert whole.in_graph is True
    assert whole.state is StageState.SUCCEEDED
    assert whole.started_at is not None


async def test_a_name_no_change_mentions_is_an_unknown_stage(tmp_path):
    async with runtime(journal=tmp_path / "runs.db") as rt:
        run = await rt.start(RETIRING)
        result = await run.wait()
        with pytest.raises(UnknownStageError, match="there is no stage 'ghost'"):
            run.lineage("ghost")
    with pytest.raises(UnknownStageError, match="there is no stage 'ghost'"):
        result.lineage("ghost")


class _NoScan(AuditLog):
    """An audit log that may be queried through its index, never walked."""

    def __iter__(self):
        raise AssertionError("lineage walked the whole audit trail")


def _record(seq: int, **fields) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        run_id="r",
        kind=fields.pop("kind", "add_stage"),
        requester="x",
        reason=f"change {seq}",
        accepted=True,
        version_before=seq,
        version_after=seq + 1,
        wall_time=float(seq),
        monotonic_time=float(seq),
        **fields,
    )


def test_lineage_reads_the_audit_through_its_per_stage_index():
    audit = _NoScan()
    for seq in range(10_000):
        audit.append(_record(seq, added=(f"s{seq}",)))
    audit.append(_record(10_000, kind="remove_stage", removed=("s5",)))
    lineage = lineage_of(
        "s5",
        nodes={},
        audit=audit,
        gone=NO_STAGE_GONE,
        wall_offset=0.0,
        where="run 'r'",
    )
    assert lineage.created_by is not None
    assert lineage.created_by.seq == 5
    assert lineage.removed_by is not None
    assert lineage.removed_by.seq == 10_000
    assert [record.seq for record in lineage.changes] == [5, 10_000]


async def test_a_live_run_tells_the_lineage_of_a_stage_removed_while_it_goes():
    gate = trio.Event()

    @stage
    async def held(ctx):
        await gate.wait()

    async with runtime() as rt:
        run = await rt.start(Pipeline("live").add(held).add(legacy, after=["held"]))
        await trio.testing.wait_all_tasks_blocked()
        await run.remove_stage("legacy", reason="operator: not today")
        lineage = run.lineage("legacy")
        gate.set()
        await run.wait()
    assert lineage.removed_by is not None
    assert lineage.removed_by.requester == "external"
    assert lineage.removed_by.reason == "operator: not today"


async def test_a_stage_a_streamed_pipeline_left_behind_is_known():
    streamed = Pipeline.stream((step.named(f"s{i}") for i in range(50)), window=5)
    async with runtime() as rt:
        run = await rt.start(streamed)
        result = await run.wait()
        live = run.lineage("s0")
    assert "s0" not in result.states
    assert live.dropped is True
    assert live.created_by is None
    assert result.lineage("s0") == live
    assert result.lineage("s49").state is StageState.SUCCEEDED
    with pytest.raises(UnknownStageError):
        result.lineage("s50")
