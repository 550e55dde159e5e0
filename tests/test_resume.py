"""Resuming a journaled run: what is kept, what runs again, and with what identity.

A crash is simulated in process by copying the journal while the run is in
the middle of its work (SQLite's backup API, after the writer has committed
everything queued): the copy is exactly what a killed process leaves behind.
tests/test_crash.py kills real processes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import (
    CycleError,
    DuplicateStageError,
    InvalidRequestError,
    RunFailed,
    StageStateError,
)
from dagvisor.supervisor import Journal

SIDE_EFFECTS: list[tuple[str, int, str]] = []
HOLD: dict[str, trio.Event] = {}
REACHED: dict[str, trio.Event] = {}
ITEMS: list[int] = [3, 1, 2]
KEYED = {"on": True}


async def _checkpoint(name: str) -> None:
    """Let the test see a stage reach this point, and hold it there if asked."""
    if name in REACHED:
        REACHED[name].set()
    if name in HOLD:
        await HOLD[name].wait()


@stage
async def fetch(ctx):
    SIDE_EFFECTS.append((ctx.name, ctx.attempt, ctx.idempotency_key))
    return list(ITEMS)


@stage
async def score(ctx):
    SIDE_EFFECTS.append((ctx.name, ctx.attempt, ctx.idempotency_key))
    await _checkpoint(ctx.name)
    return ctx.item * 10


@stage
async def plan(ctx):
    SIDE_EFFECTS.append((ctx.name, ctx.attempt, ctx.idempotency_key))
    key = str if KEYED["on"] else None
    # Recomputed from the source each time plan runs (a re-run may see the
    # items in another order), not read from fetch's recorded output.
    items = list(ITEMS)
    names = await ctx.expand(score, items, key=key, reason="per item")
    await _checkpoint("plan:expanded")
    await ctx.add_stage(total, after=names, reason="sum the scores")


@stage
async def total(ctx):
    SIDE_EFFECTS.append((ctx.name, ctx.attempt, ctx.idempotency_key))
    return sum(ctx.inputs.values())


PIPELINE = Pipeline("scores").add(fetch).add(plan, after=["fetch"])


@pytest.fixture(autouse=True)
def _fresh_state():
    SIDE_EFFECTS.clear()
    HOLD.clear()
    REACHED.clear()
    ITEMS[:] = [3, 1, 2]
    KEYED["on"] = True


async def _crash_copy(run, source, dest) -> None:
    # Every stage that can go on has gone on, and its records are queued:
    # a flush covers only what was queued before it.
    await trio.testing.wait_all_tasks_blocked()
    await run.wait_committed()
    copy_as_crashed(source, dest)


async def _run_until_crash(tmp_path, hold_at: str) -> tuple[str, object]:
    """Run PIPELINE until the stage ``hold_at`` is reached; return (run id, crash copy)."""
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    HOLD[hold_at] = trio.Event()
    REACHED[hold_at] = trio.Event()
    async with runtime(journal=live) as rt:
        run = await rt.start(PIPELINE)
        await REACHED[hold_at].wait()
        await trio.testing.wait_all_tasks_blocked()
        await _crash_copy(run, live, crashed)
        await run.cancel()
    HOLD.clear()
    REACHED.clear()
    return run.id, crashed


async def test_a_crashed_run_resumes_without_redoing_finished_work(tmp_path):
    run_id, crashed = await _run_until_crash(tmp_path, "score[2]")
    before = list(SIDE_EFFECTS)
    assert ("score[2]", 0, f"{run_id}:score[2]") in before
    done_before = {name for name, _, _ in before} - {"score[2]"}
    SIDE_EFFECTS.clear()
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run_id)
    assert result.run_id == run_id
    assert result.outputs == {
        "fetch": [3, 1, 2],
        "plan": None,
        "score[3]": 30,
        "score[1]": 10,
        "score[2]": 20,
        "total": 60,
    }
    again = {name for name, _, _ in SIDE_EFFECTS}
    assert again == {"score[2]", "total"}
    assert not again & done_before
    # The stage that was running at the crash runs again as a later attempt
    # with the same idempotency key.
    assert ("score[2]", 1, f"{run_id}:score[2]") in SIDE_EFFECTS
    # The stages added at run time kept their origin.
    assert result.origins["score[2]"].kind == "expand"
    assert result.origins["total"].requester == "plan"
    assert [record.seq for record in result.audit] == list(range(len(result.audit)))


async def test_a_rerun_stage_asking_for_its_changes_again_is_deduplicated(tmp_path):
    run_id, crashed = await _run_until_crash(tmp_path, "plan:expanded")
    SIDE_EFFECTS.clear()
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run_id)
    assert result.ok
    assert sorted(name for name in result.states if name.startswith("score")) == [
        "score[1]",
        "score[2]",
        "score[3]",
    ]
    expands = [record for record in result.audit if record.kind == "expand"]
    assert [record.added for record in expands] == [
        ("score[3]", "score[1]", "score[2]"),
        (),  # asked again by the re-run plan: accepted, nothing to add
    ]
    assert all(record.accepted for record in expands)
    assert result.outputs["total"] == 60
    assert ("plan", 1, f"{run_id}:plan") in SIDE_EFFECTS


async def test_a_mapped_stage_keeps_the_item_recorded_for_it(tmp_path):
    # Content keys: the re-run plan sees the items in another order; each
    # mapped stage is still the same item, so the re-add is the same change.
    run_id, crashed = await _run_until_crash(tmp_path, "plan:expanded")
    ITEMS[:] = [2, 3, 1]
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run_id)
    assert {name: result.outputs[name] for name in result.outputs if "[" in name} == {
        "score[3]": 30,
        "score[1]": 10,
        "score[2]": 20,
    }


async def test_a_rerun_that_maps_other_items_by_position_is_refused(tmp_path):
    # Position keys: score[0] was recorded for item 3. A re-run that computes
    # [1, 2, 3] would make score[0] mean item 1: it is refused, never
    # silently matched with the output recorded for another item.
    KEYED["on"] = False
    run_id, crashed = await _run_until_crash(tmp_path, "plan:expanded")
    ITEMS[:] = [1, 2, 3]
    async with runtime(journal=crashed, on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.resume(run_id)
    result = info.value.result
    assert isinstance(result.errors["plan"], DuplicateStageError)
    # Each mapped stage ran on the item recorded for it.
    assert result.outputs["score[0]"] == 30
    assert result.outputs["score[1]"] == 10
    assert result.outputs["score[2]"] == 20
    assert "total" not in result.states


async def test_a_cancelled_run_resumes_and_a_finished_one_has_nothing_to_do(tmp_path):
    path = tmp_path / "runs.db"
    HOLD["score[1]"] = trio.Event()
    REACHED["score[1]"] = trio.Event()
    async with runtime(journal=path) as rt:
        run = await rt.start(PIPELINE)
        await REACHED["score[1]"].wait()
        await run.cancel(reason="stop for now")
        HOLD.clear()
        result = await rt.resume(run.id)
        assert result.ok
        assert result.outputs["total"] == 60
        SIDE_EFFECTS.clear()
        again = await rt.resume(run.id)  # nothing left to run
    assert SIDE_EFFECTS == []
    assert dict(again.outputs) == dict(result.outputs)
    with Journal(path, readonly=True) as journal:
        (row,) = journal.runs()
    assert row["status"] == "succeeded"


async def test_a_stage_cancelled_on_purpose_stays_cancelled(tmp_path):
    path = tmp_path / "runs.db"
    HOLD["score[1]"] = trio.Event()
    REACHED["score[1]"] = trio.Event()
    async with runtime(journal=path, on_failure="continue") as rt:
        run = await rt.start(PIPELINE)
        await REACHED["score[1]"].wait()
        await run.cancel_stage("score[1]", reason="not needed")
        first = await run.wait()
        HOLD.clear()
        SIDE_EFFECTS.clear()
        result = await rt.resume(run.id)
    assert first.states["score[1]"] is StageState.CANCELLED
    assert SIDE_EFFECTS == []
    assert result.states["score[1]"] is StageState.CANCELLED
    assert result.states["total"] is StageState.CANCELLED
    assert result.outputs["score[3]"] == 30


async def test_resume_needs_a_journal_and_a_run_that_is_not_going(tmp_path):
    async with runtime() as rt:
        with pytest.raises(InvalidRequestError, match="journal"):
            await rt.resume("abc")
    HOLD["score[1]"] = trio.Event()
    REACHED["score[1]"] = trio.Event()
    async with runtime(journal=tmp_path / "runs.db") as rt:
        run = await rt.start(PIPELINE)
        await REACHED["score[1]"].wait()
        with pytest.raises(InvalidRequestError, match="still going"):
            await rt.resume(run.id)
        await run.cancel()


async def test_lineage_in_memory_and_from_the_journal_agree(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await rt.start(PIPELINE)
        result = await run.wait()
        live = run.lineage("total")
    assert live == result.lineage("total")
    assert live.created_by is not None
    assert live.created_by.requester == "plan"
    assert live.created_by.reason == "sum the scores"
    assert [c.stage for c in live.consumed] == ["score[3]", "score[1]", "score[2]"]
    assert live.started_at is not None
    assert all(c.produced_at <= live.started_at for c in live.consumed)
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    from_journal = stored.lineage("total")
    assert from_journal.created_by == live.created_by
    assert [c.stage for c in from_journal.consumed] == [c.stage for c in live.consumed]
    assert from_journal.started_at == pytest.approx(live.started_at, abs=1e-3)
    mapped = stored.lineage("score[1]")
    assert mapped.item_key == "1"
    assert mapped.created_by.kind == "expand"
    assert stored.lineage("fetch").created_by is None
    assert "added by change #1 (add_stage) requested by 'plan'" in str(from_journal)
    assert stored.outputs == result.outputs
    assert stored.states == result.states
    assert stored.dependencies == result.dependencies


@stage
async def gate(ctx):
    await _checkpoint("gate")
    return 1


@stage
async def step(ctx):
    return sum(value for value in ctx.inputs.values() if isinstance(value, int)) + 1


def _shape(graph) -> dict[str, tuple[tuple[str, ...], int | None]]:
    """Each stage's dependencies and the change that added it (a snapshot or a result)."""
    origins = {
        name: origin if origin is None or isinstance(origin, int) else origin.seq
        for name, origin in graph.origins.items()
    }
    return {
        name: (tuple(sorted(deps)), origins[name])
        for name, deps in graph.dependencies.items()
    }


async def _change_crash_and_resume(directory, seed: int, changes: int) -> None:
    """Change a held run ``changes`` times at random, crash it, resume it; check."""
    import random

    live, crashed = directory / "live.db", directory / "crashed.db"
    rng = random.Random(seed)
    HOLD["gate"] = trio.Event()
    REACHED["gate"] = trio.Event()
    async with runtime(journal=live, on_failure="continue") as rt:
        run = await rt.start(Pipeline("changing").add(gate))
        await REACHED["gate"].wait()
        made = 0
        for i in range(changes):
            states = run.snapshot().states
            pending = [n for n, state in states.items() if state.value == "pending"]
            roll = rng.random()
            try:
                if roll < 0.4 or len(pending) < 4:
                    after = ["gate", *rng.sample(pending, min(len(pending), 2))]
                    await run.add_stage(
                        step.named(f"s{made}"), after=after, reason="grow"
                    )
                    made += 1
                elif roll < 0.6:
                    upstream, downstream = rng.sample(pending, 2)
                    await run.add_edge(upstream, downstream, reason="wire")
                elif roll < 0.7:
                    items = list(range(rng.randrange(1, 4)))
                    await run.expand(
                        step.named(f"m{i}"),
                        items,
                        after=[rng.choice(pending)],
                        reason="map",
                    )
                elif roll < 0.85:
                    await run.remove_stage(rng.choice(pending), reason="prune")
                elif roll < 0.95:
                    await run.cancel_stage(rng.choice(pending), reason="not needed")
                elif i % 2 == 0:
                    # Swap the rest of the pipeline for a smaller one.
                    swap = Pipeline("swap").add(gate)
                    for k in range(3):
                        swap = swap.add(step.named(f"w{i}_{k}"), after=["gate"])
                    await run.replace_pending(swap, reason="swap")
                else:
                    await run.add_edge("gate", rng.choice(pending), reason="again")
            except (CycleError, StageStateError):
                pass  # refused changes are part of the trail too
        assert len(run.audit()) == changes
        await _crash_copy(run, live, crashed)
        snapshot = run.snapshot()
        at_crash = _shape(snapshot)
        states_at_crash = dict(snapshot.states)
        audit_at_crash = run.audit().snapshot()
        await run.cancel()
    with Journal(crashed, readonly=True) as journal:
        stored = journal.result(run.id)
    assert _shape(stored) == at_crash
    assert dict(stored.states) == states_at_crash
    assert stored.audit == audit_at_crash
    assert stored.status == "interrupted"
    HOLD.clear()
    async with runtime(journal=crashed, on_failure="continue") as rt:
        run2 = await rt.start_resumed(run.id)
        resumed_shape = _shape(run2.snapshot())
        result = await run2.wait()
    assert resumed_shape == at_crash
    assert result.audit[:changes] == audit_at_crash
    kept_cancelled = {
        name for name, state in states_at_crash.items() if state is StageState.CANCELLED
    }
    for name, state in result.states.items():
        if name in kept_cancelled:
            assert state is StageState.CANCELLED
        elif state is not StageState.CANCELLED:
            assert state is StageState.SUCCEEDED, (name, state)
    # Everything that could run did: what is left cancelled waited for a
    # stage cancelled on purpose.
    for name, state in result.states.items():
        if state is StageState.CANCELLED and name not in kept_cancelled:
            deps = result.dependencies[name]
            assert any(result.states[dep] is StageState.CANCELLED for dep in deps)


async def test_a_run_changed_a_thousand_times_resumes_to_the_same_graph(tmp_path):
    await _change_crash_and_resume(tmp_path, seed=1234, changes=1000)


@settings(max_examples=int(os.environ.get("DAGVISOR_RESUME_EXAMPLES", "15")))
@given(seed=st.integers(0, 2**32 - 1), changes=st.integers(1, 120))
async def test_any_run_of_random_changes_resumes_to_the_same_graph(seed, changes):
    with tempfile.TemporaryDirectory() as directory:
        await _change_crash_and_resume(Path(directory), seed, changes)


@stage
async def fails(ctx):
    raise ValueError("no data")


@stage
async def maps_after_the_failure(ctx):
    await HOLD["mapper"].wait()
    return await ctx.expand(step, [1, 2], after=["fails"], reason="too late")


async def test_stages_a_change_settles_at_once_are_journaled_after_it(tmp_path):
    # The mapped stages are upstream_failed the moment they are added: the
    # journal must hold the change that added them before their ends.
    path = tmp_path / "runs.db"
    HOLD["mapper"] = trio.Event()
    pipeline = Pipeline("p").add(fails).add(maps_after_the_failure)
    async with runtime(journal=path, on_failure="continue") as rt:
        run = await rt.start(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        HOLD["mapper"].set()
        with pytest.raises(RunFailed):
            await run.wait()
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    assert stored.states["step[0]"] is StageState.UPSTREAM_FAILED
    assert stored.origins["step[1]"].kind == "expand"
