"""The examples in the README, the docstrings and examples/ run as written."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dagvisor
import dagvisor.actors._declare
import dagvisor.supervisor._open

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_quick_start():
    readme = (ROOT / "README.md").read_text()
    quick_start = re.search(r"## Quick start\s+```python\n(.*?)```", readme, re.DOTALL)
    assert quick_start is not None
    out = _run("-c", quick_start.group(1))
    assert out.splitlines()[0] == "60"
    assert "change_set by plan" in out
    assert "(expand score[0] score[1] score[2], add_stage total)" in out


def test_examples_quickstart():
    out = _run(str(ROOT / "examples" / "quickstart.py"))
    assert "total: 60" in out


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (
            "fraud_detection.py",
            "decision: {'deep_checks': 5, 'blocked': ['tx10', 'tx17', 'tx4']}",
        ),
        (
            "clinical_workflow.py",
            "notify_attending   succeeded  added by sign_off: escalation protocol",
        ),
        ("order_processing.py", "invoice: {'shipments': ['gdansk', 'lyon']}"),
        ("quality_control.py", "report: {'samples': 12"),
        ("deep_chain.py", "last output: 10000"),
        ("store_sales.py", "report: {'regions': 4, 'most_price_sensitive': 'north'}"),
    ],
)
def test_examples_run(example, expected):
    out = _run(str(ROOT / "examples" / example))
    assert expected in out


def test_the_data_example_reads_its_frames_back_from_the_journal():
    out = _run(str(ROOT / "examples" / "store_sales.py"))
    assert "  north: -5.96 units per 1.00 (r2 0.976)" in out
    assert " north    87 5157.0 47371.57" in out  # the DataFrame, read from the journal
    assert "raw load journaled: False" in out  # persist=False
    assert "HTML report: " in out


def test_the_demo_command(tmp_path):
    out = _run("-m", "dagvisor", "demo", "--dir", str(tmp_path))
    assert "report: {'inspected': 8" in out
    assert "+ reinspect:inspect_sample[2]" in out
    assert "add_stage by escalate" in out
    (report,) = tmp_path.glob("report-*.html")
    assert f"HTML report: {report}" in out
    assert "<svg" in report.read_text()
    # The journal it wrote reads back, with the same story.
    run_id = report.stem.removeprefix("report-")
    shown = _run(
        "-m", "dagvisor", "show", run_id, "--journal", str(tmp_path / "demo.db")
    )
    assert "succeeded" in shown
    assert "13 stages (11 added at run time)" in shown


@pytest.mark.parametrize(
    "module", [dagvisor, dagvisor.actors._declare, dagvisor.supervisor._open]
)
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    assert tried > 0 or module is not dagvisor
