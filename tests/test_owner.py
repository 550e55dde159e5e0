"""One owner per run: leases, takeovers and `recover`, within one process.

Two runtimes of one process are two owners (each has its own nonce), so
these tests race them against each other; tests/test_crash.py races real
processes and kills them mid-lease.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import time
from typing import Any

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed

from dagvisor import Journal, Pipeline, StageRegistry, runtime, stage
from dagvisor.errors import (
    LeaseLostError,
    NotRestorableError,
    RunFailed,
    RunOwnedError,
)

GATES: dict[str, trio.Event] = {}
EFFECTS: list[str] = []


@pytest.fixture(autouse=True)
def _fresh():
    GATES.clear()
    EFFECTS.clear()
    yield
    GATES.clear()


@stage
async def first(ctx):
    EFFECTS.append(ctx.name)
    return 1


@stage
async def held(ctx):
    """Runs until the test opens the gate the run's inputs name."""
    EFFECTS.append(ctx.name)
    await GATES[ctx.run_inputs["gate"]].wait()
    return 2


@stage
async def last(ctx):
    EFFECTS.append(ctx.name)
    return sum(ctx.inputs.values())


PIPELINE = Pipeline("owned").add(first).add(held, after=["first"])
PIPELINE = PIPELINE.add(last, after=["held"])


def _rows(path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _edit(path, sql: str, args: tuple[Any, ...] = ()) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def _dump(path) -> str:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


async def _started(rt, gate: str = "g") -> Any:
    """Start PIPELINE in ``rt`` and wait until it holds and its records are committed."""
    GATES.setdefault(gate, trio.Event())
    run = await rt.start(PIPELINE, inputs={"gate": gate})
    await trio.testing.wait_all_tasks_blocked()
    await rt._journal.flush()
    return run


async def test_a_run_with_a_live_owner_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as owner, runtime(journal=path) as other:
        run = await _started(owner)
        before, effects = _dump(path), list(EFFECTS)
        for attempt in (other.resume, other.start_resumed):
            with pytest.raises(RunOwnedError) as info:
                await attempt(run.id)
            error = info.value
            assert (error.run_id, error.host, error.pid) == (
                run.id,
                socket.gethostname(),
                os.getpid(),
            )
            assert f"process {os.getpid()}" in str(error)
            assert "lease runs until" in str(error)
        recovery = await other.recover()
        assert recovery.runs == ()
        assert dict(recovery.skipped) == {}
        assert effects == EFFECTS  # nothing ran in the other runtime
        assert _dump(path) == before  # and nothing was written
        GATES["g"].set()
        assert (await run.wait()).outputs["last"] == 2


async def test_a_run_that_ended_has_no_owner_and_can_be_resumed(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await _started(rt)
        await run.cancel()
    assert _rows(path, "SELECT COUNT(*) FROM leases") == [(0,)]
    GATES["g"].set()
    async with runtime(journal=path) as rt:
        result = await rt.resume(run.id)
    assert result.outputs["last"] == 2
    assert EFFECTS == ["first", "held", "held", "last"]


@pytest.mark.parametrize(
    ("owner", "taken"),
    [
        ("another host, expired", True),
        ("another host, live", False),
        ("this host, no such process", True),
        ("this host, pid reused by a later process", True),
        ("this host, this very process", False),
    ],
)
async def test_a_run_can_be_taken_over_only_when_its_owner_is_gone(
    tmp_path, owner, taken
):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        run = await _started(rt)
        copy_as_crashed(live, crashed)
        await run.cancel()
    # The crashed copy's run is still 'running'; make its owner what the case says.
    if owner.startswith("another host"):
        expires = time.time() + (-1 if "expired" in owner else 3600)
        _edit(crashed, "UPDATE leases SET host = 'elsewhere', expires = ?", (expires,))
    elif owner == "this host, no such process":
        child = await trio.run_process(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_stdout=True,
        )
        _edit(crashed, "UPDATE leases SET pid = ?", (int(child.stdout),))
    elif owner == "this host, this very process":
        _edit(crashed, "UPDATE leases SET started = ?", (_own_start(),))
    GATES["g"].set()
    before = _dump(crashed)
    async with runtime(journal=crashed) as rt:
        if taken:
            result = await rt.resume(run.id)
            assert result.outputs["last"] == 2
        else:
            with pytest.raises(RunOwnedError):
                await rt.resume(run.id)
            assert _dump(crashed) == before


def _own_start() -> float:
    import psutil

    return psutil.Process().create_time()


async def test_a_run_whose_lease_was_taken_stops_and_writes_nothing_more(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await _started(rt)
        # Another process took the run over (after the lease expired, say).
        _edit(
            path,
            "UPDATE leases SET nonce = 'other', host = 'elsewhere', pid = 4242 "
            "WHERE run_id = ?",
            (run.id,),
        )
        before = _rows(path, "SELECT seq, kind FROM events WHERE run_id = ?", (run.id,))
        GATES["g"].set()  # its next records meet the fence
        with pytest.raises(RunFailed) as info:
            await run.wait()
    error = info.value.journal_error
    assert isinstance(error, LeaseLostError)
    assert "process 4242 on host 'elsewhere' took it over" in str(error)
    assert info.value.result.status == "failed"
    after = _rows(path, "SELECT seq, kind FROM events WHERE run_id = ?", (run.id,))
    assert after == before
    assert _rows(path, "SELECT status FROM runs WHERE run_id = ?", (run.id,)) == [
        ("running",)
    ]
    assert _rows(path, "SELECT nonce FROM leases") == [("other",)]


async def test_the_lease_is_renewed_while_a_run_waits(tmp_path, autojump_clock):
    path = tmp_path / "runs.db"
    async with runtime(journal=Journal(path, lease=3.0)) as rt:
        run = await _started(rt)
        (first_expiry,) = _rows(path, "SELECT expires FROM leases")
        await trio.sleep(10)  # nothing to write meanwhile: renewals keep it
        await rt._journal.flush()
        (later_expiry,) = _rows(path, "SELECT expires FROM leases")
        assert later_expiry > first_expiry
        GATES["g"].set()
        await run.wait()


async def test_recover_resumes_the_runs_whose_owner_is_gone_once(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        one = await _started(rt, "a")
        two = await _started(rt, "b")
        done = await rt.run(Pipeline("done").add(first))
        await rt._journal.flush()
        copy_as_crashed(live, crashed)
        await one.cancel()
        await two.cancel()
    EFFECTS.clear()
    GATES["b"].set()
    async with runtime(journal=crashed) as rt, runtime(journal=crashed) as late:
        recovery = await rt.recover()
        assert [run.id for run in recovery.runs] == [one.id, two.id]
        assert (await recovery.runs[1].wait()).outputs["last"] == 2
        # One still goes (gate "a" is shut): a second recover finds nothing,
        # in this runtime or in another.
        assert (await rt.recover()).runs == ()
        assert (await late.recover()).runs == ()
        GATES["a"].set()
        assert (await recovery.runs[0].wait()).outputs["last"] == 2
    assert sorted(EFFECTS) == ["held", "held", "last", "last"]
    async with runtime(journal=crashed) as rt:
        assert (await rt.recover()).runs == ()
    statuses = dict(_rows(crashed, "SELECT run_id, status FROM runs"))
    assert statuses == {
        one.id: "succeeded",
        two.id: "succeeded",
        done.run_id: "succeeded",
    }


async def test_recover_leaves_runs_it_cannot_restore_untouched(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        run = await _started(rt)
        copy_as_crashed(live, crashed)
        await run.cancel()
    before = _dump(crashed)
    async with runtime(journal=crashed, registry=StageRegistry()) as rt:
        recovery = await rt.recover()
    assert recovery.runs == ()
    assert isinstance(recovery.skipped[run.id], NotRestorableError)
    assert _dump(crashed) == before


async def test_two_runtimes_resuming_one_run_at_once_run_it_once(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        run = await _started(rt)
        copy_as_crashed(live, crashed)
        await run.cancel()
    EFFECTS.clear()
    outcomes: list[object] = []

    async def resume(rt: Any) -> None:
        try:
            outcomes.append(await rt.start_resumed(run.id))
        except RunOwnedError as exc:
            outcomes.append(exc)

    async with runtime(journal=crashed) as a, runtime(journal=crashed) as b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume, a)
            nursery.start_soon(resume, b)
        won = [o for o in outcomes if not isinstance(o, RunOwnedError)]
        lost = [o for o in outcomes if isinstance(o, RunOwnedError)]
        assert len(won) == len(lost) == 1
        GATES["g"].set()
        assert (await won[0].wait()).outputs["last"] == 2
    assert EFFECTS == ["held", "last"]


async def test_resume_of_a_run_id_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        await rt.run(Pipeline("p").add(first))
        with pytest.raises(TypeError):
            await rt.resume(b"abc")  # type: ignore[arg-type]
        from dagvisor.errors import UnknownRunError

        with pytest.raises(UnknownRunError):
            await rt.resume("\ud800abc")


async def test_one_runtime_resuming_or_recovering_a_run_twice_at_once_runs_it_once(
    tmp_path,
):
    from dagvisor.errors import InvalidRequestError

    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        run = await _started(rt)
        copy_as_crashed(live, crashed)
        await run.cancel()
    EFFECTS.clear()
    outcomes: list[object] = []

    async def resume(rt: Any) -> None:
        try:
            outcomes.append(await rt.start_resumed(run.id))
        except InvalidRequestError as exc:
            outcomes.append(exc)

    async def recover(rt: Any) -> None:
        outcomes.append(await rt.recover())

    async with runtime(journal=crashed) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume, rt)
            nursery.start_soon(resume, rt)
            nursery.start_soon(recover, rt)
            nursery.start_soon(recover, rt)
        handles = [o for o in outcomes if type(o).__name__ == "Run"]
        handles += [r for o in outcomes if hasattr(o, "runs") for r in o.runs]
        assert len(handles) == 1, outcomes
        GATES["g"].set()
        assert (await handles[0].wait()).outputs["last"] == 2
    assert EFFECTS == ["held", "last"]


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE leases SET pid = 'abc'",
        "UPDATE leases SET expires = 'soon'",
        "UPDATE leases SET started = x'00ff'",
    ],
)
async def test_a_hand_edited_lease_is_a_journal_error_and_changes_nothing(
    tmp_path, edit
):
    from dagvisor.errors import JournalError

    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        run = await _started(rt)
        copy_as_crashed(live, crashed)
        await run.cancel()
    _edit(crashed, edit)
    before = _dump(crashed)
    async with runtime(journal=crashed) as rt:
        with pytest.raises(JournalError, match="owner of run"):
            await rt.resume(run.id)
        recovery = await rt.recover()  # the others would be recovered
        assert recovery.runs == ()
        assert "owner of run" in str(recovery.skipped[run.id])
        assert isinstance(recovery.skipped[run.id], JournalError)
    assert _dump(crashed) == before


async def test_a_resume_cancelled_during_its_takeover_gives_the_lease_up(
    tmp_path, monkeypatch
):
    from dagvisor.supervisor._writer import JournalWriter

    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    async with runtime(journal=live) as rt:
        run = await _started(rt)
        copy_as_crashed(live, crashed)
        await run.cancel()
    EFFECTS.clear()
    take_over = JournalWriter.take_over

    async def cancelled_meanwhile(self: JournalWriter, run_id: str) -> Any:
        scope.cancel()  # the caller goes away while the writer takes it over
        return await take_over(self, run_id)

    async with runtime(journal=crashed) as rt:
        monkeypatch.setattr(JournalWriter, "take_over", cancelled_meanwhile)
        with trio.CancelScope() as scope:
            await rt.resume(run.id)
        monkeypatch.setattr(JournalWriter, "take_over", take_over)
        await rt._journal.flush()
        assert scope.cancelled_caught
        assert _rows(crashed, "SELECT COUNT(*) FROM leases") == [(0,)]
    assert EFFECTS == []  # nothing ran
    GATES["g"].set()
    async with runtime(journal=crashed) as rt:  # another owner may take it at once
        assert (await rt.resume(run.id)).outputs["last"] == 2
