"""The ``dagvisor`` command line (``python -m dagvisor``).

Every command runs inside `console`: names print safely whatever they hold,
and a reader that stops early (``| head``) ends the output quietly, the
command keeping its own exit status.
"""

from __future__ import annotations

import argparse
import sys

import dagvisor
from dagvisor._cli_ctl import add_ctl_commands, ctl_command, token_command
from dagvisor._cli_io import console, one_line
from dagvisor._cli_journal import add_journal_commands, journal_command
from dagvisor._cli_run import add_run_command, run_command
from dagvisor.actors import DagvisorError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``dagvisor`` command; return its exit code."""
    with console() as output:
        try:
            code = _command(argv)
        except KeyboardInterrupt:  # `run` and `resume` handle theirs: cancel, hint
            print("dagvisor: interrupted", file=sys.stderr)
            code = 130
    if output.error is not None:  # the output was lost (a full disk): say so
        with console():
            print(
                f"dagvisor: error: cannot write the output: {one_line(str(output.error))}",
                file=sys.stderr,
            )
        return 2
    return code


def _command(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="dagvisor",
        description="Run DAG pipelines whose graph can change while they run.",
    )
    parser.add_argument(
        "--version", action="version", version=f"dagvisor {dagvisor.__version__}"
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo", help="run a pipeline that changes itself while it runs"
    )
    demo.add_argument(
        "--dir",
        help="where to keep the journal and the report (default: a new temp dir)",
    )
    add_run_command(sub)
    add_journal_commands(sub)
    add_ctl_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from dagvisor._demo import main as demo_main  # only when asked

        try:
            return demo_main(args.dir)
        except (DagvisorError, OSError) as exc:
            print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
            return 2
    if args.command == "run":
        return run_command(args)
    if args.command == "token":
        return token_command(args)
    if args.command == "ctl":
        return ctl_command(args)
    code = journal_command(args)
    if code is not None:
        return code
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
