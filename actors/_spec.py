"""Stage specifications and the `@stage` decorator.

A `StageSpec` is an immutable description of one unit of work: the function
and the options that say how to run it. It holds no run state, so one spec may
appear in many pipelines (under different names) and many runs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from types import FunctionType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final, overload

import attrs

from ._errors import InvalidStageError
from ._executors import Executor, function_reference
from ._registry import default_registry, function_key

if TYPE_CHECKING:
    from ._context import StageContext

__all__ = [
    "ExecutorChoice",
    "Predicate",
    "StageFunction",
    "StageSpec",
    "Trigger",
    "stage",
]

StageFunction: TypeAlias = (
    Callable[["StageContext"], Awaitable[Any]] | Callable[["StageContext"], Any]
)
"""What a stage runs: ``async def f(ctx)``, or a plain ``def f(ctx)``."""

Predicate: TypeAlias = (
    Callable[["StageContext"], bool] | Callable[["StageContext"], Awaitable[bool]]
)
"""A ``when`` predicate: ``def p(ctx) -> bool`` or ``async def p(ctx) -> bool``
(awaited, on the event loop, just before the stage would start)."""

Trigger: TypeAlias = Literal["all_succeeded", "none_failed"]
"""When a stage may run, given how its dependencies ended.

``"all_succeeded"`` (the default): every dependency succeeded; a skipped
dependency skips this stage too. ``"none_failed"``: every dependency
succeeded or was skipped; skipped ones are simply absent from ``ctx.inputs``
(the join after a ``when=`` branch).
"""

ExecutorChoice: TypeAlias = "Literal['loop', 'thread', 'process'] | Executor"
"""Where a stage body runs: the event loop, a thread, a process, or an
`Executor` such as `DaskExecutor` (see `dagvisor.actors._executors`)."""

_TRIGGERS = ("all_succeeded", "none_failed")
_EXECUTORS = ("loop", "thread", "process")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not str.strip(name):
        msg = f"a stage name must be a non-empty string, not {name!r}"
        raise InvalidStageError(msg)
    # A str subclass may redefine __eq__ and __hash__: keep the plain string.
    return name if type(name) is str else str.__str__(name)


_ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR
_GENERATOR = inspect.CO_GENERATOR


def _shown(fn: Any) -> str:
    return repr(getattr(fn, "__qualname__", None) or fn)


def _flags(fn: Any) -> int:
    """The code flags that say what calling ``fn`` gives: a coroutine, a generator...

    A plain function's own flags (the common case, read directly: declaring
    a stage must stay cheap); otherwise the flags of what ``inspect`` finds
    behind it, or of an object's ``__call__``.
    """
    if type(fn) is FunctionType:
        flags: int = fn.__code__.co_flags
        return flags
    flags = _inspected_flags(fn)
    if flags or isinstance(fn, type) or inspect.isroutine(fn):
        return flags
    # An object with a __call__ method: one level down, never further (a
    # __call__ that is itself such an object would otherwise loop forever).
    return _inspected_flags(type(fn).__call__)


def _inspected_flags(fn: Any) -> int:
    flags = 0
    if inspect.iscoroutinefunction(fn):
        flags |= inspect.CO_COROUTINE
    if inspect.isasyncgenfunction(fn):
        flags |= _ASYNC_GENERATOR
    if inspect.isgeneratorfunction(fn):
        flags |= _GENERATOR
    return flags


def _is_async(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine to await (``async def``, also a method)."""
    return bool(_flags(fn) & inspect.CO_COROUTINE)


def _takes_one_argument(fn: Any) -> bool | None:
    """Whether ``fn(ctx)`` binds; None when it cannot be told (no signature)."""
    if type(fn) is FunctionType:  # from the code object: inspect.signature is slow
        code = fn.__code__
        required_keywords = code.co_kwonlyargcount - len(fn.__kwdefaults__ or ())
        if required_keywords > 0:
            return False
        if code.co_argcount == 0:
            return bool(code.co_flags & inspect.CO_VARARGS)
        return code.co_argcount - len(fn.__defaults__ or ()) <= 1
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return False
    except (ValueError, RecursionError):
        # No signature (some builtins), or inspect loops on an odd __call__:
        # find out at run time.
        return None
    return True


def _check_options(
    fn: Any,
    *,
    retries: int,
    backoff: float,
    timeout: float | None,
    when: Any,
    trigger: str,
    executor: object,
) -> None:
    if not callable(fn):
        msg = f"@stage needs a function taking one argument (ctx), not {fn!r}"
        raise InvalidStageError(msg)
    if _takes_one_argument(fn) is False:
        msg = (
            f"stage function {_shown(fn)} must accept exactly "
            "one positional argument, the stage context: def f(ctx): ..."
        )
        raise InvalidStageError(msg)
    flags = _flags(fn)
    if flags & (_ASYNC_GENERATOR | _GENERATOR):
        kind = "an async generator" if flags & _ASYNC_GENERATOR else "a generator"
        msg = (
            f"stage function {_shown(fn)} is {kind} (a function with `yield`): "
            "calling it runs none of its body, so the stage would succeed without "
            "doing its work; return the value instead (collect what it yields "
            "into a list)"
        )
        raise InvalidStageError(msg)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        msg = f"retries must be a whole number >= 0, not {retries!r}"
        raise InvalidStageError(msg)
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, int | float)
        or not math.isfinite(backoff)
        or backoff < 0
    ):
        msg = f"backoff must be a number of seconds >= 0, not {backoff!r}"
        raise InvalidStageError(msg)
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout <= 0
    ):
        msg = f"timeout must be a number of seconds > 0 or None, not {timeout!r}"
        raise InvalidStageError(msg)
    if when is not None:
        if not callable(when):
            msg = f"when must be a predicate taking the stage context, not {when!r}"
            raise InvalidStageError(msg)
        if _flags(when) & (_ASYNC_GENERATOR | _GENERATOR):
            msg = (
                f"when={_shown(when)} is a generator (a function with `yield`): it "
                "must return true or false (an async predicate is awaited)"
            )
            raise InvalidStageError(msg)
    if not isinstance(trigger, str) or trigger not in _TRIGGERS:
        msg = f"trigger must be one of {_TRIGGERS}, not {trigger!r}"
        raise InvalidStageError(msg)
    if executor is None:
        return
    named = isinstance(executor, str)
    if (named and executor not in _EXECUTORS) or (
        not named and not isinstance(executor, Executor)
    ):
        msg = (
            f"executor must be one of {_EXECUTORS} or an Executor such as "
            f"DaskExecutor, not {executor!r}"
        )
        raise InvalidStageError(msg)
    on_loop = named and executor == "loop"  # never calls an Executor's __eq__
    if not on_loop and flags & inspect.CO_COROUTINE:
        msg = (
            f"stage {_shown(fn)} is `async def`: it runs on the "
            f"event loop, not on executor {executor!r}; make it a plain function, or "
            "keep it async and call `await ctx.run_in(executor, fn, ...)` for the heavy part"
        )
        raise InvalidStageError(msg)
    if on_loop and not flags & inspect.CO_COROUTINE:
        msg = (
            f"stage {_shown(fn)} is a plain function and would "
            "block the event loop; make it `async def` or use executor='thread'"
        )
        raise InvalidStageError(msg)


@final
@attrs.frozen(kw_only=True)
class StageSpec:
    """An immutable description of a stage: what to run and how.

    Two specs are equal when they run the same function under the same name
    with the same options; re-adding an equal spec is idempotent.

    Build one with `stage`; derive variants with `named` or `options`.

    Attributes:
        fn: the stage function, ``async def f(ctx)`` or ``def f(ctx)``.
        name: the stage's name in a pipeline (unique within a run).
        retries: how many times a failed attempt is run again.
        backoff: seconds before the first retry, doubled for each later one.
        timeout: seconds one attempt may take; past it the attempt fails.
        when: a predicate on the stage context; when false the stage is skipped.
        trigger: when the stage may run given how its dependencies ended.
        executor: ``"loop"`` for ``async def``; for a plain function
            ``"thread"``, ``"process"``, an `Executor` (`DaskExecutor`), or
            None for the runtime's default (``runtime(executor=...)``).
    """

    fn: StageFunction
    name: str
    retries: int = 0
    backoff: float = 0.0
    timeout: float | None = None
    when: Predicate | None = None
    trigger: Trigger = "all_succeeded"
    executor: ExecutorChoice | None = "loop"
    simple: bool = attrs.field(init=False, eq=False, repr=False)
    """Whether one attempt on the event loop is all there is (no retry, no timer)."""

    def __attrs_post_init__(self) -> None:
        simple = self.is_async and self.retries == 0 and self.timeout is None
        object.__setattr__(self, "simple", simple)

    @property
    def is_async(self) -> bool:
        """Whether the body runs on the event loop (an ``async def``)."""
        executor = self.executor
        return isinstance(executor, str) and executor == "loop"

    def named(self, name: str) -> StageSpec:
        """Return the same stage under another name.

        Example:
            >>> Pipeline.chain(step.named(f"step{i}") for i in range(3))  # doctest: +SKIP
        """
        # Options were checked when this spec was made; only the name is new.
        # (The constructor directly: attrs.evolve costs several times more, and
        # naming specs in a loop is common.)
        return StageSpec(
            fn=self.fn,
            name=_check_name(name),
            retries=self.retries,
            backoff=self.backoff,
            timeout=self.timeout,
            when=self.when,
            trigger=self.trigger,
            executor=self.executor,
        )

    def options(self, **changes: Any) -> StageSpec:
        """Return a copy with some options changed (same keywords as `stage`)."""
        merged = attrs.asdict(self, recurse=False)
        del merged["simple"]
        merged.update(changes)
        return _make_spec(**merged)


def _make_spec(
    fn: Any,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 0.0,
    timeout: float | None = None,
    when: Predicate | None = None,
    trigger: str = "all_succeeded",
    executor: str | None = None,
) -> StageSpec:
    if isinstance(fn, StageSpec):
        msg = f"{fn.name!r} is already a stage; use spec.options(...) to change it"
        raise InvalidStageError(msg)
    _check_options(
        fn,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        when=when,
        trigger=trigger,
        executor=executor,
    )
    if name is None:
        name = getattr(fn, "__name__", None)
        if name is None or name == "<lambda>":
            msg = f"cannot name the stage {fn!r} after its function; pass name=..."
            raise InvalidStageError(msg)
    if executor is None and _is_async(fn):
        executor = "loop"
    if not isinstance(executor, str | None) or executor == "process":
        # It will leave the process: refuse what cannot be shipped, now.
        function_reference(fn, name)
    for registrable in (fn, when):  # so that a journaled run can find them again
        if registrable is not None and function_key(registrable) is not None:
            default_registry.register(registrable)
    return StageSpec(
        fn=fn,
        name=_check_name(name),
        retries=retries,
        backoff=float(backoff),
        timeout=None if timeout is None else float(timeout),
        when=when,
        trigger=trigger,  # type: ignore[arg-type]  # checked against _TRIGGERS above
        executor=executor,  # type: ignore[arg-type]  # checked against _EXECUTORS above
    )


@overload
def stage(fn: StageFunction, /) -> StageSpec: ...
@overload
def stage(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 0.0,
    timeout: float | None = None,
    when: Predicate | None = None,
    trigger: Trigger = "all_succeeded",
    executor: ExecutorChoice | None = None,
) -> Callable[[StageFunction], StageSpec]: ...


def stage(
    fn: StageFunction | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 0.0,
    timeout: float | None = None,
    when: Predicate | None = None,
    trigger: Trigger = "all_succeeded",
    executor: ExecutorChoice | None = None,
) -> StageSpec | Callable[[StageFunction], StageSpec]:
    """Declare a stage, with or without options.

    Example:
        >>> @stage
        ... async def fetch(ctx):
        ...     return [3, 1, 2]
        >>> @stage(retries=2, timeout=5.0)
        ... async def score(ctx):
        ...     return sum(ctx.inputs["fetch"])

    Args:
        fn: the stage function (when used without parentheses).
        name: the stage's name; defaults to the function's name.
        retries: how many times a failed attempt is run again (default 0).
        backoff: seconds before the first retry, doubled for each later one.
        timeout: seconds one attempt may take; past it the attempt fails with
            `StageTimeoutError` (and is retried if retries are left).
        when: predicate on the stage context, evaluated just before the stage
            would start; when it returns false the stage is skipped. An
            ``async def`` predicate (or one returning an awaitable) is awaited.
        trigger: ``"all_succeeded"`` or ``"none_failed"`` (see `Trigger`).
        executor: ``"loop"``, ``"thread"``, ``"process"`` or an `Executor`
            such as `DaskExecutor` (plain functions only); defaults to ``"loop"`` for
            ``async def`` and to the runtime's default (``runtime(executor=...)``,
            ``"thread"`` unless set) for plain functions.

    Raises:
        InvalidStageError: an option cannot work; the message says which.
    """
    options: dict[str, Any] = {
        "name": name,
        "retries": retries,
        "backoff": backoff,
        "timeout": timeout,
        "when": when,
        "trigger": trigger,
        "executor": executor,
    }
    if fn is not None:
        return _make_spec(fn, **options)

    def decorate(fn: StageFunction) -> StageSpec:
        return _make_spec(fn, **options)

    return decorate
