"""``@stage(persist=False)``: an output consumers get in memory that the journal never holds.

A resume runs such a stage again exactly when a stage that will run reads
its output (transitively), and not otherwise. Crashes are simulated by
copying the journal while the run is held (see tests/test_resume.py).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed

from dagvisor import Journal, Pipeline, StageState, runtime, stage
from dagvisor.errors import InvalidStageError, StageStateError

RAN: list[str] = []
HOLD: dict[str, trio.Event] = {}
REACHED: dict[str, trio.Event] = {}


async def _reach(name: str) -> None:
    RAN.append(name)
    if name in REACHED:
        REACHED[name].set()
    if name in HOLD:
        await HOLD[name].wait()


@stage(persist=False)
async def secret(ctx: Any) -> dict[str, int]:
    await _reach("secret")
    return {"token": 41}


@stage(persist=False)
async def derived(ctx: Any) -> int:
    await _reach("derived")
    return ctx.inputs["secret"]["token"] + 1


@stage
async def public(ctx: Any) -> str:
    await _reach("public")
    return f"used {ctx.inputs['derived']}"


@stage
async def early(ctx: Any) -> int:
    await _reach("early")
    return ctx.inputs["secret"]["token"]


@stage
async def late(ctx: Any) -> str:
    await _reach("late")
    return "late"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    RAN.clear()
    HOLD.clear()
    REACHED.clear()


def _events(path: Any, run_id: str) -> dict[str, dict[str, Any]]:
    with Journal(path, readonly=True) as journal:
        return {
            payload["stage"]: payload
            for _, kind, payload in journal.events(run_id)
            if kind == "stage_ended"
        }


async def test_an_unpersisted_output_reaches_consumers_and_not_the_journal(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("p").add(secret).add(derived, after=["secret"])
    pipeline = pipeline.add(public, after=["derived"])
    async with runtime(journal=path) as rt:
        result = await rt.run(pipeline)
    assert result.outputs["public"] == "used 42"
    assert result.outputs["secret"] == {"token": 41}  # the live run keeps it
    ended = _events(path, result.run_id)
    assert ended["secret"]["persisted"] is False
    assert "output" not in ended["secret"]
    assert ended["public"]["output"] == '"used 42"'
    db = sqlite3.connect(path)
    try:
        stored = db.execute("SELECT payload, output, data FROM events").fetchall()
    finally:
        db.close()
    assert not any('"token"' in str(row) for row in stored)  # nowhere in the file
    with Journal(path, readonly=True) as journal:
        read = journal.result(result.run_id)
    assert read.states["secret"] is StageState.SUCCEEDED
    assert "secret" not in read.outputs
    assert "derived" not in read.outputs
    assert read.outputs["public"] == "used 42"


async def _crash_while(path: Any, crashed: Any, pipeline: Pipeline, at: str) -> str:
    HOLD[at] = trio.Event()
    REACHED[at] = trio.Event()
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline)
        await REACHED[at].wait()
        await trio.testing.wait_all_tasks_blocked()
        await run.wait_committed()
        copy_as_crashed(path, crashed)
        await run.cancel()
    HOLD.clear()
    REACHED.clear()
    return run.id


async def test_a_resume_reruns_the_unpersisted_chain_a_pending_consumer_reads(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    pipeline = Pipeline("p").add(secret).add(derived, after=["secret"])
    pipeline = pipeline.add(public, after=["derived"])
    run_id = await _crash_while(live, crashed, pipeline, "public")
    assert RAN == ["secret", "derived", "public"]
    RAN.clear()
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run_id)
    # public was running at the crash: it runs again, and needs derived,
    # which needs secret: neither output is in the journal, so both run.
    assert sorted(RAN) == ["derived", "public", "secret"]
    assert result.outputs["public"] == "used 42"


async def test_a_resume_leaves_an_unpersisted_stage_whose_consumers_finished(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    pipeline = Pipeline("p").add(secret).add(early, after=["secret"]).add(late)
    pipeline = pipeline.add_edge("early", "late")
    run_id = await _crash_while(live, crashed, pipeline, "late")
    RAN.clear()
    HOLD["late"], REACHED["late"] = trio.Event(), trio.Event()
    async with runtime(journal=crashed) as rt:
        run = await rt.start_resumed(run_id)
        await REACHED["late"].wait()
        # Its output is not in memory either: a new reader is refused.
        with pytest.raises(StageStateError, match="persist=False"):
            await run.add_stage(early.named("again"), after=["secret"], reason="x")
        HOLD["late"].set()
        result = await run.wait()
    assert RAN == ["late"]  # early had read secret before the crash
    assert result.states["secret"] is StageState.SUCCEEDED
    assert "secret" not in result.outputs
    assert result.outputs["early"] == 41


def test_persist_takes_true_or_false_only() -> None:
    with pytest.raises(InvalidStageError, match="persist must be True or False"):
        stage(persist=1)(secret.fn)  # type: ignore[arg-type]
    assert stage(persist=False)(secret.fn).persist is False
