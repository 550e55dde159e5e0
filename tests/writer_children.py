"""Helpers for tests of the journal writer's process: finding it, and a parent to kill."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def writers(of: int | None = None) -> list[psutil.Process]:
    """The journal writer processes of process ``of`` (this one by default),
    zombies included."""
    return [
        child
        for child in psutil.Process(of).children()
        if child.status() == psutil.STATUS_ZOMBIE
        or any("_writer_child" in part for part in child.cmdline())
    ]


@contextlib.contextmanager
def parent(source: str, directory: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running ``source`` (written to ``directory``) with
    ``args``, its output readable; killed and reaped when the block ends."""
    script = directory / "parent.py"
    script.write_text(source)
    process = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
