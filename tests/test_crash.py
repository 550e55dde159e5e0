"""Crash tests: kill a journaled run with SIGKILL, resume it in a new process.

Each kill point is one of: a moment in time, the N-th SQL statement of the
journal writer (inside a batch commit), the supervisor applying change N,
or the inside of a stage after its side effect may have happened. After the
kill, and after the resume, the test checks:

* the journal is never corrupt (``PRAGMA integrity_check``);
* a stage whose success was on disk before the kill keeps its output and its
  body does not run again;
* the final outputs and graph equal those of an uninterrupted run;
* the audit trail has no gap, keeps what was on disk as its prefix, and made
  the same changes as the uninterrupted run (a re-run stage asking again is
  a no-op, not a second stage);
* a stage run again keeps its idempotency key, with a higher attempt.

A second test kills some resumed runs again and resumes them once more.

``make test`` runs a few kill points of each kind; set
``DAGVISOR_CRASH_POINTS=200`` for the slow mode (documented in the README).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dagvisor.actors import JsonCodec
from dagvisor.supervisor import Journal

CHILD = Path(__file__).with_name("crash_child.py")
POINTS = int(os.environ.get("DAGVISOR_CRASH_POINTS", "12"))
SEED = int(os.environ.get("DAGVISOR_CRASH_SEED", "20261122"))


def _child(*args: object) -> tuple[int, list[dict]]:
    return _child_with({}, *args)


def _child_with(env: dict[str, str], *args: object) -> tuple[int, list[dict]]:
    done = subprocess.run(
        [sys.executable, str(CHILD), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    if done.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"child failed ({done.returncode}):\n{done.stderr}")
    _settled(Path(f"{args[2]}.writers"))
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def _settled(pids: Path) -> None:
    """Wait until the journal writer processes a child named in ``pids`` have
    ended: killed, a child leaves its writer to commit what it was handed,
    which the journal then holds too. (A bound on a hang, not a measure.)"""
    if not pids.exists():
        return
    deadline = time.monotonic() + 60
    for pid in json.loads(pids.read_text()):
        with contextlib.suppress(psutil.NoSuchProcess):
            writer = psutil.Process(pid)
            while writer.is_running() and writer.status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < deadline, "a journal writer outlived its run"
                time.sleep(0.01)
    pids.unlink()


def _integrity(path: Path) -> str:
    if not path.exists():
        return "ok"  # killed before the first run was written: no file yet
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def _durable_runs(path: Path) -> set[str]:
    """The runs whose first record reached the disk (none if the file was never set up)."""
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "runs" not in tables:
            return set()
        return {row[0] for row in db.execute("SELECT run_id FROM runs")}
    finally:
        db.close()


def _effects(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    rows = (line.split() for line in log.read_text().splitlines())
    return [(name, int(attempt), key) for name, attempt, key in rows]


def _changes(audit: list[list]) -> list[tuple]:
    """The changes that did something, as comparable facts (order aside)."""
    return sorted(
        (kind, requester, tuple(added), tuple(map(tuple, edges)))
        for _, kind, requester, accepted, added, edges in audit
        if accepted and (added or edges)
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    where = tmp_path_factory.mktemp("reference")
    code, lines = _child("run", where / "runs.db", where / "log", "none")
    assert code == 0
    return lines[-1]


def _kill_points(reference: dict) -> list[str]:
    rng = random.Random(SEED)
    stages = sorted(reference["states"])
    changes = len(reference["audit"])
    kinds = ["time", "sql", "change", "stage"]
    points = []
    for i in range(POINTS):
        kind = kinds[i % len(kinds)]
        if kind == "time":
            points.append(f"time:{rng.uniform(0.0, reference['duration'] * 1.2):.4f}")
        elif kind == "sql":
            points.append(f"sql:{rng.randrange(3, 40)}")
        elif kind == "change":
            points.append(f"change:{rng.randrange(changes)}")
        else:
            points.append(f"stage:{rng.choice(stages)}")
    return points


def test_kill_points_cover_every_kind(reference):
    kinds = {point.partition(":")[0] for point in _kill_points(reference)}
    assert kinds == {"time", "sql", "change", "stage"}


@pytest.mark.parametrize("index", range(POINTS))
def test_a_run_killed_at_a_random_point_resumes_to_the_same_result(
    tmp_path, reference, index
):
    kill = _kill_points(reference)[index]
    journal, log = tmp_path / "runs.db", tmp_path / "effects.log"
    code, lines = _child("run", journal, log, kill)
    run_id = lines[0]["run_id"]
    assert _integrity(journal) == "ok"
    if run_id not in _durable_runs(journal):
        # Killed before the run's first record was committed: it never
        # became durable, and there is nothing to resume.
        assert code == -signal.SIGKILL
        return
    with Journal(journal, readonly=True) as reader:
        before = reader.load(run_id)
    codec = JsonCodec()
    kept = {
        payload["stage"]: codec.decode(payload["output"])
        for _, kind, payload in before.events
        if kind == "stage_ended" and payload["state"] == "succeeded"
    }
    changes_before = [payload for _, kind, payload in before.events if kind == "change"]
    effects_before = _effects(log)

    code_after, lines_after = _child("resume", journal, log, run_id)
    assert code_after == 0
    result = lines_after[-1]
    assert _integrity(journal) == "ok"

    # Same result as a run that was never interrupted.
    assert result["status"] == "succeeded"
    assert result["outputs"] == reference["outputs"]
    assert result["dependencies"] == reference["dependencies"]
    # What had succeeded kept its output and did not run again.
    effects_after = _effects(log)[len(effects_before) :]
    ran_again = {name for name, _, _ in effects_after}
    assert not ran_again & set(kept), (kill, ran_again & set(kept))
    for name, value in kept.items():
        assert result["outputs"][name] == value
    # A stage run again keeps its idempotency key (what dedupes its side
    # effects), and its attempt counts the starts the journal had recorded
    # (a start still in the batch in flight at the kill is not known).
    started_before: dict[str, int] = {}
    for _, kind, payload in before.events:
        if kind == "stage_started":
            started_before[payload["stage"]] = (
                started_before.get(payload["stage"], 0) + 1
            )
    for name, attempt, key in effects_after:
        assert key == f"{run_id}:{name}"
        assert attempt == started_before.get(name, 0)
    # The audit trail: no gap, what was on disk first, the same changes.
    audit = result["audit"]
    assert [row[0] for row in audit] == list(range(len(audit)))
    for row, payload in zip(audit, changes_before, strict=False):
        assert row[:5] == [
            payload["seq"],
            payload["kind"],
            payload["requester"],
            payload["accepted"],
            payload["added"],
        ]
    assert _changes(audit) == _changes(reference["audit"])


@pytest.mark.parametrize("index", range(max(POINTS // 3, 2)))
def test_a_resumed_run_killed_again_resumes_again(tmp_path, reference, index):
    points = _kill_points(reference)
    first, second = points[index], points[-1 - index]
    journal, log = tmp_path / "runs.db", tmp_path / "effects.log"
    _code, lines = _child("run", journal, log, first)
    run_id = lines[0]["run_id"]
    if run_id not in _durable_runs(journal):
        return  # killed before the run was durable: nothing to resume
    _child("resume", journal, log, run_id, second)  # killed again (or not)
    assert _integrity(journal) == "ok"
    code, lines = _child("resume", journal, log, run_id)
    assert code == 0
    result = lines[-1]
    assert result["status"] == "succeeded"
    assert result["outputs"] == reference["outputs"]
    assert result["dependencies"] == reference["dependencies"]
    assert _changes(result["audit"]) == _changes(reference["audit"])
    audit = result["audit"]
    assert [row[0] for row in audit] == list(range(len(audit)))
    with Journal(journal, readonly=True) as reader:
        events = reader.load(run_id).events
    assert [seq for seq, _, _ in events] == list(range(len(events)))
    assert sum(1 for _, kind, _ in events if kind == "resumed") in (1, 2)


# -- one owner per run, between processes ---------------------------------------------


def _crashed(tmp_path: Path, kill: str) -> tuple[Path, Path, str, dict[str, object]]:
    """A run killed at ``kill``: (journal, log, run id, the stages it had kept)."""
    journal, log = tmp_path / "runs.db", tmp_path / "effects.log"
    code, lines = _child("run", journal, log, kill)
    assert code == -signal.SIGKILL
    run_id = lines[0]["run_id"]
    assert run_id in _durable_runs(journal)
    with Journal(journal, readonly=True) as reader:
        events = reader.load(run_id).events
    kept = {
        payload["stage"]: payload["output"]
        for _, kind, payload in events
        if kind == "stage_ended" and payload["state"] == "succeeded"
    }
    return journal, log, run_id, kept


def _spawn(*args: object) -> subprocess.Popen[str]:
    """A child whose stage bodies wait for a line on its stdin (the gate)."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CRASH_GATE": "1"},
    )


def test_processes_racing_to_resume_and_recover_a_crashed_run_run_it_once(tmp_path):
    journal, log, run_id, kept = _crashed(tmp_path, "stage:square[4]")
    effects_before = len(_effects(log))
    racers = [
        _spawn("resume", journal, log, run_id),
        _spawn("recover", journal, log),
        _spawn("resume", journal, log, run_id),
        _spawn("recover", journal, log),
    ]
    try:
        # Each says what its takeover did before any stage body may start:
        # the winner's stages wait at the gate until all four have spoken.
        first = []
        for racer in racers:
            assert racer.stdout is not None
            line = racer.stdout.readline()
            assert line, racer.stderr.read() if racer.stderr else ""
            first.append(json.loads(line))
        for racer in racers:  # open the gates; the losers have gone already
            with contextlib.suppress(BrokenPipeError, OSError):
                racer.stdin.write("go\n")  # type: ignore[union-attr]
                racer.stdin.flush()  # type: ignore[union-attr]
        outs = [racer.communicate(timeout=120) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    for racer, (_, err) in zip(racers, outs, strict=True):
        assert racer.returncode == 0, err
    winners = [
        index
        for index, line in enumerate(first)
        if line.get("took") == run_id or line.get("recovered") == [run_id]
    ]
    assert len(winners) == 1, first
    (winner,) = winners
    for index, line in enumerate(first):
        if index == winner:
            continue
        if racers[index].args[2] == "resume":
            # Asked for this run by id: told who owns it, and nothing ran.
            assert line["refused"] == "RunOwnedError", line
            assert f"process {racers[winner].pid} " in line["message"]
        else:
            assert line == {"recovered": []}
    result = json.loads(outs[winner][0].splitlines()[-1])
    assert result["status"] == "succeeded"
    # Each stage that had not succeeded before the crash ran once more, in
    # one process; each that had, never again.
    after = [name for name, _, _ in _effects(log)[effects_before:]]
    assert sorted(after) == sorted(set(after))
    assert set(after) == set(result["outputs"]) - set(kept)
    assert _integrity(journal) == "ok"


@pytest.mark.parametrize("renewal", [1, 2, 4])
def test_a_run_killed_while_renewing_its_lease_resumes_once(
    tmp_path, reference, renewal
):
    journal, log = tmp_path / "runs.db", tmp_path / "effects.log"
    # A short lease, renewed every 5 ms, so that the run renews it many times.
    code, lines = _child_with(
        {"CRASH_LEASE": "0.015"}, "run", journal, log, f"renew:{renewal}"
    )
    run_id = lines[0]["run_id"]
    assert code == -signal.SIGKILL
    assert _integrity(journal) == "ok"
    assert run_id in _durable_runs(journal)
    with Journal(journal, readonly=True) as reader:
        before = reader.load(run_id)
    kept = {
        payload["stage"]
        for _, kind, payload in before.events
        if kind == "stage_ended" and payload["state"] == "succeeded"
    }
    effects_before = len(_effects(log))
    code, lines = _child("resume", journal, log, run_id)
    assert code == 0
    result = lines[-1]
    assert result["status"] == "succeeded"
    assert result["outputs"] == reference["outputs"]
    after = [name for name, _, _ in _effects(log)[effects_before:]]
    assert sorted(after) == sorted(set(after))
    assert not set(after) & kept
    assert _integrity(journal) == "ok"


@pytest.mark.parametrize("moment", ["insert", "commit"])
def test_a_resume_killed_during_its_takeover_leaves_a_run_that_resumes_once(
    tmp_path, reference, moment
):
    journal, log, run_id, kept = _crashed(tmp_path, "stage:total")
    code, lines = _child("resume", journal, log, run_id, f"takeover:{moment}")
    assert code == -signal.SIGKILL
    assert lines == []  # it died before it could say it took the run
    assert _integrity(journal) == "ok"
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        (resumed,) = db.execute(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = 'resumed'",
            (run_id,),
        ).fetchone()
    finally:
        db.close()
    assert resumed == 0  # nothing of the killed resume but, at most, its lease
    effects_before = len(_effects(log))
    code, lines = _child("resume", journal, log, run_id)
    assert code == 0
    assert lines[0] == {"took": run_id}
    result = lines[-1]
    assert result["outputs"] == reference["outputs"]
    # The killed resume ran nothing; this one ran each stage not kept, once.
    after = [name for name, _, _ in _effects(log)[effects_before:]]
    assert sorted(after) == sorted(set(reference["outputs"]) - set(kept))
    assert "total" in after


def test_a_run_owned_on_another_host_waits_for_its_lease_to_expire(tmp_path, reference):
    lease = 4.0
    journal, log = tmp_path / "runs.db", tmp_path / "effects.log"
    code, lines = _child_with(
        {"CRASH_LEASE": str(lease)}, "run", journal, log, "stage:total"
    )
    assert code == -signal.SIGKILL
    run_id = lines[0]["run_id"]
    # The owner ran on another host: its death cannot be seen from here.
    db = sqlite3.connect(journal)
    db.execute("UPDATE leases SET host = 'elsewhere'")
    db.commit()
    (expires,) = db.execute("SELECT expires FROM leases").fetchone()
    db.close()
    code, lines = _child("resume", journal, log, run_id)
    assert len(lines) == 1
    assert lines[0]["refused"] == "RunOwnedError"
    assert "host 'elsewhere'" in lines[0]["message"]
    # Real time, as the lease is wall-clock between processes: once it has
    # run out, the run is taken over.
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    code, lines = _child("resume", journal, log, run_id)
    assert code == 0
    assert lines[-1]["outputs"] == reference["outputs"]
