"""The journal: what is written, when it is durable, and what is refused."""

from __future__ import annotations

import sqlite3
import stat
import threading

import pytest
import trio
import trio.testing

from dagvisor import Pipeline, runtime, stage
from dagvisor.actors import JsonCodec
from dagvisor.errors import NotRestorableError, RunFailed
from dagvisor.supervisor import Journal
from dagvisor.supervisor._journal import JournalError


@stage
async def fetch(ctx):
    return [3, 1, 2]


@stage
async def score(ctx):
    return ctx.item * 10


@stage
async def plan(ctx):
    names = await ctx.expand(score, ctx.inputs["fetch"], reason="one per item")
    await ctx.add_stage(total, after=names, reason="sum")


@stage
async def total(ctx):
    return sum(ctx.inputs.values())


@stage
async def unencodable(ctx):
    return threading.Lock()


PIPELINE = Pipeline("journaled").add(fetch).add(plan, after=["fetch"])


async def test_a_journaled_run_is_durable_when_run_returns(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        result = await rt.run(PIPELINE, inputs={"region": "eu"})
        # Still inside the runtime: read the file with a connection of our own.
        db = sqlite3.connect(path)
        try:
            status = db.execute(
                "SELECT status FROM runs WHERE run_id = ?", (result.run_id,)
            )
            assert status.fetchone() == ("succeeded",)
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Journal(path) as journal:
        events = journal.events(result.run_id)
    assert [seq for seq, _, _ in events] == list(range(len(events)))
    ended = {p["stage"]: p for _, kind, p in events if kind == "stage_ended"}
    started = {p["stage"] for _, kind, p in events if kind == "stage_started"}
    assert set(ended) == started == set(result.states)
    codec = JsonCodec()
    for name, value in result.outputs.items():
        assert codec.decode(ended[name]["output"]) == value
    changes = [p for _, kind, p in events if kind == "change"]
    assert [c["kind"] for c in changes] == ["expand", "add_stage"]
    # Each mapped item is an event of its own, just before its change's record.
    assert changes[0]["request"]["items"] == {"events": 3}
    items = [p["output"] for _, kind, p in events if kind == "item"]
    assert items == ["3", "1", "2"]
    assert changes[0]["request"]["spec"]["fn"] == f"{__name__}:score"
    assert changes[1]["request"]["after"] == ["score[0]", "score[1]", "score[2]"]


async def test_an_output_that_cannot_be_encoded_fails_its_stage(tmp_path):
    async with runtime(journal=tmp_path / "runs.db") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(unencodable))
    error = info.value.errors["unencodable"]
    assert isinstance(error, NotRestorableError)
    assert "PickleCodec" in str(error)


async def test_a_stage_that_could_not_be_restored_is_refused_when_added(tmp_path):
    @stage
    async def adds_a_closure(ctx):
        async def local(ctx):
            return 1

        with pytest.raises(NotRestorableError, match="module level"):
            await ctx.add_stage(stage(local), reason="cannot be found after a crash")
        return "refused"

    # The adding stage itself is a closure: register it under a name.
    from dagvisor.actors import default_registry

    default_registry.register(adds_a_closure.fn, name="tests.adds_a_closure")
    async with runtime(journal=tmp_path / "runs.db") as rt:
        result = await rt.run(Pipeline("p").add(adds_a_closure))
    assert result.outputs["adds_a_closure"] == "refused"
    (record,) = result.audit
    assert record.error_type == "NotRestorableError"


async def test_a_pipeline_that_could_not_be_restored_is_refused_at_start(tmp_path):
    async def local(ctx):
        return 1

    async with runtime(journal=tmp_path / "runs.db") as rt:
        with pytest.raises(NotRestorableError, match="local"):
            await rt.start(Pipeline("p").add(stage(local)))
        with pytest.raises(NotRestorableError, match="streamed"):
            await rt.start(Pipeline.stream([fetch]))
        with pytest.raises(NotRestorableError):
            await rt.start(Pipeline("p").add(fetch), inputs={"lock": threading.Lock()})


@pytest.mark.parametrize("kind", ["text", "other_sqlite", "newer"])
async def test_a_file_that_is_not_a_usable_journal_is_refused_and_left_alone(
    tmp_path, kind
):
    path = tmp_path / "bad.db"
    if kind == "text":
        path.write_text("not a database, just some notes\n" * 20)
    else:
        db = sqlite3.connect(path)
        if kind == "other_sqlite":
            db.execute("CREATE TABLE customers (id INTEGER)")
        else:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute("INSERT INTO meta VALUES ('format_version', '99')")
        db.commit()
        db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError) as info:
        async with runtime(journal=path):
            pass
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_journal_options():
    with pytest.raises(ValueError, match="synchronous"):
        Journal("x.db", synchronous="OFF")  # type: ignore[arg-type]


@stage
async def hangs(ctx):
    await trio.sleep_forever()


async def test_leaving_the_runtime_mid_run_commits_how_the_run_ended(tmp_path):
    # Leaving the block cancels the run task itself (Ctrl-C does this): the
    # end of the run must still reach the journal, so it can be resumed.
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await rt.start(Pipeline("p").add(fetch).add(hangs, after=["fetch"]))
        await trio.testing.wait_all_tasks_blocked()
    with Journal(path, readonly=True) as journal:
        (row,) = journal.runs()
        result = journal.result(run.id)
    assert row["status"] == "cancelled"
    assert result.states["fetch"].value == "succeeded"
    assert result.states["hangs"].value == "cancelled"
