"""Shared fixtures and settings for the test suite."""

from __future__ import annotations

import os
import sqlite3

import trio
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def tasks_below() -> list[trio.lowlevel.Task]:
    """Every task started, directly or not, by the calling task (walked iteratively)."""
    tasks: list[trio.lowlevel.Task] = []
    stack = [trio.lowlevel.current_task()]
    while stack:
        task = stack.pop()
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
            stack.extend(nursery.child_tasks)
    return tasks


def copy_as_crashed(source: os.PathLike[str], dest: os.PathLike[str]) -> None:
    """What a process killed now would leave on disk: the committed journal.

    The copy is made with SQLite's backup API. Its runs' owner is this very
    process, alive: the copy says it was started at another time, as the
    owner of a crashed run that the pid was given to again would be.
    """
    src = sqlite3.connect(source)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
        dst.execute("UPDATE leases SET started = 0")
        dst.commit()
    finally:
        src.close()
        dst.close()
