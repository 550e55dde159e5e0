"""Stage specifications: what a stage runs and how, and making one from checked options.

A `StageSpec` is an immutable description of one unit of work: the function
and the options that say how to run it. It holds no run state, so one spec may
appear in many pipelines (under different names) and many runs. `make_spec`
checks a declaration's options and builds its spec; the `@stage` decorator
that users call is `_declare`'s.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from types import FunctionType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

import attrs

from ._callables import ASYNC, GENERATORS, binds_one, shown
from ._errors import InvalidStageError
from ._executors import function_reference
from ._params import EMPTY_PARAMS, check_params, params_key
from ._registry import default_registry
from ._stage_checks import (
    MOST_RETRIES,
    TRIGGERS,
    check_backoff,
    check_codec,
    check_executor,
    check_function,
    check_limit,
    check_name,
    check_persist,
    check_retries,
    check_timeout,
    check_trigger,
    check_when,
)

if TYPE_CHECKING:
    from ._codec import Codec
    from ._executors import Executor

__all__ = [
    "ExecutorChoice",
    "Predicate",
    "StageFunction",
    "StageSpec",
    "Trigger",
    "make_spec",
]

StageFunction: TypeAlias = Callable[[Any], Awaitable[Any]] | Callable[[Any], Any]
"""What a stage runs: ``async def f(ctx)``, or a plain ``def f(ctx)``."""

Predicate: TypeAlias = Callable[[Any], bool] | Callable[[Any], Awaitable[bool]]
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


def _shown_params(params: Mapping[str, Any]) -> str:
    return repr(dict(params)) if params else "{}"


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
        codec: how a journaled run writes this stage's output (a `Codec`),
            or None for the runtime's (``runtime(codec=...)``).
        persist: False to keep the output out of the journal (in memory for
            the stage's consumers only; a resume runs the stage again when
            a consumer that has not finished needs it).
        params: plain data the stage reads as ``ctx.params`` (see
            `with_params`); empty unless given.
        limit: the named concurrency limit the stage holds while it runs
            (``runtime(limits={name: N})`` runs at most N such stages at
            once, across the runtime's runs), or None.
    """

    fn: StageFunction
    name: str
    retries: int = 0
    backoff: float = 0.0
    timeout: float | None = None
    when: Predicate | None = None
    trigger: Trigger = "all_succeeded"
    executor: ExecutorChoice | None = "loop"
    codec: Codec | None = None
    persist: bool = True
    limit: str | None = None
    params: Mapping[str, Any] = attrs.field(
        default=EMPTY_PARAMS, repr=_shown_params, eq=False
    )
    params_key: str = attrs.field(init=False, repr=False)
    """The parameters as canonical JSON text: compared and hashed instead of them."""
    simple: bool = attrs.field(init=False, eq=False, repr=False)
    """Whether one attempt on the event loop is all there is (no retry, no
    timer, no limit)."""
    queues: bool = attrs.field(init=False, eq=False, repr=False)
    """Whether its first attempt may wait for room (a thread, a worker, a Dask
    slot, a limit): the stage is then ``queued`` until it has it."""

    def __attrs_post_init__(self) -> None:
        queues = not self.is_async or self.limit is not None
        simple = not queues and self.retries == 0 and self.timeout is None
        object.__setattr__(self, "simple", simple)
        object.__setattr__(self, "queues", queues)
        params = check_params(self.params, stage=self.name)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "params_key", params_key(params))

    @property
    def is_async(self) -> bool:
        """Whether the body runs on the event loop (an ``async def``)."""
        executor = self.executor
        return isinstance(executor, str) and executor == "loop"

    def named(self, name: str, *, params: Mapping[str, Any] | None = None) -> StageSpec:
        """Return the same stage under another name (and, if given, other parameters).

        Example:
            >>> Pipeline.chain(step.named(f"s{i}") for i in range(3))  # doctest: +SKIP
            >>> check.named("check_b7", params={"batch": 7})  # doctest: +SKIP
        """
        # Options were checked when this spec was made; only the name is new.
        # (Naming specs in a loop is common: built without attrs.evolve.)
        spec = _build(
            self.fn,
            check_name(name),
            self.retries,
            self.backoff,
            self.timeout,
            self.when,
            self.trigger,
            self.executor,
            self.codec,
            self.persist,
            self.limit,
        )
        if params is None:
            if self.params:
                _set_params(spec, self.params)
                _set_params_key(spec, self.params_key)
        else:
            _with_params(spec, params)
        return spec

    def with_params(self, **params: Any) -> StageSpec:
        """Return the same stage with these parameters (replacing any it had).

        A stage reads them as ``ctx.params``: plain JSON data (see
        `check_params`), frozen, journaled with the stage and shown by its
        lineage and the report. Use `named` to give the instance its own
        name too, as every stage of a run has its own.

        Example:
            >>> check_b7 = check.named("check_b7").with_params(batch=7)  # doctest: +SKIP

        Raises:
            TypeError: a value is not plain JSON data (the message says which).
        """
        spec = self.named(self.name)
        _with_params(spec, params)
        return spec

    def options(self, **changes: Any) -> StageSpec:
        """Return a copy with some options changed (same keywords as `stage`).

        Raises:
            TypeError: a keyword that is not one of `stage`'s.
        """
        unknown = sorted(set(changes) - _OPTIONS)
        if unknown:
            msg = (
                f"options() got unknown keywords {unknown}: the options are "
                f"{', '.join(sorted(_OPTIONS - {'fn'}))}, as for @stage"
            )
            raise TypeError(msg)
        merged = attrs.asdict(self, recurse=False)
        del merged["simple"], merged["params_key"], merged["queues"]
        params = merged.pop("params")
        merged.update(changes)
        fn = merged.pop("fn")
        spec = make_spec(fn, **merged)
        return spec.with_params(**params) if params else spec


_new = object.__new__
_FIELDS = (
    "fn",
    "name",
    "retries",
    "backoff",
    "timeout",
    "when",
    "trigger",
    "executor",
    "codec",
    "persist",
    "limit",
)
_OPTIONS = frozenset(_FIELDS)
(
    _set_fn,
    _set_name,
    _set_retries,
    _set_backoff,
    _set_timeout,
    _set_when,
    _set_trigger,
    _set_executor,
    _set_codec,
    _set_persist,
    _set_limit,
    _set_params,
    _set_params_key,
    _set_simple,
    _set_queues,
) = (
    StageSpec.__dict__[field].__set__
    for field in (*_FIELDS, "params", "params_key", "simple", "queues")
)
# The slots' own descriptors: declaring a stage builds one spec, and attrs'
# frozen __init__ (a bound object.__setattr__ per field, then the post-init
# hook) costs three times as much. `tests/test_spec.py` checks both ways
# give equal specs, field by field.


def _build(
    fn: StageFunction,
    name: str,
    retries: int,
    backoff: float,
    timeout: float | None,
    when: Predicate | None,
    trigger: str,
    executor: ExecutorChoice | None,
    codec: Codec | None = None,
    persist: bool = True,
    limit: str | None = None,
) -> StageSpec:
    """A `StageSpec` of values already checked, as its constructor would make it."""
    spec: StageSpec = _new(StageSpec)
    _set_fn(spec, fn)
    _set_name(spec, name)
    _set_retries(spec, retries)
    _set_backoff(spec, backoff)
    _set_timeout(spec, timeout)
    _set_when(spec, when)
    _set_trigger(spec, trigger)
    _set_executor(spec, executor)
    _set_codec(spec, codec)
    _set_persist(spec, persist)
    _set_limit(spec, limit)
    _set_params(spec, EMPTY_PARAMS)
    _set_params_key(spec, "")
    queues = limit is not None or type(executor) is not str or executor != "loop"
    _set_simple(spec, retries == 0 and timeout is None and not queues)
    _set_queues(spec, queues)
    return spec


def _with_params(spec: StageSpec, params: Mapping[str, Any]) -> None:
    """Give a spec just built its (checked, frozen) parameters."""
    checked = check_params(params, stage=spec.name)
    _set_params(spec, checked)
    _set_params_key(spec, params_key(checked))


def make_spec(
    fn: Any,
    name: str | None,
    retries: int,
    backoff: float,
    timeout: float | None,
    when: Predicate | None,
    trigger: str,
    executor: Any,
    codec: Any = None,
    persist: bool = True,
    limit: Any = None,
) -> StageSpec:
    if isinstance(fn, StageSpec):
        msg = f"{fn.name!r} is already a stage; use spec.options(...) to change it"
        raise InvalidStageError(msg)
    # Each check has a fast path for the plain values most declarations
    # use, and leaves everything else to the full check (refused, or made
    # plain). A declaration costs what running the stage costs: keep it so.
    if type(fn) is FunctionType:
        code = fn.__code__
        found = code.co_flags
        if found & GENERATORS or not (
            (code.co_argcount == 1 and not code.co_kwonlyargcount) or binds_one(fn)
        ):
            check_function(fn)  # raises, saying why
    else:
        found = check_function(fn)
    if type(retries) is not int or not 0 <= retries <= MOST_RETRIES:
        retries = check_retries(retries)
    if type(backoff) is not float or not 0.0 <= backoff < math.inf:
        backoff = check_backoff(backoff)
    if timeout is not None:
        timeout = check_timeout(timeout)
    if when is not None:
        check_when(when)
    if type(trigger) is not str or trigger not in TRIGGERS:
        trigger = check_trigger(trigger)
    if limit is not None:
        limit = check_limit(limit)
    if executor is None:
        executor = "loop" if found & ASYNC else None
    else:
        executor = check_executor(fn, found, executor)
    if name is None:
        try:
            name = getattr(fn, "__name__", None)
        except Exception:  # a __name__ that raises: as good as none
            name = None
        if name is None or (type(name) is str and name == "<lambda>"):
            msg = f"cannot name the stage {shown(fn)} after its function; pass name=..."
            raise InvalidStageError(msg)
    if type(name) is not str or not name or name.isspace():
        name = check_name(name)
    if executor is not None and (type(executor) is not str or executor == "process"):
        # It will leave the process: refuse what cannot be shipped, now.
        function_reference(fn, name)
    # So that a journaled run can find them again after a crash.
    if when is not None:
        default_registry.remember(when)
    if codec is not None:
        codec = check_codec(codec)
        default_registry.remember_codec(codec)
    if persist is not True:
        persist = check_persist(persist)
    spec = _build(
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
    default_registry.remember(fn, spec)  # and how it was declared (`declared`)
    return spec
