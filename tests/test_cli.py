"""The dagvisor command line: run, exit codes, errors, Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
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
        # Printed by the running stage: wherever Ctrl-C lands from here (in
        # the stage, the supervisor or the idle loop), the run is cancelled.
        assert child.stdout.readline().strip() == "slow started"
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
        # What is checked below needs fetch, fan (which adds total), square[1]
        # and square[3] ended: the journal the child writes says when.
        _wait_until_committed(journal, ended=4)
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
    assert re.search(
        r"added by change #1 \(add_stage\) requested by 'fan' at \S+: sum the squares",
        lineage.stdout,
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


# -- pipes, files and commands for pasting ---------------------------------------


def _closed_pipe_run(
    *args: str, close_stderr: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``dagvisor ARGS`` with stdout (and maybe stderr) a pipe whose reader
    has already gone: every write to it fails with EPIPE."""
    read_out, write_out = os.pipe()
    os.close(read_out)
    read_err, write_err = os.pipe()
    if close_stderr:
        os.close(read_err)
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "dagvisor", *args],
            stdout=write_out,
            stderr=write_err,
            env={**os.environ, **(env or {})},
        ) as child:
            os.close(write_out)
            os.close(write_err)
            err = b""
            if not close_stderr:
                with os.fdopen(read_err, "rb") as reader:
                    err = reader.read()
            child.wait(timeout=120)
    except BaseException:
        for fd in (write_out, write_err):
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return subprocess.CompletedProcess(child.args, child.returncode, b"", err)


@pytest.fixture
def failed_journal(journaled: Path, tmp_path: Path) -> tuple[Path, str]:
    journal = tmp_path / "runs.db"
    done = dagvisor("run", f"{journaled}:failing", "--journal", str(journal))
    assert done.returncode == 1
    return journal, _run_id(journal)


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["show", "{run}", "--tracebacks"],
        ["audit", "{run}"],
        ["lineage", "{run}", "fetch"],
        ["graph", "{run}"],
        ["graph", "{run}", "--format", "dot"],
    ],
)
def test_a_reader_that_goes_away_ends_a_reading_command_quietly(
    failed_journal, command
):
    journal, run_id = failed_journal
    args = [part.format(run=run_id) for part in command]
    done = _closed_pipe_run(*args, "--journal", str(journal))
    assert done.stderr == b""  # no BrokenPipeError traceback
    assert done.returncode == 0


@pytest.mark.parametrize(
    ("target", "status"), [("pipeline", 0), ("failing", 1)], ids=["succeeded", "failed"]
)
@pytest.mark.parametrize("close_stderr", [False, True], ids=["stdout", "both"])
def test_a_closed_pipe_does_not_change_what_run_does(
    journaled, tmp_path, target, status, close_stderr
):
    journal = tmp_path / "runs.db"
    done = _closed_pipe_run(
        "run",
        f"{journaled}:{target}",
        "--journal",
        str(journal),
        close_stderr=close_stderr,
    )
    assert done.returncode == status  # the run's own outcome
    if not close_stderr:
        assert b"Traceback" not in done.stderr
        assert b"BrokenPipe" not in done.stderr
    shown = dagvisor("show", _run_id(journal), "--journal", str(journal))
    assert ("succeeded" if status == 0 else "failed") in shown.stdout.splitlines()[0]


def test_head_on_a_real_shell_pipe(failed_journal):
    # `head` leaves after one byte: the later commands write to a closed pipe.
    journal, run_id = failed_journal
    script = (
        'for i in 1 2 3 4 5 6; do "$@"; echo "status $?" >&2; done '
        "| head -c 1 >/dev/null"
    )
    done = subprocess.run(
        [
            "bash",
            "-c",
            script,
            "bash",
            *(sys.executable, "-m", "dagvisor", "graph", run_id),
            *("--journal", str(journal)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.stderr == "status 0\n" * 6


def test_a_full_disk_is_one_line_and_exit_2(failed_journal):
    journal, run_id = failed_journal
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dagvisor",
                "show",
                run_id,
                "--journal",
                str(journal),
            ],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "cannot write the output" in done.stderr
    assert "No space left on device" in done.stderr


STRANGE_DIRS = [
    "my runs",
    "it's here",
    "$HOME and `date` and $(date)",
    "semi;colon & amp | pipe > gt * star",
    "tab\there",
    "ünïcödé",
]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("name", STRANGE_DIRS)
def test_the_resume_command_printed_after_ctrl_c_runs_in_a_shell(tmp_path, name):
    where = tmp_path / name
    where.mkdir()
    flows = where / "my flows.py"
    flows.write_text(JOURNALED)
    journal = where / "my runs.db"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagvisor",
            "run",
            f"{flows}:pipeline",
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
        _wait_until_committed(journal, ended=4)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    printed = err.split("resume it with: ", 1)[1].strip()
    assert "\n" not in printed
    # Pasted into a shell, as is: the run goes on and ends.
    bin_dir = os.path.dirname(sys.executable)
    done = subprocess.run(
        ["sh", "-c", printed],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # where a badly quoted `> file` would land
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, (printed, done.stderr)
    assert "succeeded" in done.stdout
    assert "  total = 14" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def _wait_until_committed(journal: Path, *, ended: int) -> None:
    """Wait until the journal holds ``ended`` stage ends: the run is idle then,
    waiting on its hanging stage, with nothing in flight to the journal."""
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


def test_shell_command_quotes_any_argument_for_a_real_shell(tmp_path):
    from dagvisor._cli_io import shell_command

    arguments = [
        "plain",
        "my runs.db",
        "it's",
        "$HOME",
        "`date`",
        "$(date)",
        "a\nb",
        "c\rd",
        "tab\there",
        "bidi \u202e override",
        "\x1b[31m",
        "\\",
        "'",
        '"',
        "!",
        "*",
        "~",
        "#x",
        "",
        " ",
        "ünïcödé",
        "\u2028",
        os.fsdecode(b"not utf-8 \xff\xfe"),
        "-n",
    ]
    line = shell_command(["printf", "%s\\0", *arguments])
    assert "\n" not in line
    assert line.replace("\t", " ").isprintable()
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, timeout=60, check=True
    )
    assert done.stdout.split(b"\0")[:-1] == [os.fsencode(a) for a in arguments]
    # Printable arguments (tab too) stay POSIX: sh (dash) reads them as well.
    plain = [a for a in arguments if a.replace("\t", " ").isprintable()]
    assert "$'" not in shell_command(plain)
    done = subprocess.run(
        ["sh", "-c", shell_command(["printf", "%s\\0", *plain])],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split(b"\0")[:-1] == [os.fsencode(a) for a in plain]


# -- reading commands answer for every stage a change names -------------------------

RETIRING = """
from dagvisor import Pipeline, stage

@stage
async def load(ctx):
    return 1

@stage
async def legacy(ctx):
    raise AssertionError("removed before it runs")

@stage
async def retire(ctx):
    await ctx.remove_stage("legacy", reason="the export moved to v2")

pipeline = Pipeline("retire").add(load).add(retire, after=["load"]).add(
    legacy, after=["retire"]
)
"""


def test_audit_and_lineage_of_a_stage_removed_at_run_time(tmp_path):
    flows = tmp_path / "retiring.py"
    flows.write_text(RETIRING)
    journal = tmp_path / "runs.db"
    assert (
        dagvisor("run", f"{flows}:pipeline", "--journal", str(journal)).returncode == 0
    )
    run_id = _run_id(journal)
    audit = dagvisor("audit", run_id, "--stage", "legacy", "--journal", str(journal))
    assert audit.returncode == 0, audit.stderr
    assert re.search(
        r"UTC  #0 v0->v1 remove_stage by retire: removed legacy - the export moved to v2$",
        audit.stdout,
        re.MULTILINE,
    )
    lineage = dagvisor("lineage", run_id, "legacy", "--journal", str(journal))
    assert lineage.returncode == 0, lineage.stderr
    lines = lineage.stdout.splitlines()
    assert lines[0] == "legacy [removed]"
    assert lines[1] == "  origin: part of the pipeline the run started with"
    assert re.fullmatch(
        r"  removed by change #0 \(remove_stage\) requested by 'retire' at "
        r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00: the export moved to v2",
        lines[2],
    )
    assert "it never ran" in lines[3]
    # A stage no change names and the graph does not hold stays unknown.
    for args in (("lineage", run_id, "ghost"), ("audit", run_id, "--stage", "ghost")):
        done = dagvisor(*args, "--journal", str(journal))
        assert done.returncode == 2
        assert done.stderr == (
            f"dagvisor: error: there is no stage 'ghost' in run {run_id!r}; "
            "check the name\n"
        )
    # A stage no change names but in the graph: no change matches.
    done = dagvisor("audit", run_id, "--stage", "load", "--journal", str(journal))
    assert done.returncode == 0
    assert done.stdout == "no changes match\n"


# -- every other reading error: exit 2, one line --------------------------------------


def test_reading_errors_are_one_line_and_exit_2(failed_journal, tmp_path):
    journal, run_id = failed_journal
    directory = tmp_path / "a directory"
    directory.mkdir()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(journal.read_bytes()[:2048] + b"\xff" * 4096)
    cases = [
        (("runs", "--journal", str(directory)), str(directory)),
        (("show", run_id, "--journal", str(directory)), str(directory)),
        (("runs", "--journal", str(tmp_path / "missing.db")), "missing.db"),
        (("runs", "--journal", str(tmp_path / "new\nline.db")), "new\\nline.db"),
        (("runs", "--journal", str(damaged)), "damaged.db"),
        (("show", "abcd\nefgh", "--journal", str(journal)), "'abcd\\nefgh'"),
        (("lineage", run_id, "gh\nost\x1b[2J", "--journal", str(journal)), "gh\\nost"),
        (
            (
                *("graph", run_id, "-o", str(tmp_path / "no such dir" / "g.mmd")),
                *("--journal", str(journal)),
            ),
            "directory does not exist",
        ),
        (
            ("report", run_id, "-o", str(directory), "--journal", str(journal)),
            "is a directory",
        ),
    ]
    for args, expected in cases:
        done = dagvisor(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("dagvisor: error: "), args
        assert done.stderr.count("\n") == 1, (args, done.stderr)
        assert "\x1b" not in done.stderr
        assert expected in done.stderr, (args, done.stderr)
        assert done.stdout == "", args
    assert not (tmp_path / "missing.db").exists()
    assert not (tmp_path / "no such dir").exists()
    assert sorted(p.name for p in directory.iterdir()) == []


def test_a_run_row_edited_into_nonsense_still_lists(failed_journal):
    journal, run_id = failed_journal
    db = sqlite3.connect(journal)
    db.execute("UPDATE runs SET created = 1e300, name = ?", ("x\x1b[2Jy\nz",))
    db.commit()
    db.close()
    done = dagvisor("runs", "--journal", str(journal))
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[1]
    assert line.startswith(run_id)
    assert "1e+300" in line
    assert line.endswith("x\\x1b[2Jy\\nz")


# -- files are written whole or not at all ------------------------------------------


def test_write_file_replaces_whole_or_leaves_the_target_as_it_was(
    tmp_path, monkeypatch
):
    from dagvisor import _cli_io

    target = tmp_path / "report.html"
    target.write_text("the old report")
    target.chmod(0o640)
    _cli_io.write_file(target, "the new report \ud800")
    assert target.read_bytes() == b"the new report \\ud800"
    assert target.stat().st_mode & 0o777 == 0o640  # its mode is kept
    for failing in ("fsync", "replace"):
        with monkeypatch.context() as patch:

            def fail(*args, **kwargs):
                raise OSError(28, "No space left on device")

            patch.setattr(_cli_io.os, failing, fail)
            with pytest.raises(OSError, match="No space left"):
                _cli_io.write_file(target, "half of a report")
        assert target.read_bytes() == b"the new report \\ud800"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    fresh = tmp_path / "fresh.html"
    _cli_io.write_file(fresh, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_output_file_is_never_the_journal_and_special_files_are_written(
    failed_journal, tmp_path
):
    journal, run_id = failed_journal
    before = journal.read_bytes()
    os.link(journal, tmp_path / "hard link.db")
    for target in (journal, f"{journal}-wal", tmp_path / "hard link.db"):
        for command in ("report", "graph"):
            done = dagvisor(
                command, run_id, "-o", str(target), "--journal", str(journal)
            )
            assert done.returncode == 2, (command, target)
            assert "is the journal being read" in done.stderr
            assert done.stderr.count("\n") == 1
    assert journal.read_bytes() == before
    # Not a regular file: written as it is, no rename over it.
    done = dagvisor("graph", run_id, "-o", "/dev/stdout", "--journal", str(journal))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('---\ntitle: "squares"\n')
    assert os.path.exists("/dev/stdout")


def test_writers_of_one_report_at_once_each_leave_it_whole(failed_journal, tmp_path):
    journal, run_id = failed_journal
    report = tmp_path / "report.html"
    command = [sys.executable, "-m", "dagvisor", "report", run_id]
    children = [
        subprocess.Popen(
            [*command, "-o", str(report), "--journal", str(journal)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for child in children:
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
