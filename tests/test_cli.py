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
