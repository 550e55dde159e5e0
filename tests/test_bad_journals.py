"""Bad journals: each gives a clear typed error and leaves the file as it was."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
import trio
import trio.testing

from dagvisor import Pipeline, runtime, stage
from dagvisor.actors import StageRegistry
from dagvisor.errors import JournalError, NotRestorableError, UnknownRunError
from dagvisor.supervisor import Journal


@stage
async def first(ctx):
    return 1


@stage
async def waits(ctx):
    await trio.sleep_forever()


@stage
async def grows(ctx):
    await ctx.add_stage(first.named("added"), reason="grow")
    await trio.sleep_forever()


async def _cancelled_run(path) -> str:
    """A journal with one resumable (cancelled) run; returns its id."""
    pipeline = Pipeline("p").add(first).add(grows, after=["first"])
    pipeline = pipeline.add(waits, after=["first"])
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        assert len(run.audit()) == 1
        await run.cancel()
    return run.id


def _content(path) -> str:
    """The journal's logical content (what a resume must not change)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    finally:
        db.close()


async def _resume(path, run_id, **options):
    async with runtime(journal=path, **options) as rt:
        return await rt.resume(run_id)


def _read(path, run_id):
    with Journal(path, readonly=True) as journal:
        return journal.result(run_id)


async def test_a_missing_journal_is_an_error_and_is_not_created(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(JournalError, match="no journal at"):
        _read(path, "abc")
    assert not path.exists()


@pytest.mark.parametrize("kind", ["text", "empty", "newer"])
def test_a_file_that_is_not_a_journal_is_refused_when_read(tmp_path, kind):
    path = tmp_path / "bad.db"
    if kind == "text":
        path.write_text("shopping list\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('format_version', '99')")
        db.commit()
        db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError) as info:
        _read(path, "abc")
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


async def test_an_unknown_run_id_is_an_error(tmp_path):
    path = tmp_path / "runs.db"
    await _cancelled_run(path)
    before = _content(path)
    with pytest.raises(UnknownRunError, match="no run 'nope'"):
        await _resume(path, "nope")
    with pytest.raises(UnknownRunError):
        _read(path, "nope")
    assert _content(path) == before


async def test_a_stage_no_longer_registered_is_named(tmp_path):
    path = tmp_path / "runs.db"
    run_id = await _cancelled_run(path)
    before = _content(path)
    with pytest.raises(NotRestorableError, match=f"{__name__}:waits") as info:
        await _resume(path, run_id, registry=StageRegistry())
    assert "import the modules" in str(info.value)
    assert _content(path) == before
    # Reading the run back needs no function.
    assert _read(path, run_id).states["waits"].value == "cancelled"


EDITS = {
    "gap": "DELETE FROM events WHERE seq = 1",
    "bad_json": "UPDATE events SET payload = '{not json' WHERE seq = 0",
    "unknown_stage": (
        "UPDATE events SET payload = json_set(payload, '$.stage', 'ghost') "
        "WHERE kind = 'stage_started' AND seq = (SELECT MIN(seq) FROM events "
        "WHERE kind = 'stage_started')"
    ),
    "unknown_kind": "UPDATE events SET kind = 'mystery' WHERE seq = 0",
    "bad_state": (
        "UPDATE events SET payload = json_set(payload, '$.state', 'exploded') "
        "WHERE kind = 'stage_ended'"
    ),
    "broken_audit": (
        "UPDATE events SET payload = json_set(payload, '$.seq', 7) WHERE kind = 'change'"
    ),
    "bad_pipeline": 'UPDATE runs SET pipeline = \'{"specs": [], "stages": [["a", 5, []]]}\'',
}


@pytest.mark.parametrize("edit", sorted(EDITS))
async def test_a_hand_edited_journal_is_refused(tmp_path, edit):
    path = tmp_path / "runs.db"
    run_id = await _cancelled_run(path)
    db = sqlite3.connect(path)
    db.execute(EDITS[edit])
    db.commit()
    db.close()
    before = _content(path)
    with pytest.raises(JournalError, match="damaged or"):
        await _resume(path, run_id)
    with pytest.raises(JournalError, match="damaged or"):
        _read(path, run_id)
    assert _content(path) == before


async def test_a_truncated_journal_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("long").add(first)
    for i in range(400):
        pipeline = pipeline.add(first.named(f"s{i}"), after=["first"])
    async with runtime(journal=path) as rt:
        result = await rt.run(pipeline)
    # Cut the file in the middle of its pages, as a full disk or a bad copy would.
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    before = path.read_bytes()
    with pytest.raises(JournalError, match="damaged"):
        _read(path, result.run_id)
    with pytest.raises(JournalError):
        await _resume(path, result.run_id)
    assert path.read_bytes() == before
