"""The context a running stage receives: its inputs, its resources, its changes.

A `StageContext` lives exactly as long as its stage's actor. Everything it
offers to change the graph is a request sent to the run's supervisor (see
`_requests`), which validates and applies it atomically and answers on the
request's reply slot.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import trio

from ._errors import InvalidRequestError
from ._executors import StageView
from ._reply import ReplySlot
from ._requests import ChangeRequests, ask
from ._resources import CLOSED, Exits, close_all, enter_into
from ._signal_messages import WaitSignal, WithdrawWait
from ._signals import check_signal_name, decode_payload
from ._slots import run_call

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    from ._env import RunEnv

__all__ = ["NO_ITEM", "Sentinel", "StageContext"]

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


@final
class StageContext(ChangeRequests):
    """What a stage sees of its run, and how it changes the graph.

    Attributes:
        name: the stage's name.
        inputs: read-only mapping of upstream stage name to its output.
        item: the value this stage was mapped over (`expand`), else `NO_ITEM`.
        key: the mapped stage's key (``"0"`` or the ``key=`` function's value).
        params: read-only mapping of this stage's parameters (``with_params``,
            ``expand(params=...)``); empty unless given.
        attempt: 0 for the first attempt, 1 for the first retry, and so on.
            It counts on across a resume: a stage run again after a crash
            starts after the attempts the journal recorded for it. A start
            still being written when the process died is not known, so
            deduplicate side effects with ``idempotency_key``, not ``attempt``.
    """

    __slots__ = (
        "_acting_as",
        "_env",
        "_queued",
        "_signals_taken",
        "_stack",
        "_token",
        "attempt",
        "inputs",
        "item",
        "key",
        "name",
        "params",
    )

    def __init__(
        self,
        env: RunEnv,
        token: object,
        name: str,
        inputs: Mapping[str, Any],
        item: Any,
        key: str | None,
        params: Mapping[str, Any],
    ) -> None:
        self._env = env
        self._token = token
        self._stack: Exits | None = None
        self._acting_as: str | None = None
        # Its supervisor marked it queued: it is told when the slot is taken.
        self._queued = False
        # Signals this attempt took (given back if it fails and is retried).
        self._signals_taken = 0
        self.name = name
        self.inputs = inputs
        self.item = item
        self.key = key
        self.params = params
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
            params=self.params,
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
            process_limiter=self._env.process_limiter,
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

    # -- signals ------------------------------------------------------------------

    async def wait_signal(self, name: str) -> Any:
        """Wait for the next signal ``name`` sent to this run; return its payload.

        A signal sent before anyone waited is kept for the first to wait,
        first in, first out; each goes to one waiter only. The payload is a
        fresh copy of plain JSON data. If this attempt then fails and is
        retried, or the stage is cancelled or the process crashes before it
        succeeds, the signal goes back to the front of the mailbox for the
        retry, the resumed run or another waiter. A wait that is cancelled
        (a timeout, ``cancel_stage``, the run's cancel) takes nothing.

        Example:
            >>> decision = await ctx.wait_signal("sign_off")  # doctest: +SKIP

        Raises:
            InvalidSignalError: not a signal name.
            RunClosedError: the run is ending.
        """
        name = check_signal_name(name)
        env = self._env
        request = WaitSignal(name, self._token, ReplySlot())
        try:
            text: str = await ask(env, request)
        except BaseException:
            # Cancelled (or the run ended): take nothing. Told in order
            # after the request, so the supervisor either drops the wait or
            # puts back what it had already given it.
            with (
                trio.CancelScope(shield=True),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):  # suppressed: the run has ended, its mailbox with it
                await env.outbox.send(WithdrawWait(request))
            raise
        self._signals_taken += 1
        return decode_payload(text)

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

    # -- changes (the methods are `ChangeRequests`') -------------------------------

    @property
    def _requester(self) -> str:
        # Inside an interceptor hook, changes are audited as the interceptor's.
        return self._acting_as or self.name

    @property
    def _key_prefix(self) -> str:
        # A mapped stage that expands again prefixes its own key.
        return "" if self.key is None else f"{self.key}."
