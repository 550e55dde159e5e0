"""The stage actor: one task per running stage.

The supervisor spawns `run_stage` into the run's stage nursery when a stage
becomes ready, with a fresh cancel scope that the supervisor keeps (to cancel
this one stage). The actor runs the stage's attempts (retries, timeouts, the
``when`` predicate, interceptor hooks), closes what the stage opened with
``ctx.enter``, reports exactly one outcome message, and ends.

Cancellation: when the stage's own scope is cancelled the actor reports
`StageCancelled`. When the run is cancelled (its stage nursery's scope), the
actor reports `StageCancelled` without waiting and lets ``Cancelled``
propagate; if that report is lost, the supervisor, which did the
cancelling, settles the stage itself when the run ends.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import TYPE_CHECKING, Any

import trio

from ._errors import NotPicklableError, StageTimeoutError
from ._executors import StageView, function_reference, run_process
from ._messages import (
    StageCancelled,
    StageFailed,
    StageOutcome,
    StageSkipped,
    StageSucceeded,
)
from ._output import prepare_output

if TYPE_CHECKING:
    from ._context import Hook, StageContext
    from ._spec import StageSpec

__all__ = ["run_stage"]


async def _call(spec: StageSpec, ctx: StageContext) -> Any:
    """One attempt of the stage body; resources it opened close when it ends."""
    try:
        executor = spec.executor
        if executor == "loop":
            return await spec.fn(ctx)
        env = ctx._env
        if executor is None:
            executor = env.default_executor
        if executor == "thread":
            return await trio.to_thread.run_sync(
                spec.fn, ctx, limiter=env.thread_limiter
            )
        return await _run_elsewhere(executor, spec, ctx)
    finally:
        if ctx._stack is not None:
            await ctx._close_resources()


async def _run_elsewhere(executor: Any, spec: StageSpec, ctx: StageContext) -> Any:
    """Ship the body and a picklable view of its inputs to another process."""
    body = function_reference(spec.fn, spec.name)
    view = ctx.view()
    _check_picklable(spec.name, view)
    if executor == "process":
        return await run_process(body, view)
    return await executor.run(body, view)


def _check_picklable(stage: str, view: StageView) -> None:
    """Name what cannot be pickled, rather than fail somewhere in a worker."""
    try:
        pickle.dumps(view)
    except Exception as whole:
        parts: list[tuple[str, Any]] = [
            (f"input {k!r}", v) for k, v in view.inputs.items()
        ]
        parts += [("the item", view.item), ("the run inputs", dict(view.run_inputs))]
        for what, value in parts:
            try:
                pickle.dumps(value)
            except Exception as exc:
                raise NotPicklableError(stage, what, exc) from exc
        raise NotPicklableError(stage, "its view", whole) from whole


async def _call_hooks(ctx: StageContext, hooks: tuple[Hook, ...], *args: Any) -> None:
    for requester, hook in hooks:
        ctx._acting_as = requester
        try:
            await hook(ctx, *args)
        finally:
            ctx._acting_as = None


async def _attempts(spec: StageSpec, ctx: StageContext) -> Any:
    """Run attempts until one succeeds or the retries are spent."""
    hooks = ctx._env.hooks
    first = attempt = ctx.attempt  # above 0 when a resumed run runs it again
    while True:
        ctx.attempt = attempt
        try:
            await _call_hooks(ctx, hooks.before)
            if spec.timeout is None:
                value = await _call(spec, ctx)
            else:
                with trio.move_on_after(spec.timeout) as timer:
                    value = await _call(spec, ctx)
                if timer.cancelled_caught:
                    raise StageTimeoutError(spec.name, spec.timeout)
            await _call_hooks(ctx, hooks.after, value)
        except Exception as exc:
            await _call_hooks(ctx, hooks.error, exc)
            if attempt - first >= spec.retries:
                raise
            if spec.backoff:
                await trio.sleep(spec.backoff * 2 ** (attempt - first))
            attempt += 1
        else:
            return value


async def run_stage(
    spec: StageSpec, ctx: StageContext, scope: trio.CancelScope
) -> None:
    """Run one stage to its end and report the outcome to the supervisor."""
    token = ctx._token
    env = ctx._env
    message: StageOutcome | None = None
    try:
        with scope:
            if spec.when is not None and not spec.when(ctx):
                message = StageSkipped(token)
            elif spec.simple and not env.has_hooks:
                # The common case, kept to this one frame: one attempt on the loop.
                try:
                    value = await spec.fn(ctx)
                    message = StageSucceeded(
                        token, *await prepare_output(env, spec, value)
                    )
                finally:
                    if ctx._stack is not None:
                        await ctx._close_resources()
            else:
                value = await _attempts(spec, ctx)
                message = StageSucceeded(token, *await prepare_output(env, spec, value))
        if scope.cancelled_caught:
            message = StageCancelled(token)
    except Exception as exc:
        message = StageFailed(token, exc)
    except trio.Cancelled:
        # The run is being cancelled: say this stage has ended (without
        # waiting), so its state is true while others are still unwinding.
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            env.outbox.send_nowait(StageCancelled(token))
        raise
    if message is None:
        return
    outbox = env.outbox
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
