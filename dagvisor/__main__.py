"""The ``dagvisor`` command line (``python -m dagvisor``)."""

from __future__ import annotations

import argparse
import sys

import dagvisor
from dagvisor._cli_journal import add_journal_commands, journal_command
from dagvisor._cli_run import add_run_command, run_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``dagvisor`` command; return its exit code."""
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
    args = parser.parse_args(argv)
    if args.command == "demo":
        from dagvisor._demo import main as demo_main  # only when asked

        return demo_main(args.dir)
    if args.command == "run":
        return run_command(args)
    code = journal_command(args)
    if code is not None:
        return code
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
