"""``dagvisor run TARGET``: run a pipeline from a module or a file, with progress.

Exit codes: 0 when the run succeeded, 1 when it failed (or was cancelled),
2 for bad usage (a wrong path, a module without that attribute, bad
``--inputs``), 130 after Ctrl-C, which cancels the run cleanly: every stage
is stopped and its resources closed before the command returns. SIGTERM (what
``kill`` and service managers send) cancels it the same way, with the signal
as the cancel's reason in the journal's audit trail, and exits 143 (128 + 15,
as a shell reports a process that SIGTERM ended). After either, a journaled
run is told how to go on.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from dagvisor._cli_io import one_line, raw_stream, shell_command
from dagvisor._cli_signals import SIGINT_REASON, say_interrupted, wait_unless_signalled
from dagvisor.actors import DagvisorError, Pipeline, RunFailed, StreamedPipeline
from dagvisor.actors._datacodec import BUILT_IN
from dagvisor.actors._dataforms import data_kind, summary
from dagvisor.supervisor import Progress, Run, RunResult, Runtime, runtime

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable
    from types import ModuleType

__all__ = [
    "UsageError",
    "add_journal_option",
    "add_run_command",
    "drive",
    "final_outputs",
    "load_module",
    "progress_display",
    "run_command",
]


class UsageError(Exception):
    """Bad usage: reported in one line, exit code 2."""


def add_run_command(sub: Any) -> None:
    """Declare ``dagvisor run`` on the parser's subcommands."""
    run = sub.add_parser(
        "run",
        help="run a pipeline: module:attribute or path/to/file.py:attribute",
        description="Run a pipeline with live progress. Exit 0 on success, "
        "1 on a failed run, 2 on bad usage, 130 after Ctrl-C, 143 after SIGTERM "
        "(both cancel the run cleanly).",
    )
    run.add_argument("target", help="module:attribute or path/to/file.py:attribute")
    run.add_argument("--inputs", default="{}", help="the run's inputs as a JSON object")
    run.add_argument("--on-failure", choices=("cancel", "continue"), default="cancel")
    run.add_argument(
        "--codec",
        choices=BUILT_IN,
        default=None,
        help="how outputs are journaled: json (the default), data (numpy arrays "
        "as .npy, pandas and Arrow tables as Arrow IPC, the rest as JSON), pickle",
    )
    add_journal_option(run, required=False)
    run.add_argument(
        "--serve",
        metavar="ADDR",
        help="serve the control API at HOST:PORT while the run goes (needs --tokens)",
    )
    run.add_argument("--tokens", metavar="FILE", help="the control API's token file")
    run.add_argument("--debug", action="store_true", help="show tracebacks")


def add_journal_option(parser: Any, *, required: bool) -> None:
    """``--journal PATH``, defaulting to $DAGVISOR_JOURNAL."""
    default = os.environ.get("DAGVISOR_JOURNAL")
    parser.add_argument(
        "--journal",
        default=default,
        required=required and default is None,
        metavar="PATH",
        help="the SQLite journal (default: $DAGVISOR_JOURNAL)"
        + ("" if required else "; runs are journaled and resumable when given"),
    )


def load_module(where: str) -> ModuleType:
    """Import a module by name, or load a ``.py`` file (as `dagvisor run` does).

    A file is loaded under the same module name each time, so the stage
    functions it registers have the same names when a run is resumed.
    """
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        if not path.is_file():
            msg = f"no such file: {where}"
            raise UsageError(msg)
        name = f"_dagvisor_target_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - not a .py file
            msg = f"cannot load {where} as Python"
            raise UsageError(msg)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))  # its own imports
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            msg = f"running {where} failed: {type(exc).__name__}: {exc}"
            raise UsageError(msg) from exc
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                msg = f"no module named {where!r}; is it on PYTHONPATH?"
                raise UsageError(msg) from exc
            msg = f"importing {where!r} failed: {type(exc).__name__}: {exc}"
            raise UsageError(msg) from exc
        except Exception as exc:
            msg = f"importing {where!r} failed: {type(exc).__name__}: {exc}"
            raise UsageError(msg) from exc
    return module


def load_pipeline(target: str) -> Pipeline | StreamedPipeline:
    """The pipeline named by ``module:attribute`` or ``file.py:attribute``."""
    where, colon, attribute = target.rpartition(":")
    if not colon or not where or not attribute:
        msg = f"TARGET must be module:attribute or path/to/file.py:attribute, not {target!r}"
        raise UsageError(msg)
    module = load_module(where)
    found = getattr(module, attribute, None)
    if found is None:
        pipelines = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, Pipeline | StreamedPipeline)
        )
        hint = f"; its pipelines: {', '.join(pipelines)}" if pipelines else ""
        msg = f"{where!r} has no attribute {attribute!r}{hint}"
        raise UsageError(msg)
    if not isinstance(found, Pipeline | StreamedPipeline):
        msg = f"{target} is a {type(found).__name__}, not a Pipeline"
        raise UsageError(msg)
    return found


def _parse_inputs(text: str) -> dict[str, Any]:
    try:
        inputs = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"--inputs is not valid JSON: {exc}"
        raise UsageError(msg) from exc
    if not isinstance(inputs, dict):
        msg = f"--inputs must be a JSON object, not {type(inputs).__name__}"
        raise UsageError(msg)
    return inputs


def _progress_line(progress: Progress) -> str:
    return (
        f"{progress.done:,}/{progress.stages:,} done, {progress.running:,} running, "
        f"{progress.queued:,} queued, "
        f"{progress.pending:,} pending, {progress.added:,} added at run time, "
        f"{progress.stages_per_second:,.0f} stages/s, {progress.elapsed:.1f} s, "
        f"RSS {progress.rss / 2**20:.0f} MB"
    )


def progress_display(
    stream: TextIO,
) -> tuple[Callable[[Progress], None], Callable[[], None]]:
    """A live line with rich on a terminal, else plain lines; and a closer."""
    if stream.isatty():
        try:
            from rich.console import Console  # the cli extra, optional
            from rich.live import Live
            from rich.text import Text
        except ImportError:
            pass
        else:
            # rich writes terminal escapes of its own: past the outlet that
            # escapes control characters in what the journal holds.
            live = Live(
                console=Console(file=raw_stream(stream)),
                auto_refresh=False,
                transient=False,
            )
            live.start()

            def show(progress: Progress) -> None:
                live.update(Text(_progress_line(progress)), refresh=True)

            return show, live.stop

    def plain(progress: Progress) -> None:
        print(_progress_line(progress), file=stream, flush=True)

    return plain, lambda: None


def final_outputs(
    result: RunResult, *, limit: int | None = None, more: str = ""
) -> list[str]:
    """One line per output no other stage consumed: the run's results.

    With ``limit``, only the first ``limit`` are shown (only those are
    formatted), then a line saying how many more there are, and ``more``.
    """
    consumed = {dep for deps in result.dependencies.values() for dep in deps}
    outputs = result.outputs
    finals = [
        name for name in result.dependencies if name not in consumed and name in outputs
    ]
    lines = []
    for name in finals if limit is None else finals[:limit]:
        shown = _repr(outputs[name])
        lines.append(
            f"  {one_line(name)} = "
            f"{shown if len(shown) <= 200 else shown[:197] + '...'}"
        )
    if limit is not None and len(finals) > limit:
        lines.append(f"  ... and {len(finals) - limit:,} more{more}")
    return lines


def _text(error: BaseException) -> str:
    """``str(error)`` on one line, or a note when its ``__str__`` fails."""
    try:
        return one_line(str(error))
    except Exception as exc:  # user code: any failure is shown, not raised
        return f"<its str() failed: {type(exc).__name__}>"


def _repr(value: Any) -> str:
    """``repr`` on one line, or a note when the value's ``__repr__`` fails.

    An array, a frame or a table is its summary's first line (its shape and
    types), not a repr of many lines.
    """
    try:
        if data_kind(value) is not None:
            return one_line(summary(value).partition("\n")[0])
        return one_line(repr(value))
    except Exception as exc:  # user code: any failure is shown, not raised
        return f"<{type(value).__name__} whose repr() failed: {type(exc).__name__}>"


def _summary(result: RunResult) -> str:
    stats = result.stats
    return (
        f"run {one_line(result.run_id)} {result.status}: {stats.stages:,} stages "
        f"({stats.added:,} added at run time), {stats.changes:,} changes, "
        f"{stats.duration:.2f} s"
    )


def run_command(args: argparse.Namespace) -> int:
    """``dagvisor run``; return the exit code."""
    try:
        pipeline = load_pipeline(args.target)
        inputs = _parse_inputs(args.inputs)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    journal = args.journal
    module = args.target.rpartition(":")[0]

    async def start(rt: Runtime) -> Run:
        return await rt.start(pipeline, inputs=inputs)

    return drive(start, args, journal, resume_with=[module])


def drive(
    start: Callable[[Runtime], Awaitable[Run]],
    args: argparse.Namespace,
    journal: str | None,
    *,
    resume_with: list[str],
) -> int:
    """Run what ``start`` starts with live progress; print the outcome; the exit code.

    After Ctrl-C or SIGTERM, a journaled run is told how to go on: a
    ``dagvisor resume`` command quoted for the shell, ready to paste.
    """
    show, close = progress_display(sys.stderr)
    started: list[Run] = []
    signalled: list[str] = []  # the name of the signal that cancelled the run

    async def main() -> RunResult:
        # Received from here on: a SIGTERM while the run starts cancels it
        # once it has started.
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with runtime(
                on_failure=args.on_failure,
                on_progress=show,
                monitor_interval=0.5,
                journal=journal,
                codec=getattr(args, "codec", None),
                serve=getattr(args, "serve", None),
                tokens=getattr(args, "tokens", None),
            ) as rt:
                run = await start(rt)
                started.append(run)
                if rt.url is not None:
                    print(
                        f"run {run.id}: control API on {rt.url}",
                        file=sys.stderr,
                        flush=True,
                    )
                if journal is not None:
                    print(
                        f"run {run.id} (journal {shell_command([journal])})",
                        file=sys.stderr,
                        flush=True,
                    )
                # Ctrl-C arrives here as KeyboardInterrupt: the run is
                # cancelled with the signal as the reason, and leaving the
                # runtime commits its journal, so it can be resumed. (Landing
                # elsewhere, in a stage, it cancels the run by leaving the
                # runtime, which the journal records as its task cancelled.)
                try:
                    return await wait_unless_signalled(run, signals, signalled)
                except* KeyboardInterrupt:
                    await run.cancel(reason=SIGINT_REASON)
                    raise

    try:
        result = trio.run(main)
    except (DagvisorError, OSError) as exc:
        close()
        if signalled and isinstance(exc, RunFailed):
            return say_interrupted(started, journal, resume_with, signalled[0])
        if isinstance(exc, RunFailed):
            return _failed(exc, args)
        if args.debug:
            raise
        print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except BaseException as exc:
        close()
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, BaseExceptionGroup)
            and exc.subgroup(KeyboardInterrupt) is not None
        )
        if not interrupted:
            raise
        return say_interrupted(started, journal, resume_with, "Ctrl-C")
    close()
    print(_summary(result))
    for line in final_outputs(result):
        print(line)
    return 0


def _failed(exc: RunFailed, args: argparse.Namespace) -> int:
    print(_summary(exc.result))
    if exc.journal_error is not None:
        print(f"  journal: {exc.journal_error}")
    for name, error in list(exc.errors.items())[:10]:
        print(f"  {one_line(name)}: {type(error).__name__}: {_text(error)}")
    if len(exc.errors) > 10:
        print(f"  ... and {len(exc.errors) - 10} more")
    if args.debug:
        raise exc
    return 1
