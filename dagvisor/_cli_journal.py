"""The commands that read a journal, and ``dagvisor resume``.

``runs``, ``show RUN_ID``, ``audit RUN_ID``, ``lineage RUN_ID STAGE``,
``graph RUN_ID``, ``report RUN_ID`` only read: they open the journal
read-only, need none of the pipeline's code, and never change the file.
``resume RUN_ID --with MODULE`` imports the modules named on the command
line (never one named by the journal) so that the run's stage functions are
registered, then goes on with the run; ``recover --with MODULE`` does that
for every run whose owner is gone (see `_cli_recover`).

A run id may be shortened to a unique prefix of at least 4 characters. Bad
usage (a missing journal, a file that is not one, an unknown run or stage)
is one line on stderr and exit code 2; ``--debug`` shows the traceback.

What the journal holds is printed as data: names and reasons on one line
each, never as terminal control sequences; ``audit --stage`` and
``lineage`` answer for any stage a change names, removed ones too. Files
(``graph -o``, ``report -o``) are written whole or not at all.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import TYPE_CHECKING, Any

from dagvisor.actors import DagvisorError, default_registry
from dagvisor.actors._datacodec import BUILT_IN
from dagvisor.supervisor import Journal
from dagvisor.supervisor._readback import result_from_journal

from ._cli_history import history_events, history_lines, stopped_text
from ._cli_io import one_line, write_file
from ._cli_output import add_output_options, output_text
from ._cli_recover import add_recover_command, recover_command
from ._cli_run import UsageError, add_journal_option, drive, final_outputs, load_module

if TYPE_CHECKING:
    import argparse

    from dagvisor.supervisor import Run, RunResult, Runtime

__all__ = ["add_journal_commands", "journal_command"]

SUMMARY_ROWS = 10
"""How many final outputs and failures `show` lists unless asked for all."""

_COMMANDS = ("runs", "show", "audit", "lineage", "graph", "report", "resume", "recover")


def add_journal_commands(sub: Any) -> None:
    """Declare the journal commands on the parser's subcommands."""
    runs = sub.add_parser("runs", help="list the runs in a journal")
    show = sub.add_parser("show", help="a run's states, timings and failures")
    audit = sub.add_parser("audit", help="a run's graph changes: who, when, why")
    lineage = sub.add_parser("lineage", help="where a stage came from, what it read")
    graph = sub.add_parser("graph", help="a run's final graph as Mermaid or DOT")
    report = sub.add_parser("report", help="write a self-contained HTML report")
    resume = sub.add_parser(
        "resume",
        help="go on with a crashed, cancelled or failed run",
        description="Resume a run from its journal: finished stages keep their "
        "outputs, the rest run. The stage functions must be importable: name "
        "the modules or files that define them with --with.",
    )
    for parser in (show, audit, lineage, graph, report, resume):
        parser.add_argument(
            "run_id", metavar="RUN_ID", help="a run id or a unique prefix"
        )
    lineage.add_argument("stage", metavar="STAGE")
    audit.add_argument("--since", help="ISO 8601 time or seconds since the epoch")
    audit.add_argument("--until", help="ISO 8601 time or seconds since the epoch")
    audit.add_argument("--stage", help="only the changes that name this stage")
    show.add_argument("--tracebacks", action="store_true", help="full tracebacks")
    show.add_argument(
        "--outputs",
        action="store_true",
        help=f"list every final output (default: the first {SUMMARY_ROWS})",
    )
    show.add_argument(
        "--failures",
        action="store_true",
        help=f"list every failure (default: the first {SUMMARY_ROWS})",
    )
    add_output_options(show)
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.add_argument("-o", "--output", help="write to this file, not stdout")
    report.add_argument(
        "-o", "--output", help="the HTML file (default report-RUN.html)"
    )
    resume.add_argument(
        "--with",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module or .py file defining the run's stages (repeatable)",
    )
    resume.add_argument(
        "--on-failure", choices=("cancel", "continue"), default="cancel"
    )
    resume.add_argument(
        "--codec",
        choices=BUILT_IN,
        default=None,
        help="the codec the run was journaled with (default: the built-in one it "
        "names; pickle only if given here)",
    )
    for parser in (runs, show, audit, lineage, graph, report, resume):
        add_journal_option(parser, required=True)
        parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_recover_command(sub)


def journal_command(args: argparse.Namespace) -> int | None:
    """Run a journal command; its exit code, or None if ``args`` is not one."""
    if args.command not in _COMMANDS:
        return None
    if args.command == "recover":
        return recover_command(args)
    try:
        if args.command == "resume":
            return _resume(args)
        return _read_command(args)
    except (UsageError, DagvisorError, OSError) as exc:
        if args.debug:
            raise
        print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
        return 2


def _read_command(args: argparse.Namespace) -> int:
    try:
        return _read(args)
    except (UsageError, DagvisorError, OSError):
        raise
    except Exception as exc:  # what no check foresaw in a file: one line, exit 2
        msg = (
            f"cannot read run {getattr(args, 'run_id', '')!r} of {args.journal}: "
            f"{type(exc).__name__}: {exc}; --debug shows where"
        )
        raise UsageError(msg) from exc


def _read(args: argparse.Namespace) -> int:
    with Journal(args.journal, readonly=True) as journal:
        if args.command == "runs":
            _print_runs(journal)
            return 0
        run_id = journal.find_run(args.run_id)
        # The attempts of the one stage asked for, or none: each stage's
        # events would take memory in proportion to the run.
        attempts = args.stage if args.command == "lineage" else False
        result = result_from_journal(
            journal.load(run_id), registry=default_registry, attempts=attempts
        )
    match args.command:
        case "show" if args.output_stage is not None or args.json:
            print(output_text(result, args.output_stage, as_json=args.json))
        case "show":
            _print_show(
                result,
                tracebacks=args.tracebacks,
                outputs=None if args.outputs else SUMMARY_ROWS,
                failures=None if args.failures else SUMMARY_ROWS,
            )
        case "audit":
            _print_audit(result, args)
        case "lineage":
            print(result.lineage(args.stage))
        case "graph":
            text = result.to_mermaid() if args.format == "mermaid" else result.to_dot()
            if args.output:
                _write(args.output, text, args.journal)
                print(f"wrote {one_line(args.output)}")
            else:
                print(text, end="")
        case "report":
            path = args.output or f"report-{run_id[:8]}.html"
            _write(path, result.to_html(), args.journal)
            print(f"wrote {one_line(path)}")
    return 0


def _write(path: str, text: str, journal: str) -> None:
    """Write an output file, never over the journal it was read from."""
    target = os.path.realpath(path)
    base = os.path.realpath(journal)
    for kept in (base, f"{base}-wal", f"{base}-shm", f"{base}-journal"):
        if target == kept or (
            os.path.exists(target)
            and os.path.exists(kept)
            and os.path.samefile(target, kept)  # a hard link too
        ):
            msg = f"{path} is the journal being read; give another file to write"
            raise UsageError(msg)
    write_file(path, text)


def _time(wall: Any) -> str:
    """A journal time as UTC, to the second; what is no time is shown as it is."""
    if wall is None:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return one_line(repr(wall))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: object) -> str:
    return one_line(value if isinstance(value, str) else repr(value))


def _print_runs(journal: Journal) -> None:
    rows = journal.runs()
    if not rows:
        print(f"no runs in {one_line(str(journal.path))}")
        return
    print(f"{'RUN ID':32}  {'STATUS':11}  {'STARTED (UTC)':19}  {'EVENTS':>7}  NAME")
    for row in rows:
        status = row["status"] if row["status"] != "running" else "interrupted"
        events = row["events"]
        shown = f"{events:,}" if isinstance(events, int) else _cell(events)
        print(
            f"{_cell(row['run_id']):32}  {_cell(status):11}  "
            f"{_time(row['created']):19}  {shown:>7}  {_cell(row['name'])}"
        )


def _print_show(
    result: RunResult, *, tracebacks: bool, outputs: int | None, failures: int | None
) -> None:
    """A run's summary: its figures, slowest stages, first final outputs and
    failures (``outputs``, ``failures``: how many; None for all), interruptions."""
    stats = result.stats
    print(f"run {one_line(result.run_id)} of {result.name!r}: {result.status}")
    print(
        f"  started {_time(stats.started_at)} UTC, {stats.duration:.3f} s"
        + stopped_text(result)
    )
    counts = ", ".join(
        f"{state.value} {count:,}" for state, count in stats.counts.items() if count
    )
    print(f"  {stats.stages:,} stages ({stats.added:,} added at run time): {counts}")
    accepted = sum(1 for record in result.audit if record.accepted)
    print(f"  {len(result.audit):,} changes: {accepted:,} accepted")
    _print_queue(result)
    ran = [
        (timing.duration, name)
        for name, timing in result.timings.items()
        if timing.started is not None
    ]
    if ran:
        print("  slowest stages (run time):")
        for duration, name in sorted(ran, reverse=True)[:5]:
            print(f"    {one_line(name)}: {duration:.3f} s{_waited(result, name)}")
    finals = final_outputs(
        result, limit=outputs, more=" (dagvisor show --outputs lists them all)"
    )
    if finals:
        print("  final outputs:")
        for line in finals:
            print("  " + line)
    if result.errors:
        print("  failures:")
        errors = list(result.errors.items())
        for name, error in errors if failures is None else errors[:failures]:
            print(f"    {one_line(name)}: {one_line(str(error))}")
            trace = getattr(error, "traceback", None)
            if tracebacks and trace:
                print("      " + trace.rstrip().replace("\n", "\n      "))
        if failures is not None and len(errors) > failures:
            print(
                f"    ... and {len(errors) - failures:,} more "
                "(dagvisor show --failures lists them all)"
            )
    for line in history_lines(result):
        print(line)
    if result.status == "interrupted":
        print(
            "  the journal does not say this run ended: it crashed (resume it with "
            "dagvisor resume) or it is still going elsewhere"
        )


def _print_queue(result: RunResult) -> None:
    """Queue time apart from run time: how many stages waited for room, how long."""
    stats = result.stats
    queue = stats.queue_latency
    if queue is None or not len(queue):
        return
    print(
        f"  {len(queue):,} stages queued for a slot or a limit, "
        f"{queue.total:.3f} s in all (median {queue.p50:.3f} s, longest "
        f"{queue.max:.3f} s); stages ran {stats.run_time:.3f} s in all"
    )


def _waited(result: RunResult, name: str) -> str:
    """`` (queued N s)`` for a stage that waited for room before it ran."""
    waited = result.timings[name].queue_time
    return f" (queued {waited:.3f} s)" if waited > 0 else ""


def _moment(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        msg = (
            f"{flag} must be an ISO 8601 time or seconds since the epoch, not {text!r}"
        )
        raise UsageError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _print_audit(result: RunResult, args: argparse.Namespace) -> None:
    since = _moment(args.since, "--since")
    until = _moment(args.until, "--until")
    # Every change naming the stage, whatever became of it (removed,
    # replaced, dropped): through the audit's per-stage index.
    records = result.audit if args.stage is None else result.lineage(args.stage).changes
    lines = [(record.wall_time, one_line(str(record))) for record in records]
    if args.stage is None:  # the run's interruptions and resumes, in time order
        lines = sorted([*lines, *history_events(result)], key=lambda line: line[0])
    shown = 0
    for wall, text in lines:
        if since is not None and wall < since:
            continue
        if until is not None and wall > until:
            continue
        print(f"{_time(wall)} UTC  {text}")
        shown += 1
    if not shown:
        print("no changes match")


def _codec_of(journal: Journal, run_id: str) -> str | None:
    """The built-in codec the run was journaled with, to resume it with (None: json,
    or a codec of the user's, which the resumed code must set up itself)."""
    codec = journal.load(run_id).pipeline.get("codec")
    return codec if codec in BUILT_IN and codec != "pickle" else None


def _resume(args: argparse.Namespace) -> int:
    if not args.modules:
        msg = (
            "resume needs the code of the run's stages: name the modules or files "
            "that define them with --with (the journal never names code to import)"
        )
        raise UsageError(msg)
    with Journal(args.journal, readonly=True) as journal:
        run_id = journal.find_run(args.run_id)
        if args.codec is None:
            args.codec = _codec_of(journal, run_id)
    for where in args.modules:
        load_module(where.rpartition(":")[0] if ":" in where else where)

    async def start(rt: Runtime) -> Run:
        return await rt.start_resumed(run_id)

    return drive(start, args, args.journal, resume_with=args.modules)
