"""Change requests: the one API by which stages, interceptors and `Run` handles
change a running graph, and the path of a request to the supervisor.

Each request is prepared in the requester's own task before it is sent (see
``_prepare``), so the supervisor, the single writer of the graph, never runs
user code. Every request sent gets exactly one answer and one audit record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, final

import trio

from ._errors import InvalidRequestError, RunClosedError
from ._messages import (
    CancelStage,
    ChangePart,
    ChangeSet,
    Expand,
    RemoveStage,
    ReplySlot,
    Request,
)
from ._prepare import Preparer, one_name
from ._reply import ReplySlot as _Reply
from ._signal_messages import SendSignal
from ._signals import check_signal_name, encode_payload

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from ._env import RunEnv
    from ._pipeline import Pipeline, StageRef
    from ._prepare import ItemParams
    from ._signal_messages import WaitSignal
    from ._spec import StageSpec

__all__ = [
    "ChangeBatch",
    "ChangeRequests",
    "ask",
    "check_reason",
]

R = TypeVar("R", bound=Request)


def check_reason(reason: object) -> str:
    """A change needs a reason for the audit trail: a non-empty string."""
    if not isinstance(reason, str) or not str.strip(reason):
        msg = (
            f"every change needs a reason for the audit trail, got {reason!r}; "
            'pass reason="why this change is made"'
        )
        raise InvalidRequestError(msg)
    return reason if type(reason) is str else str.__str__(reason)


async def ask(env: RunEnv, request: Request | SendSignal | WaitSignal) -> Any:
    """Send a prepared request to the supervisor and wait for its answer.

    Raises whatever the supervisor refused the request with, or
    `RunClosedError` when the run has ended.
    """
    await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller sends nothing
    try:
        try:
            env.outbox.send_nowait(request)
        except trio.WouldBlock:
            await env.outbox.send(request)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise RunClosedError(env.run_id) from None
    reply = request.reply
    if reply.answered:  # while the send waited for room
        return await reply.wait()
    # `reply.wait()`, inlined (a coroutine less for each request that waits)
    reply._waiter = trio.lowlevel.current_task()
    return await trio.lowlevel.wait_task_rescheduled(reply)


class ChangeRequests:
    """The change methods shared by `StageContext` and `Run`.

    A subclass provides ``_env`` (the run), ``_requester`` (who asks, for the
    audit trail) and ``_key_prefix`` (the prefix of mapped keys).
    """

    __slots__ = ()

    _env: RunEnv

    @property
    def _requester(self) -> str:
        raise NotImplementedError

    @property
    def _key_prefix(self) -> str:
        return ""

    def _preparer(self) -> Preparer:
        return Preparer(self._env, self._requester)

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
            NotRestorableError, RunClosedError: the change was refused; the
            graph is unchanged.
        """
        reason = check_reason(reason)
        result: str = await ask(
            self._env, self._preparer().add_stage(spec, after, before, reason)
        )
        return result

    async def add_edge(
        self, upstream: StageRef, downstream: StageRef, *, reason: str
    ) -> None:
        """Make the pending stage ``downstream`` wait for ``upstream``."""
        reason = check_reason(reason)
        await ask(self._env, self._preparer().add_edge(upstream, downstream, reason))

    async def expand(
        self,
        spec: StageSpec,
        items: Iterable[Any],
        *,
        reason: str,
        key: Callable[[Any], object] | None = None,
        after: StageRef | Iterable[StageRef] | None = None,
        collect: StageSpec | None = None,
        params: ItemParams | None = None,
    ) -> list[str]:
        """Map ``spec`` over ``items``: one new stage per item; return their names.

        Each new stage sees its item as ``ctx.item`` and its key as ``ctx.key``
        and is named ``spec.name[key]``. Keys are the positions ``0, 1, ...``
        unless ``key`` computes one from each item (then the name stays the same
        whatever the order of the items). A mapped stage that expands again
        prefixes its own key (``detail[3.0]``), so nested names never clash.

        ``collect`` adds a collecting stage after every mapped stage in the
        same step: no mapped stage starts before it exists, so mapped stages
        may add stages ``before`` it.

        ``params`` gives each mapped stage its own parameters (``ctx.params``),
        as a list of mappings, one per item, or a function of the item; they
        are laid over the parameters ``spec`` already has. For example
        ``expand(check, batches, params=lambda b: {"batch": b["id"]})``.

        Raises:
            DuplicateStageError, UnknownStageError, StageStateError,
            NotRestorableError, InvalidRequestError, RunClosedError: the
            change was refused; the graph is unchanged.
        """
        reason = check_reason(reason)
        mapped = self._preparer().expand(
            spec, items, reason, key, after, self._key_prefix, params
        )
        if collect is None:
            names: tuple[str, ...] = await ask(self._env, mapped)
            return list(names)
        async with self.changes(reason=reason) as batch:
            batch._parts.append(mapped)
            batch.add_stage(collect, after=_mapped_names(mapped))
        return list(_mapped_names(mapped))

    async def remove_stage(self, name: StageRef, *, reason: str) -> None:
        """Remove a stage that has not started (and its edges)."""
        reason = check_reason(reason)
        await ask(
            self._env,
            RemoveStage(
                name=one_name(name),
                reason=reason,
                requester=self._requester,
                reply=ReplySlot(),
            ),
        )

    async def replace_pending(self, pipeline: Pipeline, *, reason: str) -> None:
        """Replace every stage that has not started by ``pipeline``.

        A stage of ``pipeline`` whose name is a stage that already started
        or ended is not added again: its output is reused, so the new stages
        can depend on work already done.
        """
        reason = check_reason(reason)
        await ask(self._env, self._preparer().replace_pending(pipeline, reason))

    async def cancel_stage(self, name: StageRef, *, reason: str) -> None:
        """Cancel one stage: a running one is interrupted, a pending one never runs.

        Its pending dependents are cancelled too.

        Raises:
            UnknownStageError: no such stage.
            StageStateError: the stage already ended.
            RunClosedError: the run has ended.
        """
        reason = check_reason(reason)
        await ask(
            self._env,
            CancelStage(
                name=one_name(name),
                reason=reason,
                requester=self._requester,
                reply=ReplySlot(),
            ),
        )

    async def signal(self, name: str, payload: Any = None, *, reason: str) -> None:
        """Send the signal ``name`` with ``payload`` to this run.

        The next stage to wait for ``name`` (`StageContext.wait_signal`), or
        the one waiting longest, receives it; until then it waits in the
        run's mailbox, first in, first out. It is audited (``kind="signal"``,
        with a summary of the payload) and, with a journal, kept there whole:
        a signal taken by a stage attempt that did not succeed goes back to
        the mailbox for the next one, after a crash too.

        Example:
            >>> await run.signal("sign_off", {"approved": True}, reason="reviewed")  # doctest: +SKIP

        Raises:
            InvalidSignalError: the name is not a printable string of at most
                200 characters, or the payload is not plain JSON data (or
                over 1 MB encoded).
            InvalidRequestError: no reason given.
            RunClosedError: the run has ended.
        """
        reason = check_reason(reason)
        name = check_signal_name(name)
        text, summary = encode_payload(name, payload)
        await ask(
            self._env,
            SendSignal(
                name=name,
                text=text,
                summary=summary,
                reason=reason,
                requester=self._requester,
                reply=_Reply(),
            ),
        )

    def changes(self, *, reason: str) -> ChangeBatch:
        """Several changes applied together: ``async with ctx.changes(reason=...) as batch:``.

        Inside the block, ``batch.add_stage``, ``batch.add_edge`` and
        ``batch.expand`` only record the changes (and return the names they
        will add); leaving the block sends them as one request. The
        supervisor validates the whole set, applies it in one step, audits it
        as one record (``kind="change_set"``, with its parts), and starts no
        stage of it before all of it is applied. If any part is refused,
        nothing is applied and leaving the block raises that part's error.
        If the block raises, nothing is sent.

        Example:
            >>> async with ctx.changes(reason="score, then report") as batch:  # doctest: +SKIP
            ...     names = batch.expand(score, items)
            ...     batch.add_stage(report, after=names)
        """
        return ChangeBatch(self, check_reason(reason))


def _mapped_names(request: Expand) -> tuple[str, ...]:
    return tuple([f"{request.spec.name}[{key}]" for key in request.keys])


@final
class ChangeBatch:
    """The changes of one `ChangeRequests.changes` block, sent when it ends."""

    __slots__ = ("_owner", "_parts", "_reason")

    def __init__(self, owner: ChangeRequests, reason: str) -> None:
        self._owner = owner
        self._reason = reason
        self._parts: list[ChangePart] = []

    def add_stage(
        self,
        spec: StageSpec,
        *,
        after: StageRef | Iterable[StageRef] | None = None,
        before: StageRef | Iterable[StageRef] | None = None,
    ) -> str:
        """Record a stage to add (see `ChangeRequests.add_stage`); return its name."""
        part = self._owner._preparer().add_stage(spec, after, before, self._reason)
        self._parts.append(part)
        return part.spec.name

    def add_edge(self, upstream: StageRef, downstream: StageRef) -> None:
        """Record an edge to add (see `ChangeRequests.add_edge`)."""
        self._parts.append(
            self._owner._preparer().add_edge(upstream, downstream, self._reason)
        )

    def expand(
        self,
        spec: StageSpec,
        items: Iterable[Any],
        *,
        key: Callable[[Any], object] | None = None,
        after: StageRef | Iterable[StageRef] | None = None,
        params: ItemParams | None = None,
    ) -> list[str]:
        """Record stages mapped over items (see `ChangeRequests.expand`); return their names."""
        part = self._owner._preparer().expand(
            spec, items, self._reason, key, after, self._owner._key_prefix, params
        )
        self._parts.append(part)
        return list(_mapped_names(part))

    async def __aenter__(self) -> ChangeBatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            return  # the block failed: nothing is sent
        parts = tuple(self._parts)
        refused = next((part.refused for part in parts if part.refused), None)
        await ask(
            self._owner._env,
            ChangeSet(
                parts=parts,
                reason=self._reason,
                requester=self._owner._requester,
                reply=ReplySlot(),
                refused=refused,
            ),
        )
