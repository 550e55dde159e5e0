"""The dagvisor command line: run, exit codes, errors, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

TARGET = """
import trio
from dagvisor import Pipeline, stage

@stage
async def a(ctx):
    return ctx.run_inputs.get("x", 1)

@stage
async def b(ctx):
    return ctx.inputs["a"] + 1

@stage
async def boom(ctx):
    raise ValueError("bad data")

@stage
async def slow(ctx):
    print("slow started", flush=True)
    await trio.sleep(60)

pipeline = Pipeline("cli").add(a).add(b, after=["a"])
failing = Pipeline("cli").add(boom)
hanging = Pipeline("cli").add(slow)
not_a_pipeline = 42
"""


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "clitarget.py"
    path.write_text(TARGET)
    return path


def dagvisor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd) if cwd else ""}
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_run_a_pipeline_from_a_file(target):
    done = dagvisor("run", f"{target}:pipeline", "--inputs", '{"x": 5}')
    assert done.returncode == 0, done.stderr
    assert "succeeded: 2 stages" in done.stdout
    assert "  b = 6" in done.stdout


def test_run_a_pipeline_from_a_module(target):
    done = dagvisor("run", "clitarget:pipeline", cwd=target.parent)
    assert done.returncode == 0, done.stderr
    assert "  b = 2" in done.stdout


def test_a_failed_run_exits_1_and_names_the_failure(target):
    done = dagvisor("run", f"{target}:failing")
    assert done.returncode == 1
    assert "failed" in done.stdout
    assert "boom: ValueError: bad data" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("target_text", "message"),
    [
        ("nocolon", "TARGET must be module:attribute"),
        ("missing.py:pipeline", "no such file: missing.py"),
        ("no_such_module_x:pipeline", "no module named 'no_such_module_x'"),
        (
            "{file}:nope",
            "has no attribute 'nope'; its pipelines: failing, hanging, pipeline",
        ),
        ("{file}:not_a_pipeline", "is a int, not a Pipeline"),
    ],
)
def test_bad_usage_exits_2_with_one_clear_line(target, target_text, message):
    done = dagvisor("run", target_text.format(file=target))
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_bad_inputs_exit_2(target):
    done = dagvisor("run", f"{target}:pipeline", "--inputs", "[1, 2]")
    assert done.returncode == 2
    assert "--inputs must be a JSON object" in done.stderr
    done = dagvisor("run", f"{target}:pipeline", "--inputs", "{oops")
    assert done.returncode == 2
    assert "not valid JSON" in done.stderr


def test_debug_shows_the_traceback(target):
    done = dagvisor("run", "--debug", f"{target}:nope")
    assert done.returncode != 0
    assert "Traceback" in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_cancels_cleanly(target):
    with subprocess.Popen(
        [sys.executable, "-m", "dagvisor", "run", f"{target}:hanging"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "slow started"
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "cancelled by Ctrl-C" in err
    assert "Traceback" not in err


JOURNALED = """
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
        await trio.sleep(60)
    return ctx.item ** 2

@stage
async def fan(ctx):
    names = await ctx.expand(square, ctx.inputs["fetch"], key=str, reason="one per item")
    await ctx.add_stage(total, after=names, reason="sum the squares")

@stage
async def total(ctx):
    return sum(ctx.inputs.values())

@stage
async def boom(ctx):
    raise ValueError("sensor offline")

pipeline = Pipeline("squares").add(fetch).add(fan, after=["fetch"])
failing = pipeline.add(boom, after=["fetch"])
"""


@pytest.fixture
def journaled(tmp_path: Path) -> Path:
    path = tmp_path / "squares.py"
    path.write_text(JOURNALED)
    return path


def _run_id(journal: Path) -> str:
    done = dagvisor("runs", "--journal", str(journal))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[0]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_leaves_a_journal_that_resume_finishes(journaled, tmp_path):
    journal = tmp_path / "runs.db"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagvisor",
            "run",
            f"{journaled}:pipeline",
            "--journal",
            str(journal),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HANG": "1"},
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "square 2 started"
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=60)
    assert child.returncode == 130
    run_id = _run_id(journal)
    assert f"dagvisor resume {run_id} --journal {journal} --with {journaled}" in err
    shown = dagvisor("show", run_id[:8], "--journal", str(journal))
    assert "cancelled" in shown.stdout
    assert "final outputs:" in shown.stdout
    done = dagvisor(
        "resume", run_id[:8], "--journal", str(journal), "--with", str(journaled)
    )
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} succeeded" in done.stdout
    assert "  total = 14" in done.stdout
    audit = dagvisor("audit", run_id, "--journal", str(journal), "--stage", "total")
    assert "add_stage by fan: added total" in audit.stdout
    lineage = dagvisor("lineage", run_id, "total", "--journal", str(journal))
    assert "added by change #1 (add_stage) requested by 'fan': sum the squares" in (
        lineage.stdout
    )
    assert "read output of 'square[2]'" in lineage.stdout


def test_show_graph_report_and_errors_read_a_journal(journaled, tmp_path):
    journal = tmp_path / "runs.db"
    done = dagvisor("run", f"{journaled}:failing", "--journal", str(journal))
    assert done.returncode == 1
    run_id = _run_id(journal)
    before = journal.read_bytes()
    shown = dagvisor("show", run_id, "--journal", str(journal), "--tracebacks")
    assert "failed" in shown.stdout
    assert "boom: ValueError: sensor offline" in shown.stdout
    assert 'raise ValueError("sensor offline")' in shown.stdout
    graph = dagvisor("graph", run_id, "--journal", str(journal), "--format", "mermaid")
    assert graph.stdout.startswith("---")
    assert ":::failed" in graph.stdout
    report = tmp_path / "report.html"
    done = dagvisor("report", run_id, "--journal", str(journal), "-o", str(report))
    assert done.returncode == 0, done.stderr
    assert "<svg" in report.read_text()
    assert journal.read_bytes() == before  # reading changes nothing
    for args, message in [
        (("show", "ffffffff"), "there is no run 'ffffffff'"),
        (("lineage", run_id, "ghost"), "there is no stage 'ghost'"),
        (("audit", run_id, "--since", "yesterday"), "--since must be an ISO 8601"),
        (("resume", run_id), "name the modules or files"),
    ]:
        done = dagvisor(*args, "--journal", str(journal))
        assert done.returncode == 2, args
        assert message in done.stderr
        assert done.stderr.count("\n") == 1
    missing = tmp_path / "missing.db"
    done = dagvisor("runs", "--journal", str(missing))
    assert done.returncode == 2
    assert "there is no journal at" in done.stderr
    assert not missing.exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 50)
    done = dagvisor("runs", "--journal", str(notes))
    assert done.returncode == 2
    assert "not a dagvisor journal" in done.stderr
