"""``dagvisor run --codec`` and ``dagvisor show RUN --output STAGE [--json]``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

TARGET = """
import numpy as np
import pandas as pd
import trio
from dagvisor import Pipeline, stage

@stage
async def load(ctx):
    return pd.DataFrame({"x": np.arange(1000), "name": ["n%d" % i for i in range(1000)]})

@stage
async def fit(ctx):
    frame = ctx.inputs["load"]
    return np.polyfit(frame["x"], frame["x"] * 3.0 + 1.0, 1).round(6)

@stage
async def meta(ctx):
    return {"rows": 1000, "tags": {"a"}, "label": "fit\\x1b[31m", "t": (1, 2)}

@stage
async def listing(ctx):
    return list(range(5000))

@stage(persist=False)
async def hidden(ctx):
    return "kept out"

@stage
async def boom(ctx):
    raise ValueError("no output")

@stage
async def waits(ctx):
    if ctx.attempt == 0:
        print("waiting", flush=True)
        await trio.sleep(60)
    return "resumed"

pipeline = (
    Pipeline("data")
    .add(load).add(fit, after=["load"]).add(meta).add(listing).add(hidden)
)
failing = Pipeline("data").add(boom)
held = Pipeline("data").add(load).add(waits, after=["load"])
"""


def dagvisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def journaled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    folder = tmp_path_factory.mktemp("cli_outputs")
    target = folder / "datatarget.py"
    target.write_text(TARGET)
    journal = folder / "runs.db"
    done = dagvisor(
        "run", f"{target}:pipeline", "--codec", "data", "--journal", str(journal)
    )
    assert done.returncode == 0, done.stderr
    assert "fit = ndarray float64 shape (2,)" in done.stdout  # a summary, one line
    run_id = _run_id(done.stderr)
    return journal, run_id, target


def _run_id(stderr: str) -> str:
    found = re.search(r"\brun ([0-9a-f]{32})\b", stderr)
    assert found is not None, stderr
    return found.group(1)


def _show(
    journaled: tuple[Path, str, Path], *args: str
) -> subprocess.CompletedProcess[str]:
    journal, run_id, _ = journaled
    return dagvisor("show", run_id[:8], "--journal", str(journal), *args)


def test_run_codec_data_journals_frames_as_arrow_and_show_prints_a_summary(journaled):
    done = _show(journaled, "--output", "load")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "DataFrame 1,000 rows x 2 columns (x: int64, name: str)"
    assert lines[1].split() == ["x", "name"]
    assert lines[2].split() == ["0", "0", "n0"]
    assert len(lines) == 7  # the header, the columns, the first 5 rows


def test_show_output_json_is_one_line_machines_can_read(journaled):
    fit = _show(journaled, "--output", "fit", "--json")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout) == [3.0, 1.0]
    load = _show(journaled, "--output", "load", "--json")
    assert load.stdout.count("\n") == 1
    frame = json.loads(load.stdout)
    assert frame["columns"] == ["x", "name"]
    assert frame["data"][999] == [999, "n999"]
    listing = _show(journaled, "--output", "listing", "--json")
    assert json.loads(listing.stdout) == list(range(5000))


def test_show_output_shortens_a_large_value_and_escapes_what_it_prints(journaled):
    listing = _show(journaled, "--output", "listing")
    assert listing.returncode == 0, listing.stderr
    assert (
        listing.stdout.strip()
        == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, ...]"
    )
    meta = _show(journaled, "--output", "meta")
    assert "\x1b" not in meta.stdout
    assert "'label': 'fit\\x1b[31m'" in meta.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--output", "meta", "--json"],
            "its part ['tags'] is a set, which has no JSON form",
        ),
        (["--output", "hidden"], "persist=False"),
        (["--output", "nope"], "there is no stage 'nope'"),
        (["--json"], "give --output STAGE too"),
    ],
)
def test_show_output_refusals_are_one_line_and_exit_2(journaled, args, says):
    done = _show(journaled, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("dagvisor: error: ")
    assert done.stderr.count("\n") == 1
    assert says in done.stderr


def test_show_output_of_a_failed_stage_says_it_has_none(journaled):
    journal, _, target = journaled
    done = dagvisor("run", f"{target}:failing", "--journal", str(journal))
    assert done.returncode == 1
    run_id = _run_id(done.stderr)
    shown = dagvisor("show", run_id, "--journal", str(journal), "--output", "boom")
    assert shown.returncode == 2
    assert "is failed: only a stage that succeeded has an output" in shown.stderr


def test_run_refuses_an_unknown_codec(journaled):
    _, _, target = journaled
    done = dagvisor("run", f"{target}:pipeline", "--codec", "parquet")
    assert done.returncode == 2
    assert "invalid choice: 'parquet'" in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group")
def test_resume_uses_the_codec_the_run_was_journaled_with(tmp_path):
    import signal

    target = tmp_path / "datatarget.py"
    target.write_text(TARGET)
    journal = tmp_path / "runs.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagvisor",
            "run",
            f"{target}:held",
            "--codec",
            "data",
            "--journal",
            str(journal),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "waiting"
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    run_id = _run_id(err)
    done = dagvisor("resume", run_id, "--journal", str(journal), "--with", str(target))
    assert done.returncode == 0, done.stderr
    assert "waits = 'resumed'" in done.stdout
