"""``dagvisor recover``: resume every run of a journal whose owner is gone.

Imports the modules named with ``--with`` (never one the journal names),
then takes over each run that did not end and whose owning process has
crashed or whose lease has expired, and runs it to its end. Several
processes may recover the same journal at once: each run is taken by one.

Exit codes: 0 when every run it took over succeeded (or there was none),
1 when one failed, 2 for bad usage (no ``--with``, a missing or damaged
journal), 130 after Ctrl-C, which cancels the runs cleanly; they can be
recovered again.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import trio

from dagvisor.actors import DagvisorError, RunFailed
from dagvisor.supervisor import runtime

from ._cli_io import one_line, shell_command
from ._cli_run import UsageError, add_journal_option, load_module

if TYPE_CHECKING:
    import argparse

    from dagvisor.supervisor import Recovery, Run, RunResult

__all__ = ["add_recover_command", "recover_command"]


def add_recover_command(sub: Any) -> None:
    """Declare ``dagvisor recover`` on the parser's subcommands."""
    recover = sub.add_parser(
        "recover",
        help="resume every run whose process crashed or whose lease expired",
        description="Take over and finish every run of the journal that did not "
        "end and whose owner is gone (its process crashed, or its lease "
        "expired). Each run is taken by one process, even when several recover "
        "at once. Name the modules or files that define the stages with --with. "
        "Exit 0 when every run succeeded, 1 when one failed, 2 on bad usage.",
    )
    recover.add_argument(
        "--with",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module or .py file defining the runs' stages (repeatable)",
    )
    recover.add_argument(
        "--on-failure", choices=("cancel", "continue"), default="cancel"
    )
    add_journal_option(recover, required=True)
    recover.add_argument("--debug", action="store_true", help="show tracebacks")


def recover_command(args: argparse.Namespace) -> int:
    """``dagvisor recover``; return the exit code."""
    if not args.modules:
        print(
            "dagvisor: error: recover needs the code of the runs' stages: name the "
            "modules or files that define them with --with (the journal never "
            "names code to import)",
            file=sys.stderr,
        )
        return 2
    try:
        for where in args.modules:
            load_module(where.rpartition(":")[0] if ":" in where else where)
        return trio.run(_recover, args)
    except (UsageError, DagvisorError, OSError) as exc:
        if args.debug:
            raise
        print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = shell_command(
            ["dagvisor", "recover", "--journal", str(args.journal)]
            + [part for where in args.modules for part in ("--with", where)]
        )
        print(
            "dagvisor: cancelled by Ctrl-C; every stage was stopped and its "
            f"resources closed; go on with: {again}",
            file=sys.stderr,
        )
        return 130


async def _recover(args: argparse.Namespace) -> int:
    async with runtime(journal=args.journal, on_failure=args.on_failure) as rt:
        recovery = await rt.recover()
        _print_taken(recovery, args.journal)
        failed = False
        async with trio.open_nursery() as nursery:
            results: list[tuple[Run, RunResult | RunFailed]] = []

            async def wait(run: Run) -> None:
                try:
                    results.append((run, await run.wait()))
                except RunFailed as exc:
                    results.append((run, exc))

            for run in recovery.runs:
                nursery.start_soon(wait, run)
        for run, outcome in results:
            if isinstance(outcome, RunFailed):
                failed = True
                print(f"run {run.id} of {run.name!r}: failed: {one_line(str(outcome))}")
            else:
                stats = outcome.stats
                print(
                    f"run {run.id} of {run.name!r}: {outcome.status}, "
                    f"{stats.stages:,} stages, {stats.duration:.2f} s"
                )
    return 1 if failed else 0


def _print_taken(recovery: Recovery, journal: str) -> None:
    if not recovery.runs and not recovery.skipped:
        print(f"no run to recover in {one_line(str(journal))}")
    for run in recovery.runs:
        print(f"recovering run {run.id} of {run.name!r}")
    for run_id, error in recovery.skipped.items():
        print(
            f"left run {run_id} as it was: {type(error).__name__}: "
            f"{one_line(str(error))}"
        )
