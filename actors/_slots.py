"""Executor slots: room to run a body, taken before its timer starts.

A thread, a worker process or a Dask worker thread is a slot. An attempt
waits for one *before* its timeout starts (waiting in a queue is not the
attempt's own run) and gives it back only when the body has really ended:
a thread when its function returns (Python cannot interrupt it), a worker
process once it has been killed and reaped, a Dask task when it has ended
on its worker (`DaskExecutor`). So a retry never starts while the attempt
before it still occupies the slot, and never counts a queue against its
timeout.

Each slot is an async context manager yielding ``run(name, fn, *args)``,
which runs ``fn(*args)`` in that slot. `run_call` is ``ctx.run_in``: only
the function and its arguments travel.

Worker processes are bounded by ``runtime(process_workers=...)`` (a limiter
of the runtime's), or by trio-parallel's default limiter, one per CPU. A
stage's named limit (`_limits.Held`) is taken before its slot; a slot whose
body may outlive its attempt (Dask's) is handed the token too, and gives it
back with the slot.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._dask import DaskExecutor
from ._errors import InvalidRequestError, InvalidStageError
from ._executors import (
    Executor,
    Job,
    StageView,
    _FunctionReference,
    check_not_awaitable,
    function_reference,
    pack,
    run_packed,
    unpack,
)
from ._mainguard import check_main_guard

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ._limits import Held

__all__ = ["elsewhere_slot", "run_call", "thread_slot"]

_UNLIMITED: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "dagvisor_unlimited"
)


def _unlimited() -> trio.CapacityLimiter:
    """A limiter that never waits: the slot taken before is the real bound."""
    try:
        return _UNLIMITED.get()
    except LookupError:
        limiter = trio.CapacityLimiter(math.inf)
        _UNLIMITED.set(limiter)
        return limiter


@contextlib.asynccontextmanager
async def thread_slot(
    limiter: trio.CapacityLimiter,
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Take a thread of ``runtime(thread_limit=...)``; give it back when it ends."""
    # On behalf of a token of our own, not the task: a thread stage may call
    # ctx.run_in("thread", ...) through trio.from_thread, in this same task.
    borrower = object()
    await limiter.acquire_on_behalf_of(borrower)
    try:
        yield _in_thread
    finally:
        limiter.release_on_behalf_of(borrower)


async def _in_thread(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    # Not abandoned on cancel: the thread holds its slot until it returns.
    return await trio.to_thread.run_sync(
        _checked_call, name, fn, *args, limiter=_unlimited()
    )


def _checked_call(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return check_not_awaitable(name, fn(*args))


@contextlib.asynccontextmanager
async def _process_slot(
    limiter: trio.CapacityLimiter | None,
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    try:
        import trio_parallel  # an optional extra, imported when used
    except ImportError:  # pragma: no cover - depends on the installation
        msg = "executor='process' needs trio-parallel: pip install 'dagvisor[process]'"
        raise InvalidStageError(msg) from None
    check_main_guard()
    if limiter is None:
        limiter = trio_parallel.current_default_worker_limiter()
    borrower = object()
    await limiter.acquire_on_behalf_of(borrower)

    async def in_process(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        # Cancelling kills the worker; trio-parallel waits until it is reaped.
        return await trio_parallel.run_sync(
            fn, *args, kill_on_cancel=True, limiter=_unlimited()
        )

    try:
        yield in_process
    finally:
        limiter.release_on_behalf_of(borrower)


def elsewhere_slot(
    executor: object,
    process_limiter: trio.CapacityLimiter | None,
    held: Held | None = None,
) -> contextlib.AbstractAsyncContextManager[Callable[..., Awaitable[Any]]] | None:
    """The slot of ``"process"`` or a `DaskExecutor`; None for another `Executor`.

    ``held``, a named limit's token, goes with a Dask task (which may outlive
    its attempt); a worker process is reaped before its slot is left.
    """
    if isinstance(executor, str):
        return _process_slot(process_limiter) if executor == "process" else None
    if isinstance(executor, DaskExecutor):
        return executor._slot(held)
    return None


@attrs.frozen
class _Apply:
    """``fn(*args)``, called as executors call bodies (for a plugged-in `Executor`)."""

    fn: _FunctionReference
    args: tuple[Any, ...]

    def __call__(self, view: StageView) -> Any:
        return self.fn.call(*self.args)


async def run_call(
    executor: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    stage: str,
    thread_limiter: trio.CapacityLimiter,
    process_limiter: trio.CapacityLimiter | None,
    view: Callable[[], StageView],
) -> Any:
    """``ctx.run_in``: run ``fn(*args)`` on ``executor``; only they travel.

    Raises:
        NotPicklableError: naming the argument that cannot be pickled.
        InvalidRequestError: ``executor`` is not one.
    """
    named = isinstance(executor, str)
    if named and executor == "thread":
        async with thread_slot(thread_limiter) as run:
            return await run(stage, fn, *args)
    if not (named and executor == "process") and not isinstance(executor, Executor):
        msg = f"run_in needs 'thread', 'process' or an Executor, not {executor!r}"
        raise InvalidRequestError(msg)
    reference = function_reference(fn, stage)
    slot = elsewhere_slot(executor, process_limiter)
    if slot is None:  # a plugged-in Executor: it ships what it is given
        return await executor.run(_Apply(reference, args), view())
    shown = getattr(fn, "__name__", "fn")
    payload = pack(
        Job(stage, reference, args),
        ((f"argument {i} of run_in({shown})", arg) for i, arg in enumerate(args)),
    )
    async with slot as run:
        data = await run(stage, run_packed, payload)
    return unpack(stage, data)
