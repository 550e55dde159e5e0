"""The context a running stage receives, and the request path to the supervisor.

A `StageContext` lives exactly as long as its stage's actor. Everything it
offers to change the graph is a request sent to the run's supervisor, which
validates and applies it atomically and answers on the request's reply slot.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import attrs
import trio

from ._errors import InvalidRequestError, RunClosedError
from ._executors import StageView
from ._messages import (
    AddEdge,
    AddStage,
    Expand,
    Message,
    RemoveStage,
    ReplacePending,
    ReplySlot,
    Request,
)
from ._pipeline import Pipeline, StageRef, ref_names
from ._resources import CLOSED, Exits, close_all, enter_into
from ._slots import run_call
from ._spec import StageSpec

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import MappingProxyType

__all__ = [
    "NO_ITEM",
    "Hooks",
    "RunEnv",
    "Sentinel",
    "StageContext",
    "ask",
    "check_reason",
]

T = TypeVar("T")


@final
class Sentinel:
    """A named marker value that is never a user's value (`NO_ITEM`, ...)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NO_ITEM: Final = Sentinel("NO_ITEM")
"""The ``ctx.item`` of a stage that was not mapped over items."""


Hook = tuple[str, Callable[..., Awaitable[Any]]]
"""An interceptor hook, with the requester name its changes are audited under."""


@attrs.frozen
class Hooks:
    """The interceptor hooks of a runtime, in call order, grouped by moment."""

    before: tuple[Hook, ...] = ()
    after: tuple[Hook, ...] = ()
    error: tuple[Hook, ...] = ()

    @classmethod
    def from_interceptors(cls, interceptors: Iterable[object]) -> Hooks:
        """Collect the ``before_stage``/``after_stage``/``on_error`` methods present."""
        before: list[Hook] = []
        after: list[Hook] = []
        error: list[Hook] = []
        for interceptor in interceptors:
            label = getattr(interceptor, "name", None) or type(interceptor).__name__
            requester = f"interceptor:{label}"
            found = False
            for attr, into in (
                ("before_stage", before),
                ("after_stage", after),
                ("on_error", error),
            ):
                hook = getattr(interceptor, attr, None)
                if hook is None:
                    continue
                if not inspect.iscoroutinefunction(hook):
                    msg = f"interceptor {label!r}: {attr} must be an async method (async def)"
                    raise InvalidRequestError(msg)
                into.append((requester, hook))
                found = True
            if not found:
                msg = (
                    f"interceptor {label!r} has none of before_stage, after_stage, on_error; "
                    "define at least one as an async method"
                )
                raise InvalidRequestError(msg)
        return cls(tuple(before), tuple(after), tuple(error))

    def __bool__(self) -> bool:
        return bool(self.before or self.after or self.error)


@attrs.define(eq=False)
class RunEnv:
    """What every stage of one run shares: the way to its supervisor, and limits.

    Attributes:
        run_id: the run's id.
        outbox: the supervisor's inbox (a clone owned by the run).
        run_inputs: the inputs the run was started with, read-only.
        thread_limiter: bounds how many thread stages run at once.
        cleanup_timeout: seconds a stage's resources get to close.
        hooks: interceptor hooks called around every stage attempt.
    """

    run_id: str
    outbox: trio.MemorySendChannel[Message]
    run_inputs: MappingProxyType[str, Any]
    thread_limiter: trio.CapacityLimiter
    cleanup_timeout: float
    hooks: Hooks = Hooks()
    default_executor: Any = "thread"
    """Where plain-function stages without an executor of their own run."""
    codec: Any = None
    """With a journal: encodes each output as the stage ends (a `Codec`)."""
    has_hooks: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.has_hooks = bool(self.hooks)


def check_reason(reason: object) -> str:
    """A change needs a reason for the audit trail: a non-empty string."""
    if not isinstance(reason, str) or not reason.strip():
        msg = (
            f"every change needs a reason for the audit trail, got {reason!r}; "
            'pass reason="why this change is made"'
        )
        raise InvalidRequestError(msg)
    return reason


async def ask(env: RunEnv, make: Callable[[ReplySlot], Request]) -> Any:
    """Send a request to the supervisor and wait for its answer.

    Raises whatever the supervisor refused the request with, or
    `RunClosedError` when the run has ended.
    """
    await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller sends nothing
    reply = ReplySlot()
    request = make(reply)
    try:
        try:
            env.outbox.send_nowait(request)
        except trio.WouldBlock:
            await env.outbox.send(request)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise RunClosedError(env.run_id) from None
    answer = await reply.receive()
    return answer.unwrap()


@final
class StageContext:
    """What a stage sees of its run, and how it changes the graph.

    Attributes:
        name: the stage's name.
        inputs: read-only mapping of upstream stage name to its output.
        item: the value this stage was mapped over (`expand`), else `NO_ITEM`.
        key: the mapped stage's key (``"0"`` or the ``key=`` function's value).
        attempt: 0 for the first attempt, 1 for the first retry, and so on.
            It counts on across a resume: a stage run again after a crash
            starts after the attempts the journal recorded for it. A start
            still being written when the process died is not known, so
            deduplicate side effects with ``idempotency_key``, not ``attempt``.
    """

    __slots__ = (
        "_acting_as",
        "_env",
        "_stack",
        "_token",
        "attempt",
        "inputs",
        "item",
        "key",
        "name",
    )

    def __init__(
        self,
        env: RunEnv,
        token: object,
        name: str,
        inputs: Mapping[str, Any],
        item: Any,
        key: str | None,
    ) -> None:
        self._env = env
        self._token = token
        self._stack: Exits | None = None
        self._acting_as: str | None = None
        self.name = name
        self.inputs = inputs
        self.item = item
        self.key = key
        self.attempt = 0

    def __repr__(self) -> str:
        return f"<StageContext {self.name!r} of run {self._env.run_id!r}>"

    @property
    def run_id(self) -> str:
        """The id of the run this stage belongs to."""
        return self._env.run_id

    @property
    def idempotency_key(self) -> str:
        """``"<run id>:<stage name>"``: the same for every attempt of this stage in
        this run, resumes included, and different for every other stage.

        Pass it with a side effect (a payment, a message) so that the receiver
        can drop a repeat when a stage runs again after a crash.
        """
        return f"{self._env.run_id}:{self.name}"

    @property
    def run_inputs(self) -> Mapping[str, Any]:
        """The inputs the run was started with (``rt.run(p, inputs=...)``), read-only."""
        return self._env.run_inputs

    def view(self) -> StageView:
        """A picklable snapshot of what this stage sees (for other processes)."""
        return StageView(
            name=self.name,
            inputs=dict(self.inputs),
            run_inputs=dict(self._env.run_inputs),
            item=None if self.item is NO_ITEM else self.item,
            key=self.key,
            attempt=self.attempt,
            idempotency_key=self.idempotency_key,
        )

    async def run_in(self, executor: Any, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on an executor and return its result.

        For an async stage that changes the graph and also has heavy work:
        ``executor`` is ``"thread"``, ``"process"`` or an `Executor` such as
        `DaskExecutor`. Only ``fn`` and ``args`` travel (not the stage's
        inputs): for ``"process"`` and executors, ``fn`` must be defined at
        module level and ``args`` picklable (`NotPicklableError` names the
        argument that is not).

        Example:
            >>> total = await ctx.run_in("process", crunch, ctx.inputs["rows"])  # doctest: +SKIP
        """
        result: T = await run_call(
            executor,
            fn,
            args,
            stage=self.name,
            thread_limiter=self._env.thread_limiter,
            view=self._bare_view,
        )
        return result

    def _bare_view(self) -> StageView:
        # What a plugged-in Executor is given with a run_in call: who calls,
        # not what the stage sees (only the function and its arguments travel).
        return StageView(
            name=self.name,
            inputs={},
            run_inputs={},
            item=None,
            key=self.key,
            attempt=self.attempt,
            idempotency_key=self.idempotency_key,
        )

    # -- resources ----------------------------------------------------------------

    async def enter(self, resource: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager that closes when this attempt ends.

        The resource is closed however the attempt ends: success, failure,
        timeout or cancellation, in reverse order of entry, each one shielded
        and bounded by the runtime's ``cleanup_timeout``. Its ``__aexit__``
        is told how the attempt ended. Resources entered by interceptor hooks
        close too. A resource that does not close fails an attempt that had
        succeeded, with `ResourceCloseError`.

        Example:
            >>> conn = await ctx.enter(open_connection(url))  # doctest: +SKIP

        Raises:
            TypeError: ``resource`` is not an async context manager.
            InvalidRequestError: the stage has ended.
        """
        stack = self._stack
        if stack is None:
            stack = self._stack = []
        elif stack is CLOSED:
            msg = (
                f"stage {self.name!r} has ended: ctx.enter works only while one of "
                "its attempts runs; enter resources from the stage itself"
            )
            raise InvalidRequestError(msg)
        return await enter_into(stack, resource)

    async def _close_resources(self, ended_by: BaseException | None) -> None:
        """Close what this attempt entered so far (see `close_all`)."""
        stack = self._stack
        if not stack:
            return
        try:
            # The list stays in place while it closes: what an exit enters
            # meanwhile is closed too.
            await close_all(self.name, stack, ended_by, self._env.cleanup_timeout)
        finally:
            if self._stack is stack:
                self._stack = None

    # -- changes ------------------------------------------------------------------

    @property
    def _requester(self) -> str:
        # Inside an interceptor hook, changes are audited as the interceptor's.
        return self._acting_as or self.name

    async def add_stage(
        self,
        spec: StageSpec,
        *,
        after: StageRef | Iterable[StageRef] | None = None,
        before: StageRef | Iterable[StageRef] | None = None,
        reason: str,
    ) -> str:
        """Add a stage to the running graph; return its name.

        The new stage starts once every stage in ``after`` succeeded (they may
        be pending, running or done), and the pending stages in ``before``
        wait for it.

        Raises:
            DuplicateStageError, UnknownStageError, CycleError, StageStateError,
            RunClosedError: the change was refused; the graph is unchanged.
        """
        return await add_stage_request(
            self._env, self._requester, spec, after=after, before=before, reason=reason
        )

    async def add_edge(
        self, upstream: StageRef, downstream: StageRef, *, reason: str
    ) -> None:
        """Make the pending stage ``downstream`` wait for ``upstream``."""
        await add_edge_request(
            self._env, self._requester, upstream, downstream, reason=reason
        )

    async def expand(
        self,
        spec: StageSpec,
        items: Iterable[Any],
        *,
        reason: str,
        key: Callable[[Any], object] | None = None,
        after: StageRef | Iterable[StageRef] | None = None,
    ) -> list[str]:
        """Map ``spec`` over ``items``: one new stage per item; return their names.

        Each new stage sees its item as ``ctx.item`` and its key as ``ctx.key``
        and is named ``spec.name[key]``. Keys are the positions ``0, 1, ...``
        unless ``key`` computes one from each item (then the name stays the same
        whatever the order of the items). A mapped stage that expands again
        prefixes its own key (``detail[3.0]``), so nested names never clash.
        Add a collecting stage after the returned names to fan in.
        """
        return await expand_request(
            self._env,
            self._requester,
            spec,
            items,
            reason=reason,
            key=key,
            after=after,
            key_prefix="" if self.key is None else f"{self.key}.",
        )

    async def remove_stage(self, name: StageRef, *, reason: str) -> None:
        """Remove a stage that has not started (and its edges)."""
        await remove_stage_request(self._env, self._requester, name, reason=reason)

    async def replace_pending(self, pipeline: Pipeline, *, reason: str) -> None:
        """Replace every stage that has not started by ``pipeline``.

        A stage of ``pipeline`` whose name is a stage that already started
        or ended is not added again: its output is reused, so the new stages
        can depend on work already done.
        """
        await replace_pending_request(
            self._env, self._requester, pipeline, reason=reason
        )


# -- the requests, shared by stages, interceptors and the Run handle -------------


def _one_name(ref: StageRef) -> str:
    (name,) = ref_names(ref)
    return name


async def add_stage_request(
    env: RunEnv,
    requester: str,
    spec: StageSpec,
    *,
    after: StageRef | Iterable[StageRef] | None,
    before: StageRef | Iterable[StageRef] | None,
    reason: str,
) -> str:
    """Ask the supervisor to add a stage; see `StageContext.add_stage`."""
    if not isinstance(spec, StageSpec):
        msg = (
            f"add_stage needs a stage (decorate the function with @stage), not {spec!r}"
        )
        raise TypeError(msg)
    reason = check_reason(reason)
    after_names, before_names = ref_names(after), ref_names(before)
    result: str = await ask(
        env,
        lambda reply: AddStage(
            spec=spec,
            after=after_names,
            before=before_names,
            reason=reason,
            requester=requester,
            reply=reply,
        ),
    )
    return result


async def add_edge_request(
    env: RunEnv,
    requester: str,
    upstream: StageRef,
    downstream: StageRef,
    *,
    reason: str,
) -> None:
    """Ask the supervisor to add an edge; see `StageContext.add_edge`."""
    reason = check_reason(reason)
    up, down = _one_name(upstream), _one_name(downstream)
    await ask(
        env,
        lambda reply: AddEdge(
            upstream=up,
            downstream=down,
            reason=reason,
            requester=requester,
            reply=reply,
        ),
    )


async def expand_request(
    env: RunEnv,
    requester: str,
    spec: StageSpec,
    items: Iterable[Any],
    *,
    reason: str,
    key: Callable[[Any], object] | None,
    after: StageRef | Iterable[StageRef] | None,
    key_prefix: str = "",
) -> list[str]:
    """Ask the supervisor to map a stage over items; see `StageContext.expand`."""
    if not isinstance(spec, StageSpec):
        msg = f"expand needs a stage (decorate the function with @stage), not {spec!r}"
        raise TypeError(msg)
    reason = check_reason(reason)
    item_tuple = tuple(items)
    if key is None:
        keys = tuple(f"{key_prefix}{pos}" for pos in range(len(item_tuple)))
    else:
        keys = tuple(f"{key_prefix}{key(item)}" for item in item_tuple)
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            clash = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]  # set.add returns None: the `or` keeps scanning
            msg = (
                f"expand of {spec.name!r}: two items have the key {clash!r}; "
                "the key function must give each item its own key"
            )
            raise InvalidRequestError(msg)
    after_names = ref_names(after)
    names: tuple[str, ...] = await ask(
        env,
        lambda reply: Expand(
            spec=spec,
            items=item_tuple,
            keys=keys,
            after=after_names,
            reason=reason,
            requester=requester,
            reply=reply,
        ),
    )
    return list(names)


async def remove_stage_request(
    env: RunEnv, requester: str, name: StageRef, *, reason: str
) -> None:
    """Ask the supervisor to remove a pending stage; see `StageContext.remove_stage`."""
    reason = check_reason(reason)
    stage_name = _one_name(name)
    await ask(
        env,
        lambda reply: RemoveStage(
            name=stage_name, reason=reason, requester=requester, reply=reply
        ),
    )


async def replace_pending_request(
    env: RunEnv, requester: str, pipeline: Pipeline, *, reason: str
) -> None:
    """Ask the supervisor to swap the pending part; see `StageContext.replace_pending`."""
    if not isinstance(pipeline, Pipeline):
        msg = f"replace_pending needs a Pipeline, not {pipeline!r}"
        raise TypeError(msg)
    reason = check_reason(reason)
    await ask(
        env,
        lambda reply: ReplacePending(
            pipeline=pipeline, reason=reason, requester=requester, reply=reply
        ),
    )
