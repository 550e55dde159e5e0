"""The stage actor: one task per running stage.

The supervisor spawns `run_stage` into the run's stage nursery when a stage
becomes ready, with a fresh cancel scope that the supervisor keeps (to cancel
this one stage). The actor runs the stage's attempts (retries, timeouts, the
``when`` predicate, interceptor hooks), closes what each attempt opened with
``ctx.enter``, reports exactly one outcome message, and ends.

Timing: an attempt's timeout starts once it has its room: its named limit
(`_limits`), then its executor's slot (a thread, a worker process, a Dask
slot: `_slots`), so queueing is not part of it. A stage that may queue
(`StageSpec.queues`) is ``queued`` until its first attempt has that room;
its actor then tells the supervisor (`SlotTaken`), once. An ``async def``
stage without a limit never queues and sends nothing. The outcome of a body is decided when it returns: a cancellation or a
timeout that came while it ran (a thread cannot be interrupted; an ``async
def`` may complete its last await in a shielded scope) wins, and the value
is dropped. Between two attempts the actor always yields to trio.

Cancellation: when the stage's own scope is cancelled the actor reports
`StageCancelled`. When the run is cancelled (its stage nursery's scope), the
actor reports `StageCancelled` without waiting and lets ``Cancelled``
propagate; if that report is lost, the supervisor, which did the
cancelling, settles the stage itself when the run ends.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import TYPE_CHECKING, Any

import trio

from ._errors import UnknownLimitError
from ._executors import (
    Executor,
    Job,
    function_reference,
    pack,
    run_packed,
    unpack,
    view_parts,
)
from ._freeze import SHARED
from ._limits import Held
from ._messages import (
    AttemptFailed,
    AttemptStarted,
    SignalsReturned,
    SlotTaken,
    StageCancelled,
    StageFailed,
    StageOutcome,
    StageSkipped,
    StageSucceeded,
)
from ._output import plain_output, prepare_output
from ._resources import CLOSED
from ._slots import elsewhere_slot, thread_slot
from ._stage_errors import StageTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._context import StageContext
    from ._env import Hook, Hooks
    from ._spec import StageSpec
    from ._stored import Encoded

__all__ = ["run_stage"]

# The largest power of two a backoff is multiplied by: past it the delay is
# already longer than any run, and 2 ** n would overflow a float.
_MAX_DOUBLINGS = 1000


async def _at_return(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``await fn(*args)``; a cancellation that came meanwhile decides the outcome.

    A body that cannot be interrupted (a thread) or whose last await ended
    without raising (a shielded scope) still returns or raises: the
    checkpoint makes a pending cancellation or timeout win over it, and its
    value is dropped.
    """
    try:
        value = await fn(*args)
    except Exception:
        await trio.lowlevel.checkpoint_if_cancelled()
        raise
    await trio.lowlevel.checkpoint_if_cancelled()
    return value


async def _timed(spec: StageSpec, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``await fn(*args)`` under the stage's timeout (started now, slot in hand)."""
    timeout = spec.timeout
    if timeout is None:
        return await _at_return(fn, *args)
    with trio.move_on_after(timeout):
        return await _at_return(fn, *args)
    raise StageTimeoutError(spec.name, timeout)  # the timer caught its cancellation


async def _taken(ctx: StageContext) -> None:
    """The attempt has its room: if the stage is still queued, say it runs now."""
    if ctx._queued:
        ctx._queued = False
        await _send(ctx._env.outbox, SlotTaken(ctx._token, trio.current_time()))


async def _body(spec: StageSpec, ctx: StageContext) -> Any:
    """One run of the stage body, holding its named limit (if any) throughout."""
    limit = spec.limit
    if limit is None:
        return await _on_executor(spec, ctx, None)
    limits = ctx._env.limits
    limiter = limits.get(limit)
    if limiter is None:  # refused before the run started; never trust that here
        raise UnknownLimitError(limit, spec.name, limits)
    held = Held(limiter)
    await held.acquire()
    try:
        return await _on_executor(spec, ctx, held)
    finally:
        held.release()  # unless a Dask task took it over: it gives it back


async def _on_executor(spec: StageSpec, ctx: StageContext, held: Held | None) -> Any:
    """One run of the stage body, on its executor, once it has a slot there."""
    if spec.is_async:
        await _taken(ctx)
        return await _timed(spec, spec.fn, ctx)
    executor = spec.executor
    env = ctx._env
    if executor is None:
        executor = env.default_executor
    if isinstance(executor, str) and executor == "thread":
        async with thread_slot(env.thread_limiter) as run:
            await _taken(ctx)
            return await _timed(spec, run, spec.name, spec.fn, ctx)
    view = ctx.view()
    reference = function_reference(spec.fn, spec.name)
    slot = elsewhere_slot(executor, env.process_limiter, held)
    if slot is None:  # a plugged-in Executor: it ships the view its own way
        assert isinstance(executor, Executor)
        await _taken(ctx)
        return await _timed(spec, executor.run, reference, view)
    payload = pack(Job(spec.name, reference, (view,)), view_parts(view))
    async with slot as run:
        await _taken(ctx)
        data = await _timed(spec, run, spec.name, run_packed, payload)
    return unpack(spec.name, data)


async def _closing(
    ctx: StageContext, fn: Callable[..., Awaitable[Any]], *args: Any
) -> Any:
    """``await fn(*args)``, then close what it entered with ``ctx.enter``.

    The resources are told how it ended; a cancellation that came first
    wins over an error. See `_resources` for what a failed close does.
    """
    try:
        value = await _at_return(fn, *args)
    except BaseException as exc:
        if ctx._stack:
            await ctx._close_resources(exc)
        raise
    if ctx._stack:
        await ctx._close_resources(None)
    return value


async def _call_hooks(ctx: StageContext, hooks: tuple[Hook, ...], *args: Any) -> None:
    for requester, hook in hooks:
        ctx._acting_as = requester
        try:
            await hook(ctx, *args)
        finally:
            ctx._acting_as = None


async def _run(spec: StageSpec, ctx: StageContext, hooks: Hooks) -> Any:
    """The part of an attempt whose resources close together: before hooks, body."""
    if hooks.before:
        await _call_hooks(ctx, hooks.before)
    return await _body(spec, ctx)


async def _attempts(spec: StageSpec, ctx: StageContext) -> Any:
    """Run attempts until one succeeds or the retries are spent."""
    hooks = ctx._env.hooks
    first = attempt = ctx.attempt  # above 0 when a resumed run runs it again
    while True:
        ctx.attempt = attempt
        ctx._signals_taken = 0
        try:
            value = await _closing(ctx, _run, spec, ctx, hooks)
            if hooks.after:
                await _closing(ctx, _call_hooks, ctx, hooks.after, value)
        except Exception as exc:
            if hooks.error:
                await _closing(ctx, _call_hooks, ctx, hooks.error, exc)
            if attempt - first >= spec.retries:
                raise
            if ctx._env.codec is not None:  # journaled: the attempt's end
                await _send(ctx._env.outbox, AttemptFailed(ctx._token, attempt, exc))
            if ctx._signals_taken:  # the retry gets them again, first
                await _send(ctx._env.outbox, SignalsReturned(ctx._token))
            attempt += 1
            await _before_retry(spec, ctx, attempt, attempt - first)
        else:
            return value


async def _before_retry(
    spec: StageSpec, ctx: StageContext, attempt: int, retry: int
) -> None:
    """Wait out the backoff (or at least yield), then announce the attempt."""
    if spec.backoff:
        await trio.sleep(math.ldexp(spec.backoff, min(retry - 1, _MAX_DOUBLINGS)))
    else:
        # An attempt that fails before its first await would otherwise
        # never let the loop run (nor a cancel or a timeout act).
        await trio.lowlevel.checkpoint()
    env = ctx._env
    if env.codec is not None:  # journaled: a resume counts on from here
        await _send(env.outbox, AttemptStarted(ctx._token, attempt))


async def _decide(spec: StageSpec, ctx: StageContext) -> bool:
    """The ``when`` predicate's answer; an async predicate is awaited."""
    assert spec.when is not None
    decision: Any = spec.when(ctx)
    if inspect.isawaitable(decision):
        decision = await decision
    return bool(decision)


async def _send(outbox: trio.MemorySendChannel[Any], message: object) -> None:
    try:
        try:
            outbox.send_nowait(message)
        except trio.WouldBlock:
            # The supervisor is behind; wait for room. If the run is cancelled
            # meanwhile the message is dropped and the supervisor, which did
            # the cancelling, settles this stage itself.
            await outbox.send(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the run has already ended: nobody is listening


async def run_stage(
    spec: StageSpec, ctx: StageContext, scope: trio.CancelScope
) -> None:
    """Run one stage to its end and report the outcome to the supervisor."""
    token = ctx._token
    env = ctx._env
    message: StageOutcome | None = None
    try:
        with scope:
            if spec.when is not None and not await _decide(spec, ctx):
                message = StageSkipped(token)
            elif spec.simple and not env.has_hooks:
                # The common case, kept to this one frame: one attempt on the
                # loop (the same steps as _closing, inlined).
                try:
                    try:
                        value = await spec.fn(ctx)
                    except Exception:
                        await trio.lowlevel.checkpoint_if_cancelled()
                        raise
                    await trio.lowlevel.checkpoint_if_cancelled()
                    prepared: tuple[Any, Encoded | None]
                    if env.codec is None and type(value) in SHARED:
                        prepared = (value, None)  # nothing to encode or freeze
                    elif (text := plain_output(env, spec, value)) is not None:
                        prepared = (value, text)  # a journaled plain scalar
                    else:
                        prepared = await prepare_output(env, spec, value)
                except BaseException as exc:
                    if ctx._stack:
                        await ctx._close_resources(exc)
                    raise
                if ctx._stack:
                    await ctx._close_resources(None)
                message = StageSucceeded(token, *prepared)
            else:
                ctx._queued = spec.queues  # its supervisor marked it queued
                value = await _attempts(spec, ctx)
                message = StageSucceeded(token, *await prepare_output(env, spec, value))
        if scope.cancelled_caught:
            message = StageCancelled(token)
    except Exception as exc:
        message = StageFailed(token, exc)
    except trio.Cancelled:
        ctx._stack = CLOSED
        # The run is being cancelled: say this stage has ended (without
        # waiting), so its state is true while others are still unwinding.
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            env.outbox.send_nowait(StageCancelled(token))
        raise
    ctx._stack = CLOSED
    if message is None:
        return
    try:
        env.outbox.send_nowait(message)
    except trio.WouldBlock:
        await _send(env.outbox, message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the run has already ended: nobody is listening
