"""Change requests: the one API by which stages, interceptors and `Run` handles
change a running graph, and the path of a request to the supervisor.

A request is prepared in the requester's own task, before it is sent:

* names become plain ``str`` (a subclass could redefine ``__eq__``/``__hash__``);
* mapped items are frozen (see `_freeze`), encoded for the journal when the run
  has one, and fingerprinted, so that "is this the same request again?" (a
  retried or resumed stage asking again) never compares user objects;
* stage specs of a journaled run are checked restorable and given the
  reference the journal stores.

So the supervisor, the single writer of the graph, never runs user code. A
problem found while preparing (an item the journal cannot encode, a key
function that raised, an unregistered function) is not raised at once: it
travels with the request as ``refused``, and the supervisor audits the
request and answers with it, like any refusal. Only a call whose arguments
have the wrong types (a spec that is not a stage, a missing reason) raises
at once, as any Python call would. Every request sent gets exactly one
answer and one audit record.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import trio

from ._errors import (
    DagvisorError,
    InvalidRequestError,
    NotRestorableError,
    RunClosedError,
)
from ._freeze import freeze
from ._messages import (
    AddEdge,
    AddStage,
    CancelStage,
    ChangePart,
    ChangeSet,
    Expand,
    RemoveStage,
    ReplacePending,
    ReplySlot,
    Request,
    add_stage_request,
)
from ._pipeline import Pipeline, StageRef, ref_names
from ._spec import StageSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from ._env import RunEnv

__all__ = [
    "ChangeBatch",
    "ChangeRequests",
    "ask",
    "check_reason",
    "fingerprint",
    "same_print",
]

R = TypeVar("R", bound=Request)

# Items compared by value in the supervisor: builtin equality, no user code.
_PLAIN: Final = frozenset({int, str, bool, type(None)})


def check_reason(reason: object) -> str:
    """A change needs a reason for the audit trail: a non-empty string."""
    if not isinstance(reason, str) or not str.strip(reason):
        msg = (
            f"every change needs a reason for the audit trail, got {reason!r}; "
            'pass reason="why this change is made"'
        )
        raise InvalidRequestError(msg)
    return reason if type(reason) is str else str.__str__(reason)


async def ask(env: RunEnv, request: Request) -> Any:
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


@final
class _Identity:
    """The fingerprint of an item that cannot be pickled: the item itself, by identity."""

    __slots__ = ("item",)

    def __init__(self, item: object) -> None:
        self.item = item


class _Hasher:
    """A file-like sink for pickle that only hashes what it is given."""

    __slots__ = ("digest",)

    def __init__(self) -> None:
        self.digest = hashlib.blake2b(digest_size=16)

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def fingerprint(item: object, encoded: str | None) -> object:
    """What tells ``item`` from another without comparing the items themselves.

    The journal's encoding when there is one; else plain scalars as they are,
    and anything else by a digest of its pickle; an item that cannot be
    pickled is known only by its identity. Compared with `same_print`.
    """
    if encoded is not None:
        return hashlib.blake2b(
            encoded.encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
    if type(item) in _PLAIN:
        return item
    sink = _Hasher()
    try:
        pickle.Pickler(sink, protocol=5).dump(item)
    except Exception:
        return _Identity(item)
    return sink.digest.digest()


def same_print(a: object, b: object) -> bool:
    """Whether two fingerprints are of the same item (builtin comparisons only)."""
    if type(a) is not type(b):
        return False
    if type(a) is _Identity:
        return a.item is b.item  # type: ignore[attr-defined]  # both are _Identity
    return a == b


def _stage(spec: object, action: str) -> StageSpec:
    if not isinstance(spec, StageSpec):
        msg = (
            f"{action} needs a stage (decorate the function with @stage), not {spec!r}"
        )
        raise TypeError(msg)
    return spec


def _one_name(ref: StageRef) -> str:
    (name,) = ref_names(ref)
    return name


def _names(refs: StageRef | Iterable[StageRef] | None, what: str) -> tuple[str, ...]:
    if refs is None:
        return ()
    if (
        (type(refs) is list or type(refs) is tuple)
        and len(refs) == 1
        and type(refs[0]) is str
    ):
        return (refs[0],)  # the common `after=[name]`: nothing else to check
    try:
        return ref_names(refs)
    except TypeError:
        raise
    except Exception as exc:
        msg = f"the {what} stages could not be read: {type(exc).__name__}: {exc}"
        raise InvalidRequestError(msg) from exc


# How the requests of a requester in a run are prepared (see the module docstring).


def _spec_ref(
    env: RunEnv, spec: StageSpec
) -> tuple[dict[str, Any] | None, DagvisorError | None]:
    registry = env.registry
    if registry is None:
        return None, None
    try:
        return registry.reference(spec), None
    except DagvisorError as exc:
        return None, exc


def _add_stage(
    env: RunEnv,
    requester: str,
    spec: StageSpec,
    after: StageRef | Iterable[StageRef] | None,
    before: StageRef | Iterable[StageRef] | None,
    reason: str,
) -> AddStage:
    spec = _stage(spec, "add_stage")
    after_names, before_names = _names(after, "after="), _names(before, "before=")
    ref, refused = (None, None) if env.registry is None else _spec_ref(env, spec)
    return add_stage_request(
        spec, after_names, before_names, reason, requester, ref, refused
    )


def _add_edge(
    requester: str, upstream: StageRef, downstream: StageRef, reason: str
) -> AddEdge:
    return AddEdge(
        upstream=_one_name(upstream),
        downstream=_one_name(downstream),
        reason=reason,
        requester=requester,
        reply=ReplySlot(),
    )


def _expand(
    env: RunEnv,
    requester: str,
    spec: StageSpec,
    items: Iterable[Any],
    reason: str,
    key: Callable[[Any], object] | None,
    after: StageRef | Iterable[StageRef] | None,
    key_prefix: str,
) -> Expand:
    spec = _stage(spec, "expand")
    after_names = _names(after, "after=")
    ref, refused = _spec_ref(env, spec)
    frozen: tuple[Any, ...] = ()
    keys: tuple[str, ...] = ()
    encoded: tuple[str, ...] | None = None
    prints: tuple[object, ...] = ()
    try:
        frozen = tuple([freeze(item) for item in items])
        keys = _keys(spec, frozen, key, key_prefix)
        codec = env.codec
        if codec is not None and refused is None:
            encoded = tuple([_encode(codec, item) for item in frozen])
            if env.check_output is not None:  # one record holds them all
                env.check_output(encoded, f"the items of expand of {spec.name!r}")
        prints = tuple(
            [
                fingerprint(item, None if encoded is None else text)
                for item, text in zip(frozen, encoded or frozen, strict=True)
            ]
        )
    except DagvisorError as exc:
        refused = refused or exc
    except Exception as exc:
        msg = (
            f"expand of {spec.name!r}: its items or keys could not be read: "
            f"{type(exc).__name__}: {exc}"
        )
        refused = refused or InvalidRequestError(msg)
    if refused is not None:  # sent only to be audited and refused
        frozen, keys, encoded, prints = (), (), None, ()
    return Expand(
        spec=spec,
        items=frozen,
        keys=keys,
        after=after_names,
        reason=reason,
        requester=requester,
        reply=ReplySlot(),
        prints=prints,
        encoded=encoded,
        ref=ref,
        refused=refused,
    )


def _replace_pending(
    env: RunEnv, requester: str, pipeline: Pipeline, reason: str
) -> ReplacePending:
    if not isinstance(pipeline, Pipeline):
        msg = f"replace_pending needs a Pipeline, not {pipeline!r}"
        raise TypeError(msg)
    refs: list[dict[str, Any]] | None = None
    refused = None
    if env.registry is not None:
        refs = []
        for spec, _ in pipeline.entries():
            ref, refused = _spec_ref(env, spec)
            if refused is not None:
                break
            assert ref is not None
            refs.append(ref)
    return ReplacePending(
        pipeline=pipeline,
        reason=reason,
        requester=requester,
        reply=ReplySlot(),
        refs=None if refs is None or refused is not None else tuple(refs),
        refused=refused,
    )


def _keys(
    spec: StageSpec,
    items: tuple[Any, ...],
    key: Callable[[Any], object] | None,
    prefix: str,
) -> tuple[str, ...]:
    if key is None:
        return tuple([f"{prefix}{position}" for position in range(len(items))])
    keys = tuple([f"{prefix}{key(item)}" for item in items])
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        clash = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]  # set.add returns None: the `or` keeps scanning
        msg = (
            f"expand of {spec.name!r}: two items have the key {clash!r}; "
            "the key function must give each item its own key"
        )
        raise InvalidRequestError(msg)
    return keys


def _encode(codec: Any, item: object) -> str:
    try:
        text: str = codec.encode(item)
    except NotRestorableError:
        raise
    except Exception as exc:
        msg = (
            f"an item of type {type(item).__qualname__} cannot be written to the "
            f"journal ({type(exc).__name__}: {exc}); map over plain data"
        )
        raise NotRestorableError(msg) from exc
    return text


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
            self._env,
            _add_stage(self._env, self._requester, spec, after, before, reason),
        )
        return result

    async def add_edge(
        self, upstream: StageRef, downstream: StageRef, *, reason: str
    ) -> None:
        """Make the pending stage ``downstream`` wait for ``upstream``."""
        reason = check_reason(reason)
        await ask(self._env, _add_edge(self._requester, upstream, downstream, reason))

    async def expand(
        self,
        spec: StageSpec,
        items: Iterable[Any],
        *,
        reason: str,
        key: Callable[[Any], object] | None = None,
        after: StageRef | Iterable[StageRef] | None = None,
        collect: StageSpec | None = None,
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

        Raises:
            DuplicateStageError, UnknownStageError, StageStateError,
            NotRestorableError, InvalidRequestError, RunClosedError: the
            change was refused; the graph is unchanged.
        """
        reason = check_reason(reason)
        mapped = _expand(
            self._env,
            self._requester,
            spec,
            items,
            reason,
            key,
            after,
            self._key_prefix,
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
                name=_one_name(name),
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
        await ask(
            self._env, _replace_pending(self._env, self._requester, pipeline, reason)
        )

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
                name=_one_name(name),
                reason=reason,
                requester=self._requester,
                reply=ReplySlot(),
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
        owner = self._owner
        part = _add_stage(
            owner._env, owner._requester, spec, after, before, self._reason
        )
        self._parts.append(part)
        return part.spec.name

    def add_edge(self, upstream: StageRef, downstream: StageRef) -> None:
        """Record an edge to add (see `ChangeRequests.add_edge`)."""
        self._parts.append(
            _add_edge(self._owner._requester, upstream, downstream, self._reason)
        )

    def expand(
        self,
        spec: StageSpec,
        items: Iterable[Any],
        *,
        key: Callable[[Any], object] | None = None,
        after: StageRef | Iterable[StageRef] | None = None,
    ) -> list[str]:
        """Record stages mapped over items (see `ChangeRequests.expand`); return their names."""
        owner = self._owner
        part = _expand(
            owner._env,
            owner._requester,
            spec,
            items,
            self._reason,
            key,
            after,
            owner._key_prefix,
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
