"""``dagvisor recover``: finish every run whose process crashed, from the command line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

TARGET = """
import os
import trio
from dagvisor import Pipeline, stage

def _effect(ctx):
    with open(os.environ["EFFECTS"], "a") as log:
        log.write(ctx.name + "\\n")

@stage
async def first(ctx):
    _effect(ctx)
    return 1

@stage
async def second(ctx):
    if os.environ.get("HANG"):
        print("second started", flush=True)
        await trio.sleep_forever()
    _effect(ctx)
    return ctx.inputs["first"] + 1

pipeline = Pipeline("crashing").add(first).add(second, after=["first"])
"""


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "recovertarget.py"
    path.write_text(TARGET)
    return path


def dagvisor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def _wait_until_durable(journal: Path) -> None:
    """Wait until the start of ``second`` is committed (the journal follows the stages)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists():
            db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
            try:
                tables = {
                    row[0] for row in db.execute("SELECT name FROM sqlite_master")
                }
                if (
                    "events" in tables
                    and db.execute(
                        "SELECT 1 FROM events WHERE kind = 'stage_started' "
                        "AND payload LIKE '%\"second\"%'"
                    ).fetchone()
                ):
                    return
            finally:
                db.close()
        time.sleep(0.01)  # polling a condition, not ordering by time
    pytest.fail("the run never reached the journal")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_recover_finishes_a_run_whose_process_was_killed(target, tmp_path):
    journal, effects = tmp_path / "runs.db", tmp_path / "effects.log"
    env = {"EFFECTS": str(effects)}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagvisor",
            "run",
            f"{target}:pipeline",
            "--journal",
            str(journal),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "HANG": "1"},
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "second started"
        _wait_until_durable(journal)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert effects.read_text().split() == ["first"]

    done = dagvisor(
        "recover", "--journal", str(journal), "--with", str(target), env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("recovering run ")
    run_id = lines[0].split()[2]
    assert lines[1].startswith(f"run {run_id} of 'crashing': succeeded, 2 stages")
    assert effects.read_text().split() == ["first", "second"]

    again = dagvisor(
        "recover", "--journal", str(journal), "--with", str(target), env=env
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"no run to recover in {journal}\n"


def test_recover_refuses_bad_usage_in_one_line(target, tmp_path):
    missing = tmp_path / "missing.db"
    for args, message in [
        (("--journal", str(missing)), "name the modules or files"),
        (("--journal", str(missing), "--with", str(target)), "no journal at"),
        (("--journal", str(tmp_path), "--with", str(target)), "is a directory"),
    ]:
        done = dagvisor("recover", *args, env={})
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert done.stderr.count("\n") == 1
    assert not missing.exists()
