"""How ``dagvisor run`` and ``resume`` end on a signal: SIGTERM and Ctrl-C cancel the run.

SIGTERM (what ``kill`` and service managers send) is received while the run
goes and cancels it with the signal as the cancel's reason, which its
journal keeps; Ctrl-C arrives as ``KeyboardInterrupt`` and does the same
(`SIGINT_REASON`). Either way every stage is stopped and its resources
closed, a journaled run is told how to go on (the ``dagvisor resume``
command, quoted for the shell), and the exit code is 130 (Ctrl-C) or 143
(SIGTERM: 128 + 15, as a shell reports a process SIGTERM ended).
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import trio

from dagvisor._cli_io import shell_command

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from dagvisor.supervisor import Run, RunResult

__all__ = ["SIGINT_REASON", "say_interrupted", "wait_unless_signalled"]


async def wait_unless_signalled(
    run: Run, signals: AsyncIterator[int], signalled: list[str]
) -> RunResult:
    """``run.wait()``; a signal meanwhile cancels the run, its name the reason."""

    async def cancel_on_signal() -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            signalled.append(name)
            await run.cancel(reason=f"{name}: dagvisor run was asked to stop")
            return

    failure: Exception | None = None
    result: RunResult | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signal)
        try:
            result = await run.wait()
        except Exception as exc:  # re-raised as is, not in a group
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    assert result is not None
    return result


SIGINT_REASON = "SIGINT: dagvisor run was interrupted (Ctrl-C)"
_SIGNAL_EXITS = {"Ctrl-C": 130, "SIGTERM": 128 + signal.SIGTERM}


def say_interrupted(
    started: list[Run], journal: str | None, resume_with: list[str], by: str
) -> int:
    """Say that the run was cancelled by ``by`` and how to resume it; the exit code."""
    hint = ""
    if journal is not None and started:
        command = ["dagvisor", "resume", started[0].id, "--journal", journal]
        for where in resume_with:
            command += ["--with", where]
        hint = f"; resume it with: {shell_command(command)}"
    print(
        f"dagvisor: cancelled by {by}; every stage was stopped and its "
        f"resources closed{hint}",
        file=sys.stderr,
    )
    return _SIGNAL_EXITS[by]
