"""``dagvisor run TARGET``: run a pipeline from a module or a file, with progress.

Exit codes: 0 when the run succeeded, 1 when it failed (or was cancelled),
2 for bad usage (a wrong path, a module without that attribute, bad
``--inputs``), 130 after Ctrl-C, which cancels the run cleanly: every stage
is stopped and its resources closed before the command returns.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from dagvisor.actors import Pipeline, RunFailed, StreamedPipeline
from dagvisor.supervisor import Progress, RunResult, runtime

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["add_run_command", "run_command"]


class UsageError(Exception):
    """Bad usage: reported in one line, exit code 2."""


def add_run_command(sub: Any) -> None:
    """Declare ``dagvisor run`` on the parser's subcommands."""
    run = sub.add_parser(
        "run",
        help="run a pipeline: module:attribute or path/to/file.py:attribute",
        description="Run a pipeline with live progress. Exit 0 on success, "
        "1 on a failed run, 2 on bad usage, 130 after Ctrl-C.",
    )
    run.add_argument("target", help="module:attribute or path/to/file.py:attribute")
    run.add_argument("--inputs", default="{}", help="the run's inputs as a JSON object")
    run.add_argument("--on-failure", choices=("cancel", "continue"), default="cancel")
    run.add_argument("--debug", action="store_true", help="show tracebacks")


def load_pipeline(target: str) -> Pipeline | StreamedPipeline:
    """The pipeline named by ``module:attribute`` or ``file.py:attribute``."""
    where, colon, attribute = target.rpartition(":")
    if not colon or not where or not attribute:
        msg = f"TARGET must be module:attribute or path/to/file.py:attribute, not {target!r}"
        raise UsageError(msg)
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
        f"{progress.pending:,} pending, {progress.added:,} added at run time, "
        f"{progress.stages_per_second:,.0f} stages/s, {progress.elapsed:.1f} s, "
        f"RSS {progress.rss / 2**20:.0f} MB"
    )


def _progress_display(
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
            live = Live(
                console=Console(file=stream), auto_refresh=False, transient=False
            )
            live.start()

            def show(progress: Progress) -> None:
                live.update(Text(_progress_line(progress)), refresh=True)

            return show, live.stop

    def plain(progress: Progress) -> None:
        print(_progress_line(progress), file=stream, flush=True)

    return plain, lambda: None


def _final_outputs(result: RunResult) -> list[str]:
    finals = [
        name for name, deps in result.dependencies.items() if name in result.outputs
    ]
    consumed = {dep for deps in result.dependencies.values() for dep in deps}
    lines = []
    for name in finals:
        if name not in consumed:
            shown = repr(result.outputs[name])
            lines.append(
                f"  {name} = {shown if len(shown) <= 200 else shown[:197] + '...'}"
            )
    return lines


def _summary(result: RunResult) -> str:
    stats = result.stats
    return (
        f"run {result.run_id} {result.status}: {stats.stages:,} stages "
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
        print(f"dagvisor: error: {exc}", file=sys.stderr)
        return 2
    show, close = _progress_display(sys.stderr)

    async def main() -> RunResult:
        async with runtime(
            on_failure=args.on_failure, on_progress=show, monitor_interval=0.5
        ) as rt:
            return await rt.run(pipeline, inputs=inputs)

    try:
        result = trio.run(main)
    except RunFailed as exc:
        close()
        print(_summary(exc.result))
        for name, error in list(exc.errors.items())[:10]:
            print(f"  {name}: {type(error).__name__}: {error}")
        if len(exc.errors) > 10:
            print(f"  ... and {len(exc.errors) - 10} more")
        if args.debug:
            raise
        return 1
    except BaseException as exc:
        close()
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, BaseExceptionGroup)
            and exc.subgroup(KeyboardInterrupt) is not None
        )
        if not interrupted:
            raise
        print(
            "dagvisor: cancelled by Ctrl-C; every stage was stopped and its resources closed",
            file=sys.stderr,
        )
        return 130
    close()
    print(_summary(result))
    for line in _final_outputs(result):
        print(line)
    return 0
