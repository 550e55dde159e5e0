"""A healthy journal in a read-only place is read; "damaged" is said only of damage.

A journal is in WAL mode, so SQLite's usual read-only open still wants a
``-shm`` file beside it. In a read-only directory the reading commands fall
back to SQLite's immutable open. Root ignores permission bits, so when the
tests run as root the commands are run with the capabilities that let root
do so (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) dropped, by ``setpriv``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import JournalError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@stage
async def hello(ctx):
    return "hello"


def _journal(path: Path) -> str:
    async def main() -> str:
        async with runtime(journal=path) as rt:
            result = await rt.run(Pipeline("readonly").add(hello))
        return result.run_id

    return trio.run(main)


def _as_reader(*command: str) -> list[str]:
    """``command`` run so that permission bits apply to it, even as root."""
    if os.geteuid() != 0:
        return list(command)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits cannot be shown")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, "--bounding-set", drop, "--", *command]


def _dagvisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_reader(sys.executable, "-m", "dagvisor", *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "archive"
    folder.mkdir()
    path = folder / "runs.db"
    run_id = _journal(path)
    assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]  # checkpointed
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        yield path, run_id
    finally:
        folder.chmod(stat.S_IRWXU)


def test_the_reading_commands_read_a_journal_in_a_read_only_directory(read_only_dir):
    path, run_id = read_only_dir
    touch = subprocess.run(
        _as_reader(sys.executable, "-c", f"open({str(path.parent / 'x')!r}, 'w')"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert touch.returncode != 0, "the directory is writable: nothing would be shown"
    before = path.read_bytes()
    listed = _dagvisor("runs", "--journal", str(path))
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout
    shown = _dagvisor("show", run_id, "--journal", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "'hello'" in shown.stdout
    assert sorted(p.name for p in path.parent.iterdir()) == ["runs.db"]
    assert path.read_bytes() == before


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_reader(sys.executable, "-c", code),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_journal_result_reads_a_journal_in_a_read_only_directory(read_only_dir):
    """SQLite's read-only open fails there (no -shm can be made): the immutable
    open is the fallback, and it reads the whole run."""
    path, run_id = read_only_dir
    plain = _python(
        "import sqlite3\n"
        f"db = sqlite3.connect('file:{path}?mode=ro', uri=True)\n"
        "db.execute('SELECT * FROM sqlite_master').fetchall()"
    )
    assert "readonly" in plain.stderr or "unable to open" in plain.stderr
    read = _python(
        "from dagvisor import Journal\n"
        f"with Journal({str(path)!r}, readonly=True) as journal:\n"
        f"    print(journal.result({run_id!r}).outputs['hello'])"
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout == "hello\n"


def test_a_write_ahead_log_that_cannot_be_read_is_refused_saying_so(tmp_path):
    """Commits still in the -wal file cannot be seen by the immutable open, so
    a journal copied with its -wal into a read-only place is refused, not
    read without them."""
    source = tmp_path / "live.db"
    run_id = _journal(source)
    live = sqlite3.connect(source)
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("UPDATE runs SET status = 'failed'")
    live.commit()
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(source, folder / "runs.db")
    shutil.copy(tmp_path / "live.db-wal", folder / "runs.db-wal")
    live.close()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        read = _python(
            "from dagvisor import Journal\n"
            f"with Journal({str(folder / 'runs.db')!r}, readonly=True) as journal:\n"
            f"    print(journal.result({run_id!r}).status)"
        )
    finally:
        folder.chmod(stat.S_IRWXU)
    assert read.returncode != 0
    assert "JournalError" in read.stderr
    assert "runs.db-wal holds commits" in read.stderr
    assert "damaged" not in read.stderr


def test_a_directory_is_called_a_directory(tmp_path):
    with pytest.raises(JournalError, match="is a directory"):
        Journal(tmp_path, readonly=True).open()
    done = _dagvisor("runs", "--journal", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "is a directory" in done.stderr


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "runs.db"
    os.mkfifo(fifo)
    with pytest.raises(JournalError, match="not a regular file"):
        Journal(fifo, readonly=True).open()


def test_an_unreadable_journal_is_not_called_damaged(tmp_path):
    path = tmp_path / "runs.db"
    _journal(path)
    path.chmod(0)
    try:
        done = _dagvisor("runs", "--journal", str(path))
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert done.returncode == 2
    assert "cannot be opened for reading" in done.stderr
    assert "damaged" not in done.stderr
