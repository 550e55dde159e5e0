"""``ctx.attempt`` counts the attempts that ran, across retries and resumes.

Each attempt's start is journaled (the first one as the stage's start, each
retry as an attempt of its own), so a resumed run counts on from the
attempts that really ran, whatever the stage's retry budget. A crash is
simulated as in tests/test_resume.py: the journal is copied while the stage
is in the middle of an attempt (what a killed process leaves on disk);
tests/test_crash.py kills real processes.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import JournalError
from dagvisor.supervisor import Journal

SEEN: list[int] = []
FAIL_BELOW: dict[str, int] = {"attempt": 0}
HOLD: dict[str, trio.Event] = {}


async def _body(ctx):
    SEEN.append(ctx.attempt)
    if ctx.attempt < FAIL_BELOW["attempt"]:
        raise ConnectionError(f"attempt {ctx.attempt} fails")
    if "reached" in HOLD:
        HOLD["reached"].set()
        await HOLD["release"].wait()
    return ctx.attempt


flaky = stage(name="flaky", retries=3)(_body)
patient = stage(name="patient", retries=10**6)(_body)


@pytest.fixture(autouse=True)
def _fresh():
    SEEN.clear()
    HOLD.clear()
    FAIL_BELOW["attempt"] = 0


async def _crash_in_attempt(start, live, crashed) -> str:
    """Start a run (or a resume) and copy its journal while an attempt is held."""
    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(journal=live) as rt:
        run = await start(rt)
        await HOLD["reached"].wait()
        await trio.testing.wait_all_tasks_blocked()
        await run.wait_committed()
        copy_as_crashed(live, crashed)  # its owner, this process, seen as gone
        await run.cancel(reason="the process dies here")
    HOLD.clear()
    return run.id


async def test_attempts_count_the_attempts_that_ran_across_two_crashes(tmp_path):
    journals = [tmp_path / f"j{i}.db" for i in range(3)]
    run_id = await _crash_in_attempt(
        lambda rt: rt.start(Pipeline("p").add(flaky)), journals[0], journals[1]
    )
    await _crash_in_attempt(
        lambda rt: rt.start_resumed(run_id), journals[1], journals[2]
    )
    async with runtime(journal=journals[2]) as rt:
        result = await rt.resume(run_id)
    assert SEEN == [0, 1, 2]  # three attempts ran, one in each process
    assert result.outputs == {"flaky": 2}


async def test_retries_before_a_crash_are_counted_after_it(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    FAIL_BELOW["attempt"] = 2  # attempts 0 and 1 fail, 2 is held at the crash
    run_id = await _crash_in_attempt(
        lambda rt: rt.start(Pipeline("p").add(flaky)), live, crashed
    )
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run_id)
    assert SEEN == [0, 1, 2, 3]
    assert result.outputs == {"flaky": 3}
    with Journal(crashed, readonly=True) as journal:
        kinds = [kind for _, kind, _ in journal.events(run_id)]
    assert kinds.count("attempt_started") == 2  # the retries 1 and 2, not the resume


async def test_a_large_retry_budget_does_not_inflate_the_attempt(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    run_id = await _crash_in_attempt(
        lambda rt: rt.start(Pipeline("p").add(patient)), live, crashed
    )
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run_id)
    assert SEEN == [0, 1]
    assert result.outputs == {"patient": 1}


async def test_without_a_journal_retries_send_nothing_extra():
    FAIL_BELOW["attempt"] = 2
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(flaky))
    assert SEEN == [0, 1, 2]
    assert result.outputs == {"flaky": 2}


@pytest.mark.parametrize("attempt", ["one", float("inf"), 1.5, None, True])
async def test_a_hand_edited_attempt_record_is_refused_as_a_bad_journal(
    tmp_path, attempt
):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    FAIL_BELOW["attempt"] = 1
    run_id = await _crash_in_attempt(
        lambda rt: rt.start(Pipeline("p").add(flaky)), live, crashed
    )
    with sqlite3.connect(crashed) as db:
        ((seq, payload),) = db.execute(
            "SELECT seq, payload FROM events WHERE kind = 'attempt_started'"
        ).fetchall()
        edited = {**json.loads(payload), "attempt": attempt}
        db.execute(
            "UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(edited), seq)
        )
    with pytest.raises(JournalError, match="attempt"):
        async with runtime(journal=crashed) as rt:
            await rt.resume(run_id)
    assert SEEN == [0, 1]  # nothing ran again
