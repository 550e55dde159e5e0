"""A run's history read back from its journal: attempts, interruptions, resumes, run time.

Times that a test needs far apart are made so by editing the journal (every
time after the resume moved 1,000 s later, as if the run had stood still
that long): nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import sqlite3

import pytest
import trio

from dagvisor import (
    Attempt,
    AuditLog,
    Interruption,
    Journal,
    Pipeline,
    runtime,
    stage,
)
from dagvisor.errors import RunFailedError

_GATE: dict[str, trio.Event] = {}
_FLAKY: dict[str, int] = {}
STOP = 1_000.0


@stage
async def source(ctx):
    return 2


@stage
async def held(ctx):
    gate = _GATE.get("held")
    if gate is not None:  # the first time: say it runs, then wait to be cancelled
        gate.set()
        await trio.sleep_forever()
    return ctx.inputs["source"] * 10


@stage(retries=2)
async def flaky(ctx):
    _FLAKY["calls"] = _FLAKY.get("calls", 0) + 1
    if ctx.attempt < 2:
        raise ValueError(f"sensor offline {ctx.attempt}")
    return ctx.attempt


@stage
async def grows(ctx):
    await ctx.add_stage(source, reason="one more")


def _shift_after_resume(path, run_id: str, by: float) -> None:
    """Move every time from the run's resume on ``by`` seconds later."""
    db = sqlite3.connect(path)
    with db:
        ((resumed,),) = db.execute(
            "SELECT seq FROM events WHERE run_id = ? AND kind = 'resumed'", (run_id,)
        ).fetchall()
        rows = db.execute(
            "SELECT seq, payload FROM events WHERE run_id = ? AND seq >= ?",
            (run_id, resumed),
        ).fetchall()
        for seq, payload in rows:
            if '"time":' in payload:
                db.execute(
                    "UPDATE events SET payload = json_set(payload, '$.time', "
                    "json_extract(payload, '$.time') + ?) WHERE run_id = ? AND seq = ?",
                    (by, run_id, seq),
                )
            if '"wall_time":' in payload:
                db.execute(
                    "UPDATE events SET payload = json_set(payload, '$.record.wall_time', "
                    "json_extract(payload, '$.record.wall_time') + ?) "
                    "WHERE run_id = ? AND seq = ?",
                    (by, run_id, seq),
                )
        db.execute("UPDATE runs SET ended = ended + ? WHERE run_id = ?", (by, run_id))
    db.close()


async def _cancelled_then_resumed(path) -> str:
    """A run cancelled while ``held`` runs, then resumed to its end; its id."""
    pipeline = Pipeline("held").add(source).add(held, after=["source"])
    _GATE["held"] = trio.Event()
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline)
        await _GATE["held"].wait()
        await run.cancel(reason="the operator stopped it")
        with pytest.raises(RunFailedError):
            await run.wait()
    del _GATE["held"]
    async with runtime(journal=path) as rt:
        result = await rt.resume(run.id)
    assert result.outputs["held"] == 20
    return run.id


def test_a_resumed_run_says_when_and_why_it_stopped_and_leaves_that_time_out(
    tmp_path,
):
    path = tmp_path / "runs.db"
    run_id = trio.run(_cancelled_then_resumed, path)
    _shift_after_resume(path, run_id, STOP)
    with Journal(path, readonly=True) as journal:
        result = journal.result(run_id)
    (stopped,) = result.interruptions
    assert isinstance(stopped, Interruption)
    assert stopped.by == "cancel"
    assert stopped.detail == "the operator stopped it"
    assert stopped.resumed_at is not None
    assert stopped.stopped is not None
    assert stopped.stopped >= STOP
    assert result.resumed_at == (stopped.resumed_at,)
    # The run stood still STOP seconds: its duration leaves them out ...
    assert result.stats.stopped >= STOP
    assert result.stats.duration < STOP
    # ... and so does each stage's own time (its last attempt, after the resume).
    assert all(
        timing.duration is not None and timing.duration < STOP
        for timing in result.timings.values()
    )
    attempts = result.lineage("held").attempts
    assert [a.outcome for a in attempts] == ["cancelled", "succeeded"]
    assert [a.number for a in attempts] == [0, 1]
    assert "ran 2 times" in str(result.lineage("held"))
    page = result.to_html()
    section = page.split('<section id="history">', 1)[1].split("</section>", 1)[0]
    assert "the operator stopped it" in section
    assert "not resumed" not in section


def test_a_crash_found_at_resume_is_an_interruption(tmp_path):
    path = tmp_path / "runs.db"
    run_id = trio.run(_cancelled_then_resumed, path)
    # Make the first stretch look like a crash: no end was ever recorded.
    db = sqlite3.connect(path)
    with db:
        ((first_end,),) = db.execute(
            "SELECT MIN(seq) FROM events WHERE run_id = ? AND kind = 'ended'",
            (run_id,),
        ).fetchall()
        db.execute(
            "UPDATE events SET kind = 'memory', payload = '{\"samples\":[]}' "
            "WHERE run_id = ? AND seq = ?",
            (run_id, first_end),
        )
    db.close()
    with Journal(path, readonly=True) as journal:
        (found,) = journal.result(run_id).interruptions
    assert found.by == "crash"
    assert found.resumed_at is not None


def test_a_retried_stage_shows_each_attempt_with_its_error(tmp_path):
    path = tmp_path / "runs.db"

    async def main():
        async with runtime(journal=path) as rt:
            return await rt.run(Pipeline("flaky").add(flaky))

    _FLAKY.clear()
    live = trio.run(main)
    assert _FLAKY["calls"] == 3
    with Journal(path, readonly=True) as journal:
        result = journal.result(live.run_id)
    attempts = result.lineage("flaky").attempts
    assert all(isinstance(a, Attempt) for a in attempts)
    assert [(a.number, a.outcome, a.error) for a in attempts] == [
        (0, "retried", "ValueError: sensor offline 0"),
        (1, "retried", "ValueError: sensor offline 1"),
        (2, "succeeded", None),
    ]
    assert all(a.ended_at is not None and a.ended_at >= a.started_at for a in attempts)
    text = str(result.lineage("flaky"))
    assert "ran 3 times" in text
    assert "sensor offline 1" in text
    assert result.interruptions == ()
    assert "Never interrupted." in result.to_html()


def test_result_audit_is_the_same_log_as_run_audit(tmp_path):
    path = tmp_path / "runs.db"

    async def main():
        async with runtime(journal=path) as rt:
            run = await rt.start(Pipeline("grows").add(grows))
            result = await run.wait()
            return run.audit(), result

    trail, result = trio.run(main)
    assert type(result.audit) is type(trail) is AuditLog
    assert result.audit == trail
    assert result.audit == tuple(trail.snapshot())
    assert [r.added for r in result.audit.for_stage("source")] == [("source",)]
    assert result.audit.between(0, 2**40) == list(trail.snapshot())
    with Journal(path, readonly=True) as journal:
        back = journal.result(result.run_id)
    assert type(back.audit) is AuditLog
    assert back.audit.snapshot() == result.audit.snapshot()
    assert back.audit.for_stage("source") == result.audit.for_stage("source")


@stage
async def broken(ctx):
    raise ValueError("broken")


def test_a_run_stopped_by_a_failure_says_so_and_one_that_ran_to_its_end_does_not(
    tmp_path,
):
    path = tmp_path / "runs.db"

    async def main(policy):
        async with runtime(journal=path, on_failure=policy) as rt:
            run = await rt.start(Pipeline("broken").add(broken).add(source))
            with pytest.raises(RunFailedError):
                await run.wait()
            return run.id

    stopped = trio.run(main, "cancel")
    finished = trio.run(main, "continue")
    with Journal(path, readonly=True) as journal:
        (found,) = journal.result(stopped).interruptions
        assert journal.result(finished).interruptions == ()
    assert found.by == "failure"
    assert found.resumed_at is None
