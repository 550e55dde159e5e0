"""``dagvisor run`` stopped by SIGTERM (what a service manager or ``kill`` sends).

Real subprocesses and real signals, ordered by readiness: the signal is sent
once the child said its hanging stage runs and its journal holds what the
test checks afterwards. Never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TARGET = """
import os
import trio
from dagvisor import Pipeline, stage

@stage
async def fetch(ctx):
    return [1, 2, 3]

@stage
async def square(ctx):
    if ctx.item == 2 and os.environ.get("HANG"):
        print("square 2 started", flush=True)
        await trio.sleep_forever()
    return ctx.item ** 2

@stage
async def fan(ctx):
    names = await ctx.expand(square, ctx.inputs["fetch"], key=str, reason="one per item")
    await ctx.add_stage(total, after=names, reason="sum the squares")

@stage
async def total(ctx):
    return sum(ctx.inputs.values())

pipeline = Pipeline("squares").add(fetch).add(fan, after=["fetch"])
"""


def dagvisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _wait_until_committed(journal: Path, *, ended: int) -> None:
    """Wait until the journal holds ``ended`` stage ends (the run is then idle,
    waiting on its hanging stage, with nothing in flight to the journal)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(f"{journal.as_uri()}?mode=ro", uri=True)
            try:
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM events WHERE kind = 'stage_ended'"
                ).fetchone()
            finally:
                db.close()
            if count >= ended:
                return
        time.sleep(0.01)  # polling a condition, not ordering by time
    raise AssertionError(f"{journal} never held {ended} stage ends")


def _start(target: Path, journal: Path | None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "dagvisor", "run", f"{target}:pipeline"]
    if journal is not None:
        command += ["--journal", str(journal)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HANG": "1"},
    )


@pytest.mark.parametrize("name", ["runs.db", "my runs's.db"])
def test_sigterm_cancels_cleanly_says_why_and_prints_the_resume_command(tmp_path, name):
    target = tmp_path / "squares.py"
    target.write_text(TARGET)
    journal = tmp_path / name
    with _start(target, journal) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "square 2 started"
        _wait_until_committed(journal, ended=4)
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "Traceback" not in err
    assert "cancelled by SIGTERM" in err
    resume = err.rsplit("resume it with: ", 1)[1].strip()
    argv = shlex.split(resume)
    assert argv[:2] == ["dagvisor", "resume"]
    assert argv[argv.index("--journal") + 1] == str(journal)
    run_id = argv[2]
    # The journal says why the run stopped: the signal.
    audit = dagvisor("audit", run_id, "--journal", str(journal))
    assert audit.returncode == 0, audit.stderr
    assert "SIGTERM" in audit.stdout
    # The printed command, run as printed (a shell's words), finishes the run.
    done = dagvisor(*argv[1:])
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} succeeded" in done.stdout
    assert "  total = 14" in done.stdout
    # Read back, the run says when and why it stopped, and that it went on.
    shown = dagvisor("show", run_id, "--journal", str(journal))
    assert "interruptions:" in shown.stdout
    assert "by cancel (SIGTERM: dagvisor run was asked to stop); resumed" in (
        shown.stdout
    )
    audit = dagvisor("audit", run_id, "--journal", str(journal))
    lines = audit.stdout.splitlines()
    stopped = next(i for i, line in enumerate(lines) if "run stopped by cancel" in line)
    assert "SIGTERM" in lines[stopped]
    assert any("run resumed" in line for line in lines[stopped + 1 :])
    # The stage the signal cut short ran twice; its lineage lists both attempts.
    lineage = dagvisor("lineage", run_id, "square[2]", "--journal", str(journal))
    assert "ran 2 times:" in lineage.stdout
    assert "attempt 0: started" in lineage.stdout
    assert "cancelled" in lineage.stdout
    assert "attempt 1: started" in lineage.stdout


def test_sigterm_without_a_journal_exits_143(tmp_path):
    target = tmp_path / "squares.py"
    target.write_text(TARGET)
    with _start(target, None) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "square 2 started"
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "cancelled by SIGTERM" in err
    assert "resume it with" not in err
    assert "Traceback" not in err


def test_ctrl_c_is_recorded_as_sigint(tmp_path):
    target = tmp_path / "squares.py"
    target.write_text(TARGET)
    journal = tmp_path / "runs.db"
    with _start(target, journal) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "square 2 started"
        _wait_until_committed(journal, ended=4)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    run_id = shlex.split(err.rsplit("resume it with: ", 1)[1])[2]
    shown = dagvisor("show", run_id, "--journal", str(journal))
    assert "by cancel (SIGINT: dagvisor run was interrupted (Ctrl-C)); not resumed" in (
        shown.stdout
    )
