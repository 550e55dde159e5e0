"""Where a stage body runs, and what travels to another process and back.

The stage actor always stays in the trio process; only the body moves.

* ``"loop"``: ``async def`` bodies, on the event loop.
* ``"thread"``: plain functions in a worker thread (`trio.to_thread`, bounded
  by ``runtime(thread_limit=...)``). The body gets the live `StageContext`
  (same process), and may change the graph through ``trio.from_thread``.
  Python cannot interrupt a thread: a cancellation or a timeout decides the
  outcome when the function returns, and its value is dropped.
* ``"process"``: plain functions in worker processes (trio-parallel, the
  ``process`` extra). The body gets a picklable `StageView`. Cancellation
  and timeouts kill the worker; a worker that dies fails the stage (retried
  if the stage has retries).
* `DaskExecutor` (``_dask``): plain functions on a ``dask.distributed``
  cluster. The body gets a `StageView`.

What travels (this module): a body that leaves the process is shipped as a
reference to its function (module and qualified name), resolved on the
worker; so it must be defined at module level, and `@stage` refuses a lambda
or a closure at once. The call is pickled once, here, into a `Job`, so that
whatever cannot be pickled is named (`NotPicklableError`); the worker runs it
with `run_packed` and pickles the outcome itself, so that a return value or
an exception that cannot come back is reported by name too (an exception
that cannot be pickled, or not be rebuilt, arrives as `RemoteError` with its
type name, message and traceback text).
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import traceback
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs

from ._errors import InvalidStageError
from ._stage_errors import NotPicklableError, RemoteError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "Executor",
    "Job",
    "StageView",
    "check_not_awaitable",
    "function_reference",
    "pack",
    "run_packed",
    "unpack",
    "view_parts",
]

_PROTOCOL = pickle.HIGHEST_PROTOCOL

# What a RemoteError keeps of a message and a traceback (characters): the
# end of a traceback (where it was raised), the start of a message.
_MESSAGE_KEPT = 16_000
_TRACEBACK_KEPT = 64_000
_LINE_KEPT = 2_000


@final
@attrs.frozen(kw_only=True)
class StageView:
    """What a body running in another process sees: a picklable snapshot.

    Attributes:
        name: the stage's name.
        inputs: upstream stage name to its output.
        run_inputs: the run's inputs.
        item: the mapped value (`expand`), or None.
        key: the mapped stage's key, or None.
        attempt: 0 for the first attempt, 1 for the first retry, ...
        idempotency_key: the same for every attempt of the stage in its run
            (see `StageContext.idempotency_key`).
        params: the stage's parameters (see `StageContext.params`).
    """

    name: str
    inputs: Mapping[str, Any]
    run_inputs: Mapping[str, Any]
    item: Any
    key: str | None
    attempt: int
    idempotency_key: str = ""
    params: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Executor(Protocol):
    """Runs a stage body elsewhere; `DaskExecutor` is one. Plug in your own."""

    async def run(self, body: Callable[[StageView], Any], view: StageView) -> Any:
        """Run ``body(view)`` and return its result (raise what it raised)."""
        ...


@final
@attrs.frozen
class _FunctionReference:
    """A picklable way to call a module-level stage function on a worker."""

    module: str
    qualname: str

    def resolve(self) -> Callable[..., Any]:
        """The function, looked up on this side (a worker imports its module)."""
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        fn: Callable[..., Any] = getattr(
            target, "fn", target
        )  # @stage left its spec there
        return fn

    def call(self, *args: Any) -> Any:
        """Call the function with ``args``."""
        return self.resolve()(*args)

    def __call__(self, view: StageView) -> Any:
        return self.resolve()(view)


def function_reference(fn: Callable[..., Any], stage_name: str) -> _FunctionReference:
    """A picklable reference to ``fn``, or `InvalidStageError` saying how to fix it."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<locals>" in qualname or "<lambda>" in qualname:
        msg = (
            f"stage {stage_name!r} runs in another process, so its function "
            f"{qualname or fn!r} must be defined at module level (not a lambda, "
            "a closure or a nested function)"
        )
        raise InvalidStageError(msg)
    return _FunctionReference(module, qualname)


def check_not_awaitable(stage: str, value: Any) -> Any:
    """``value``, unless a plain function returned something to await instead of working.

    Raises:
        InvalidStageError: ``value`` is a coroutine, an awaitable or an async
            generator: the body's work never ran.
    """
    if inspect.isawaitable(value) or inspect.isasyncgen(value):
        close = getattr(value, "close", None)
        if inspect.iscoroutine(value) and close is not None:
            close()  # it will never run; closing it spares a "never awaited" warning
        msg = (
            f"stage {stage!r} is a plain function but returned "
            f"{type(value).__name__} {_shown(value)} instead of a value: the work it "
            "stands for never ran; declare the stage `async def` (it then runs on "
            "the event loop), or return the value itself"
        )
        raise InvalidStageError(msg)
    return value


# -- what travels ------------------------------------------------------------------


@final
@attrs.frozen
class Job:
    """A call to make in another process, ``fn(*args)``, on behalf of ``stage``."""

    stage: str
    fn: _FunctionReference
    args: tuple[Any, ...]


def view_parts(view: StageView) -> Iterable[tuple[str, Any]]:
    """The parts of a view that may fail to pickle, each with its name."""
    yield from ((f"input {name!r}", value) for name, value in view.inputs.items())
    yield "the item", view.item
    yield from (
        (f"run input {name!r}", value) for name, value in view.run_inputs.items()
    )


def pack(job: Job, parts: Iterable[tuple[str, Any]]) -> bytes:
    """Pickle ``job`` once; name the part of ``parts`` that cannot be pickled.

    Raises:
        NotPicklableError: naming the first part that cannot be pickled.
    """
    try:
        return pickle.dumps(job, protocol=_PROTOCOL)
    except Exception as whole:
        for what, value in parts:  # the failure path only: find the culprit
            try:
                pickle.dumps(value, protocol=_PROTOCOL)
            except Exception as exc:
                raise NotPicklableError(job.stage, what, exc) from exc
        raise NotPicklableError(job.stage, "what it sends", whole) from whole


def unpack(stage: str, data: bytes) -> Any:
    """The value `run_packed` sent back, or raise the exception it sent back."""
    try:
        ok, value = pickle.loads(data)
    except Exception as exc:
        raise NotPicklableError(
            stage, "its return value (it could not be rebuilt here)", exc
        ) from exc
    if ok:
        return value
    raise value


def run_packed(payload: bytes) -> bytes:
    """Run a packed `Job` (in a worker process) and pack its outcome.

    Never raises for what the body does: the outcome travels as bytes, and
    an exception or a value that cannot travel is replaced, here, by a typed
    error saying what it was.
    """
    job: Job = pickle.loads(payload)
    try:
        value = check_not_awaitable(job.stage, job.fn.call(*job.args))
    except BaseException as exc:  # it is sent back, never swallowed
        return _pack_error(job.stage, exc)
    try:
        return pickle.dumps((True, value), protocol=_PROTOCOL)
    except Exception as exc:
        return _pack_error(
            job.stage, NotPicklableError(job.stage, "its return value", exc)
        )


def _pack_error(stage: str, exc: BaseException) -> bytes:
    try:
        _keep_traceback(exc)
        data = pickle.dumps((False, exc), protocol=_PROTOCOL)
        pickle.loads(data)  # the parent must be able to rebuild it, too
    except Exception:
        remote = RemoteError(
            stage,
            f"{type(exc).__module__}.{type(exc).__qualname__}",
            _kept(_message(exc), _MESSAGE_KEPT),
            _kept(_traceback_text(exc), _TRACEBACK_KEPT),
        )
        return pickle.dumps((False, remote), protocol=_PROTOCOL)
    return data


def _keep_traceback(exc: BaseException) -> None:
    """Let ``exc`` travel with its traceback (tblib, which both extras install)."""
    try:
        from tblib import pickling_support  # type: ignore[import-untyped]  # no stubs
    except ImportError:  # pragma: no cover - depends on the installation
        return
    pickling_support.install(exc)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a hostile __str__
        return "<its message could not be read>"


def _traceback_text(exc: BaseException) -> str:
    try:
        lines = traceback.format_exception(exc)
    except Exception:  # a hostile __str__ inside the chain
        lines = traceback.format_tb(exc.__traceback__)
    # A huge message must not push the frames out of what is kept.
    return "".join(_kept(line, _LINE_KEPT) for line in lines)


def _kept(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters (a traceback keeps its end)."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if limit == _TRACEBACK_KEPT:
        return f"[{cut} characters cut]\n{text[cut:]}"
    return f"{text[:limit]} [{cut} characters cut]"


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return ""
    return text if len(text) <= 80 else text[:77] + "..."
