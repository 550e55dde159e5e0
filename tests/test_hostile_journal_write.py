"""Writing a journal under bad luck and hostile input: nothing reported that was not kept.

A locked file, a value too large for SQLite, text SQLite cannot store, a
journal edited on disk: each either fails the run it concerns with a typed
error (never a raw ``sqlite3`` error or an exception group, never another
run), or is stored so that every reader gets it back exactly.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import assume, given
from strategies import any_text

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import (
    JournalError,
    JournalWriteError,
    OutputTooLargeError,
    RunFailed,
    RunFailedError,
)
from dagvisor.supervisor._format import FORMAT_VERSION

GATES: dict[str, trio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh_gates():
    GATES.clear()
    yield
    GATES.clear()


@stage
async def one(ctx):
    return 1


@stage
async def gate(ctx):
    """Waits until the test opens the gate named by the run's inputs."""
    await GATES[ctx.run_inputs["gate"]].wait()
    return "through"


@stage
async def after_gate(ctx):
    return ctx.inputs["gate"] + "!"


@stage
async def big(ctx):
    return "x" * ctx.run_inputs["size"]


@stage
async def fan(ctx):
    try:
        await ctx.expand(one, ["y" * ctx.run_inputs["size"]], reason="a huge item")
    except OutputTooLargeError as exc:
        return f"refused: {exc}"
    return "fanned"


@stage
async def long_reason(ctx):
    await ctx.add_stage(one, reason="r" * ctx.run_inputs["size"])
    return "asked"


def _content(path) -> str:
    """The journal's logical content, read without changing it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    finally:
        db.close()


def _rows(path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def _committed(rt) -> None:
    """Wait until the runtime's journal writer has committed what was queued."""
    await rt._journal.flush()


async def _warm(path) -> None:
    async with runtime(journal=path) as rt:
        await rt.run(Pipeline("warm").add(one))


class _Lock:
    """Another process's connection holding the journal's write lock."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self, *_: object) -> None:
        if self.held:
            self.held = False
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self.db.close()


# -- a locked journal ----------------------------------------------------------------


async def test_a_locked_journal_fails_the_run_and_keeps_nothing_of_it(tmp_path):
    path = tmp_path / "runs.db"
    await _warm(path)
    before = _content(path)
    lock = _Lock(path)
    try:
        async with runtime(journal=Journal(path, busy_timeout=0.2)) as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("locked").add(one).add(one.named("two")))
    finally:
        lock.close()
    failed = info.value
    assert isinstance(failed.journal_error, JournalWriteError)
    assert failed.journal_error.run_id == failed.result.run_id
    assert "locked by another process" in str(failed.journal_error)
    assert failed.result.status == "failed"
    assert "could not commit" in str(failed)
    # The first batch failed: nothing of the run is in the file, not even
    # an orphan event after the lock was gone.
    assert _content(path) == before


async def test_a_lock_released_while_the_writer_backs_off_loses_nothing(tmp_path):
    path = tmp_path / "runs.db"
    await _warm(path)
    lock = _Lock(path)
    # In a thread of this process, where the seam is seen.
    journal = Journal(path, busy_timeout=600, writer="thread")
    journal._backoff = lock.release  # the other process lets go meanwhile
    try:
        async with runtime(journal=journal) as rt:
            result = await rt.run(Pipeline("waited").add(one))
    finally:
        lock.close()
    assert result.status == "succeeded"
    with Journal(path, readonly=True) as reader:
        assert reader.result(result.run_id).outputs == {"one": 1}


async def test_a_run_whose_later_batch_fails_keeps_its_prefix_and_nothing_after(
    tmp_path,
):
    path = tmp_path / "runs.db"
    await _warm(path)
    GATES["g"] = trio.Event()
    pipeline = Pipeline("later").add(gate).add(after_gate, after=["gate"])
    lock = None
    try:
        async with runtime(journal=Journal(path, busy_timeout=0.2)) as rt:
            run = await rt.start(pipeline, inputs={"gate": "g"})
            await trio.testing.wait_all_tasks_blocked()
            await _committed(rt)
            prefix = _rows(
                path, "SELECT seq, kind FROM events WHERE run_id = ?", (run.id,)
            )
            assert prefix == [(0, "stage_started")]
            lock = _Lock(path)
            GATES["g"].set()  # the next records meet the lock
            with pytest.raises(RunFailed) as info:
                await run.wait()
            lock.release()  # too late: the run has stopped
        assert isinstance(info.value.journal_error, JournalWriteError)
        assert info.value.result.status == "failed"
    finally:
        if lock is not None:
            lock.close()
    # Exactly the prefix committed before the failure: no suffix was
    # committed later (not the end of the run, not its last events).
    assert _rows(path, "SELECT seq, kind FROM events WHERE run_id = ?", (run.id,)) == (
        prefix
    )
    assert _rows(path, "SELECT status FROM runs WHERE run_id = ?", (run.id,)) == [
        ("running",)
    ]
    # Its lease was given up when the run ended, so it can be resumed at once.
    GATES["g"] = trio.Event()
    GATES["g"].set()
    async with runtime(journal=path) as rt:
        resumed = await rt.resume(run.id)
    assert resumed.outputs["after_gate"] == "through!"


async def test_a_full_disk_fails_the_runs_it_could_not_record(tmp_path):
    path = tmp_path / "runs.db"
    journal = Journal(path, writer="thread")  # its connection is this object's
    async with runtime(journal=journal) as rt:
        await rt.run(Pipeline("warm").add(one))
        # Stand-in for a full disk: the file may not grow any more.
        (pages,) = journal._db.execute("PRAGMA page_count").fetchone()
        journal._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("grows").add(big), inputs={"size": 50_000})
    error = info.value.journal_error
    assert isinstance(error, JournalWriteError)
    assert "is full" in str(error)
    # What fitted before the disk filled up is kept; nothing after it.
    run_id = info.value.result.run_id
    kinds = _rows(
        path, "SELECT kind FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    )
    assert ("stage_ended",) not in kinds
    assert _rows(path, "SELECT status FROM runs WHERE run_id = ?", (run_id,)) in (
        [],
        [("running",)],
    )


# -- values too large for the journal -----------------------------------------------


async def test_an_output_too_large_fails_its_stage_and_no_other_run(tmp_path):
    path = tmp_path / "runs.db"
    GATES["b"] = trio.Event()
    journal = Journal(path, max_value_bytes=100_000)
    async with runtime(journal=journal) as rt:
        other = await rt.start(Pipeline("other").add(gate), inputs={"gate": "b"})
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("huge").add(big), inputs={"size": 200_000})
        GATES["b"].set()
        assert (await other.wait()).outputs == {"gate": "through"}
    failed = info.value
    assert failed.journal_error is None
    error = failed.errors["big"]
    assert isinstance(error, OutputTooLargeError)
    assert error.size > error.limit
    assert "max_value_bytes" in str(error)
    with Journal(path, readonly=True) as reader:
        stored = reader.result(failed.result.run_id)
        assert reader.result(other.id).status == "succeeded"
    assert stored.status == "failed"
    assert stored.states["big"].value == "failed"
    assert "OutputTooLargeError" in str(stored.errors["big"])


async def test_an_output_just_under_the_limit_is_kept(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=Journal(path, max_value_bytes=200_000)) as rt:
        result = await rt.run(Pipeline("fits").add(big), inputs={"size": 120_000})
    with Journal(path, readonly=True) as reader:
        assert reader.result(result.run_id).outputs["big"] == "x" * 120_000


async def test_run_inputs_too_large_are_refused_before_the_run_starts(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=Journal(path, max_value_bytes=100_000)) as rt:
        with pytest.raises(OutputTooLargeError, match="the run's inputs"):
            await rt.start(Pipeline("huge").add(one), inputs={"x": "z" * 200_000})
    assert not path.exists()  # nothing was written, so no file was made


async def test_mapped_items_too_large_are_refused_to_the_requester(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=Journal(path, max_value_bytes=100_000)) as rt:
        result = await rt.run(Pipeline("fanning").add(fan), inputs={"size": 200_000})
    assert result.outputs["fan"].startswith("refused: the items of expand of 'one'")
    (record,) = result.audit
    assert (record.kind, record.accepted, record.error_type) == (
        "expand",
        False,
        "OutputTooLargeError",
    )
    with Journal(path, readonly=True) as reader:
        assert reader.result(result.run_id).audit[0].error_type == "OutputTooLargeError"


async def test_a_record_sqlite_refuses_fails_only_its_run(tmp_path):
    """A reason too large for SQLite: caught by the writer, not by the stage."""
    path = tmp_path / "runs.db"
    GATES["b"] = trio.Event()
    async with runtime(journal=Journal(path, max_value_bytes=100_000)) as rt:
        other = await rt.start(Pipeline("other").add(gate), inputs={"gate": "b"})
        await trio.testing.wait_all_tasks_blocked()
        await _committed(rt)
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("asking").add(long_reason), inputs={"size": 200_000})
        GATES["b"].set()
        assert (await other.wait()).status == "succeeded"
    failed = info.value
    assert isinstance(failed.journal_error, JournalWriteError)
    assert "larger than the 100,000 bytes" in str(failed.journal_error)
    with Journal(path, readonly=True) as reader:
        stored = reader.load(failed.result.run_id)
        assert reader.result(other.id).status == "succeeded"
    seqs = [seq for seq, _, _ in stored.events]
    assert seqs == list(range(len(seqs)))  # a prefix, no gap
    assert "change" not in {kind for _, kind, _ in stored.events}


async def test_a_pipeline_name_sqlite_refuses_fails_only_its_run(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=Journal(path, max_value_bytes=100_000)) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("n" * 200_000).add(one))
        assert (await rt.run(Pipeline("fine").add(one))).status == "succeeded"
    assert isinstance(info.value.journal_error, JournalWriteError)
    assert [name for (name,) in _rows(path, "SELECT name FROM runs")] == ["fine"]
    assert _rows(path, "SELECT COUNT(*) FROM leases") == [(0,)]


async def test_a_writer_that_breaks_fails_its_runs_not_the_runtime(
    tmp_path, monkeypatch
):
    import dagvisor.supervisor._writer as writer_module

    def broken(*args: object) -> None:
        raise MemoryError("no memory left")

    path = tmp_path / "runs.db"
    # In a thread of this process, where the patch is seen.
    async with runtime(journal=Journal(path, writer="thread")) as rt:
        monkeypatch.setattr(writer_module, "commit_batch", broken)
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(one))
    assert isinstance(info.value.journal_error, JournalWriteError)
    assert "MemoryError" in str(info.value.journal_error)


# -- text SQLite cannot store ------------------------------------------------------


class Odd:
    """An interceptor whose name holds a lone surrogate: its changes are audited by it."""

    name = "odd\udcff"

    async def before_stage(self, ctx):
        if ctx.name == "s\ud800":
            await ctx.add_stage(one.named("by interceptor \udc80"), reason="why \ud834")


@stage
async def fails_oddly(ctx):
    msg = "bad byte \udcfe in a file name"
    raise ValueError(msg)


@stage
async def grows_oddly(ctx):
    await ctx.add_stage(one.named("added \ud800"), reason="because \udfff")
    return "\ud800 output"


async def test_lone_surrogates_in_names_and_texts_round_trip(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = (
        Pipeline("nightly \ud800")
        .add(grows_oddly.named("s\ud800"))
        .add(fails_oddly.named("f\udcff"))
    )
    async with runtime(journal=path, interceptors=[Odd()], on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    live = info.value.result
    assert info.value.journal_error is None
    with Journal(path, readonly=True) as reader:
        (row,) = reader.runs()
        stored = reader.result(live.run_id)
    assert row["name"] == "nightly \\ud800"  # the column holds an escaped form
    assert stored.name == live.name == "nightly \ud800"
    assert dict(stored.states) == dict(live.states)
    assert "added \ud800" in stored.states
    assert "by interceptor \udc80" in stored.states
    assert stored.outputs["s\ud800"] == "\ud800 output"
    assert [(r.requester, r.reason, r.added) for r in stored.audit] == [
        (r.requester, r.reason, r.added) for r in live.audit
    ]
    assert {r.requester for r in stored.audit} == {"interceptor:odd\udcff", "s\ud800"}
    assert "bad byte \udcfe" in str(stored.errors["f\udcff"])


TEXTS: dict[str, str] = {}


@stage
async def texty(ctx):
    await ctx.add_stage(one.named(TEXTS["added"]), reason=TEXTS["reason"])
    raise ValueError(TEXTS["message"])


@given(
    name=any_text,
    stage_name=any_text,
    added=any_text,
    reason=any_text,
    message=any_text,
)
def test_any_text_in_names_and_texts_is_read_back_exactly(
    tmp_path_factory, name, stage_name, added, reason, message
):
    assume(stage_name != added)
    TEXTS.update(added=added, reason=reason, message=message)
    path = tmp_path_factory.mktemp("texts") / "runs.db"

    async def main() -> Any:
        async with runtime(journal=path, on_failure="continue") as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline(name).add(texty.named(stage_name)))
        return info.value

    failed = trio.run(main)
    assert failed.journal_error is None
    live = failed.result
    with Journal(path, readonly=True) as reader:
        stored = reader.result(live.run_id)
    assert stored.name == name
    assert dict(stored.states) == dict(live.states)
    assert set(stored.states) == {stage_name, added}
    assert [(r.requester, r.reason) for r in stored.audit] == [(stage_name, reason)]
    assert str(stored.errors[stage_name]) == f"ValueError: {message}"


# -- a journal that is not whole -----------------------------------------------------


async def _cancelled_run(path) -> str:
    GATES["never"] = trio.Event()
    async with runtime(journal=path) as rt:
        run = await rt.start(
            Pipeline("p").add(one).add(gate, after=["one"]), inputs={"gate": "never"}
        )
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel()
    return run.id


@pytest.mark.parametrize(
    "damage",
    [
        "DROP TABLE events",
        "DROP TABLE runs",
        "DROP TABLE meta",
        "ALTER TABLE events DROP COLUMN kind",
        "ALTER TABLE leases DROP COLUMN nonce",
        "ALTER TABLE events DROP COLUMN output",
    ],
)
async def test_resume_refuses_a_journal_that_is_not_whole_and_leaves_it(
    tmp_path, damage
):
    path = tmp_path / "runs.db"
    run_id = await _cancelled_run(path)
    db = sqlite3.connect(path)
    db.execute(damage)
    db.commit()
    db.close()
    before = path.read_bytes()
    ran = []

    with pytest.raises(JournalError) as info:
        async with runtime(journal=path) as rt:
            ran.append(await rt.resume(run_id))
    assert not ran
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


async def test_a_journal_without_the_lease_table_gets_it_and_resumes(tmp_path):
    path = tmp_path / "runs.db"
    run_id = await _cancelled_run(path)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE leases")
    db.commit()
    db.close()
    GATES["never"].set()
    async with runtime(journal=path) as rt:
        result = await rt.resume(run_id)
    assert result.outputs["gate"] == "through"
    assert _rows(path, "SELECT COUNT(*) FROM leases") == [(0,)]


async def test_resume_on_a_missing_path_creates_no_file(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(JournalError, match="no journal at"):
        async with runtime(journal=path) as rt:
            await rt.resume("0123456789abcdef0123456789abcdef")
    assert not path.exists()
    async with runtime(journal=path) as rt:
        recovery_error = None
        try:
            await rt.recover()
        except JournalError as exc:
            recovery_error = exc
    assert recovery_error is not None
    assert not path.exists()


async def test_a_journal_is_created_when_the_first_run_is_written(tmp_path):
    path = tmp_path / "new.db"
    async with runtime(journal=path) as rt:
        assert not path.exists()
        result = await rt.run(Pipeline("p").add(one))
        assert path.exists()
    assert _rows(path, "SELECT status FROM runs") == [("succeeded",)]
    assert result.ok


@pytest.mark.parametrize(
    "name", ["runs?mode=rw.db", "a#b.db", "100%25.db", "sp ace \udcff.db"]
)
async def test_a_journal_path_with_uri_characters_is_that_very_file(tmp_path, name):
    path = tmp_path / name
    async with runtime(journal=path) as rt:
        run = await _started_and_cancelled(rt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    GATES["never"].set()
    async with runtime(journal=path) as rt:
        assert (await rt.resume(run.id)).outputs["gate"] == "through"
    with Journal(path, readonly=True) as reader:
        assert reader.result(run.id).status == "succeeded"
    # No file at another path (a read-only reader may leave WAL side files).
    assert {p.name for p in tmp_path.iterdir()} <= {name, f"{name}-wal", f"{name}-shm"}


async def _started_and_cancelled(rt) -> Any:
    GATES["never"] = trio.Event()
    run = await rt.start(
        Pipeline("p").add(one).add(gate, after=["one"]), inputs={"gate": "never"}
    )
    await trio.testing.wait_all_tasks_blocked()
    await run.cancel()
    return run


@pytest.mark.parametrize("where", ["a directory", "no such directory", "a NUL"])
async def test_a_path_that_cannot_hold_a_journal_is_refused_on_entry(tmp_path, where):
    path = {
        "a directory": tmp_path,
        "no such directory": tmp_path / "nowhere" / "runs.db",
        "a NUL": tmp_path / "runs\x00.db",
    }[where]
    with pytest.raises(JournalError):
        async with runtime(journal=path):
            pass


async def test_two_runtimes_creating_the_same_journal_at_once_set_it_up_once(tmp_path):
    path = tmp_path / "runs.db"
    barrier = threading.Barrier(4)

    def make() -> None:
        barrier.wait()
        with Journal(path) as journal:
            journal.transaction(lambda db: None)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _rows(path, "SELECT key, value FROM meta") == [
        ("format_version", str(FORMAT_VERSION))
    ]
    async with runtime(journal=path) as rt:
        assert (await rt.run(Pipeline("p").add(one))).ok


async def test_one_journal_object_serves_one_runtime_at_a_time(tmp_path):
    from dagvisor.errors import InvalidRequestError

    journal = Journal(tmp_path / "runs.db")
    async with runtime(journal=journal) as rt:
        with pytest.raises(InvalidRequestError, match="its own Journal object"):
            async with runtime(journal=journal):
                pass
        assert (await rt.run(Pipeline("p").add(one))).ok
    async with runtime(journal=journal) as rt:  # free again once that one ended
        assert (await rt.run(Pipeline("p").add(one))).ok
    with pytest.raises(InvalidRequestError, match="not readonly"):
        async with runtime(journal=Journal(tmp_path / "runs.db", readonly=True)):
            pass


async def test_a_bug_in_the_writer_outside_a_commit_fails_the_runs_not_the_runtime(
    tmp_path, monkeypatch
):
    from dagvisor.supervisor._writer import JournalWriter

    async def broken(self: JournalWriter, records: list[Any]) -> None:
        raise KeyError("a bug")

    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        monkeypatch.setattr(JournalWriter, "_commit", broken)
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(one))
        monkeypatch.undo()
        assert (await rt.run(Pipeline("q").add(one))).ok  # the writer goes on
    assert isinstance(info.value.journal_error, JournalWriteError)
    assert "KeyError" in str(info.value.journal_error)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


@stage(name="unprintable")
async def _unprintable(ctx: Any) -> None:
    raise _Unprintable


async def test_a_stage_error_that_cannot_be_printed_is_journaled_as_a_failure(
    tmp_path,
):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("p").add(_unprintable).add(stage(name="fine")(_fine))
    async with runtime(journal=path) as rt:
        with pytest.raises(RunFailedError) as info:
            await rt.run(pipeline)
    run_id = info.value.result.run_id
    with Journal(path, readonly=True) as journal:
        ended = {
            payload["stage"]: payload
            for _, kind, payload in journal.events(run_id)
            if kind == "stage_ended"
        }
        read = journal.result(run_id)
    assert ended["unprintable"]["error"] == (
        "_Unprintable: (the message of this _Unprintable cannot be shown)"
    )
    assert ended["fine"]["state"] == "succeeded"
    assert read.states["unprintable"].value == "failed"


async def _fine(ctx: Any) -> int:
    return 1
