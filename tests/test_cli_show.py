"""``dagvisor show``: a summary by default, every output or failure when asked."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

TARGET = """
from dagvisor import Pipeline, stage

@stage
async def cell(ctx):
    if ctx.item % 2:
        raise ValueError(f"odd {ctx.item}")
    return ctx.item * 10

@stage
async def spread(ctx):
    await ctx.expand(cell, range(50), key=str, reason="one per item")

pipeline = Pipeline("cells").add(spread)
"""


def dagvisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _journaled(tmp_path: Path) -> tuple[Path, str]:
    target = tmp_path / "cells.py"
    target.write_text(TARGET)
    journal = tmp_path / "runs.db"
    done = dagvisor(
        "run",
        f"{target}:pipeline",
        "--journal",
        str(journal),
        "--on-failure",
        "continue",
    )
    assert done.returncode == 1, done.stderr
    listed = dagvisor("runs", "--journal", str(journal))
    return journal, listed.stdout.splitlines()[-1].split()[0]


def test_show_summarises_outputs_and_failures_and_lists_them_all_when_asked(
    tmp_path,
):
    journal, run_id = _journaled(tmp_path)
    shown = dagvisor("show", run_id, "--journal", str(journal))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "51 stages" in out
    assert "succeeded 26" in out
    assert "failed 25" in out
    assert "slowest stages" in out
    assert "interruptions:" not in out  # every stage ran: nothing was cut short
    # 26 final outputs: spread's (None) and the 25 even cells'.
    assert sum(1 for line in out.splitlines() if " = " in line) == 10
    assert "... and 16 more (dagvisor show --outputs lists them all)" in out
    failures = [line for line in out.splitlines() if "ValueError" in line]
    assert len(failures) == 10
    assert "... and 15 more (dagvisor show --failures lists them all)" in out

    everything = dagvisor(
        "show", run_id, "--journal", str(journal), "--outputs", "--failures"
    ).stdout
    assert sum(1 for line in everything.splitlines() if " = " in line) == 26
    assert sum(1 for line in everything.splitlines() if "ValueError" in line) == 25
    assert "more (dagvisor show" not in everything
    for item in range(0, 50, 2):
        assert f"cell[{item}] = {item * 10}" in everything
