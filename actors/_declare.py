"""The `@stage` decorator: how a user declares a stage, with or without options.

It checks the options and builds the `StageSpec` through `make_spec`
(`_spec`), which `StageSpec.options` uses too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

from ._spec import make_spec

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._codec import Codec
    from ._spec import ExecutorChoice, Predicate, StageFunction, StageSpec, Trigger

__all__ = ["stage"]


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
    codec: Codec | str | None = None,
    persist: bool = True,
    limit: str | None = None,
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
    codec: Codec | str | None = None,
    persist: bool = True,
    limit: str | None = None,
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
        codec: how a journaled run writes this stage's output: a `Codec`, or
            a built-in one by name (``"data"``: numpy arrays as ``.npy``,
            DataFrames and Tables as Arrow; ``"json"``; ``"pickle"``).
            Defaults to the runtime's. The journal records which codec
            wrote each output, and reads it back with that one.
        persist: False keeps the output out of the journal: consumers get it
            in memory; a resume runs the stage again if a consumer that had
            not finished needs it.
        limit: the name of a concurrency limit the stage holds while it
            runs: ``runtime(limits={"db": 4})`` runs at most 4 stages naming
            ``"db"`` at once, across every run of the runtime. Waiting for it
            is queue time (the stage is ``queued``), never part of its
            timeout. A run naming a limit its runtime does not define is
            refused when it starts (`UnknownLimitError`).

    Raises:
        InvalidStageError: an option cannot work; the message says which.
    """

    def decorate(fn: StageFunction) -> StageSpec:
        return make_spec(
            fn,
            name,
            retries,
            backoff,
            timeout,
            when,
            trigger,
            executor,
            codec,
            persist,
            limit,
        )

    return decorate if fn is None else decorate(fn)
