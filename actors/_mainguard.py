"""The ``if __name__ == "__main__":`` guard that worker processes need.

Worker processes started with the ``spawn`` (or ``forkserver``) method, as
trio-parallel's and a local Dask cluster's are, begin by importing the main
script again, under the name ``__mp_main__``. A script that starts a run at
its top level, unguarded, would make every worker run the pipeline again,
and every worker's own workers too: a storm of processes while the parent
waits. Both sides are checked, cheaply:

* In the parent, before a stage body is sent to a worker process:
  `check_main_guard` finds the main script's top-level frame on the stack
  (the line that is running it, necessarily the one that led to this run)
  and, from the script's syntax tree (parsed once), whether that line is
  under the guard. When it cannot tell (no script, no source, the frame not
  found) it lets the run go on: a refusal must never be a false alarm.
* In a worker, while it is still importing the script: `refuse_in_bootstrap`
  (called when a runtime opens) stops the import before any stage runs
  again, whatever started the worker.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import TYPE_CHECKING

from ._stage_errors import MissingMainGuardError

if TYPE_CHECKING:
    from types import FrameType, ModuleType

__all__ = ["check_main_guard", "refuse_in_bootstrap"]


def check_main_guard() -> None:
    """Refuse to start a worker that would run this run's pipeline again.

    Raises:
        MissingMainGuardError: the main script starts this run from a line
            outside ``if __name__ == "__main__":``.
    """
    main = sys.modules.get("__main__")
    path = _script_of(main)
    if main is None or path is None:
        return
    frame = _top_level_frame(main)
    if frame is None:
        return
    guarded = _guarded_lines(path)
    if guarded is None:
        return
    line = frame.f_lineno
    if not any(first <= line <= last for first, last in guarded):
        raise MissingMainGuardError(path, line, in_worker=False)


def refuse_in_bootstrap() -> None:
    """Refuse to open a runtime while this process imports the main script as a worker.

    Raises:
        MissingMainGuardError: this process is a worker that multiprocessing
            is still starting, and the main script it imports opens a runtime
            at its top level.
    """
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return  # not imported: this process was not started by it
    # The flag multiprocessing itself checks to refuse starting a process
    # from a worker that is still importing the main module.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        main = sys.modules.get("__main__")
        path = _script_of(main) or str(getattr(main, "__name__", "__main__"))
        frame = None if main is None else _top_level_frame(main)
        raise MissingMainGuardError(
            path, None if frame is None else frame.f_lineno, in_worker=True
        )


def _script_of(main: ModuleType | None) -> str | None:
    """The file a spawned worker runs again, or None when it runs none."""
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and (name == "__main__" or name.endswith(".__main__")):
        return None  # `python -m package`: workers do not import it again
    path = getattr(main, "__file__", None)
    return path if isinstance(path, str) else None


def _top_level_frame(main: ModuleType) -> FrameType | None:
    """The frame running the main script's top-level code, if it still runs."""
    namespace = main.__dict__
    # This thread's stack first (trio.run called by the script: the common
    # case), then the main thread's (trio.run in a thread the script started).
    current: FrameType | None = sys._getframe(1)
    looked_at_main_thread = False
    while True:
        while current is not None:
            if current.f_code.co_name == "<module>" and current.f_globals is namespace:
                return current
            current = current.f_back
        if (
            looked_at_main_thread
            or threading.current_thread() is threading.main_thread()
        ):
            return None
        looked_at_main_thread = True
        current = sys._current_frames().get(threading.main_thread().ident or 0)


@functools.lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...] | None:
    """The line ranges of ``path`` that only run under ``__name__ == "__main__"``.

    None when the file cannot be read or parsed: then nothing is refused.
    """
    try:
        with open(path, "rb") as source:
            tree = ast.parse(source.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    ranges: list[tuple[int, int]] = []
    # Module-level statements only (a guard inside a function guards nothing
    # at import time); an explicit stack, as everywhere in dagvisor.
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(node, ast.If):
            guard = _guard_kind(node.test)
            if guard is not None:
                block = node.body if guard else node.orelse
                if block:
                    last = block[-1]
                    ranges.append((block[0].lineno, last.end_lineno or last.lineno))
                stack.extend(node.orelse if guard else node.body)
                continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                stack.extend(child for child in children if isinstance(child, ast.stmt))
            if field == "handlers" and isinstance(children, list):
                for handler in children:
                    stack.extend(handler.body)
        if isinstance(node, ast.Match):
            for case in node.cases:
                stack.extend(case.body)
    return tuple(ranges)


def _guard_kind(test: ast.expr) -> bool | None:
    """True for ``__name__ == "__main__"`` (also within ``and``), False for ``!=``."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        kinds = {_guard_kind(value) for value in test.values} - {None}
        return True if True in kinds else None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    if not (names and mains):
        return None
    if isinstance(test.ops[0], ast.Eq):
        return True
    if isinstance(test.ops[0], ast.NotEq):
        return False
    return None
