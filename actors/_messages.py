"""Messages that actors and clients send to a run's `GraphSupervisor`.

Every message is an immutable attrs class. A stage actor reports how its stage
ended with exactly one outcome message; a client (a stage, an interceptor or
the `Run` handle) asks for a change with a request that carries a reply slot,
a memory channel with a buffer of one that the supervisor answers with
``send_nowait`` and never blocks on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

import attrs

from ._reply import ReplySlot
from ._signal_messages import (
    SendSignal,
    SignalMessage,
    SignalsReturned,
    WaitSignal,
    WithdrawWait,
)

if TYPE_CHECKING:
    import trio

    from ._errors import DagvisorError
    from ._pipeline import Pipeline
    from ._spec import StageSpec
    from ._stored import Encoded

__all__ = [
    "AddEdge",
    "AddStage",
    "AttemptFailed",
    "AttemptStarted",
    "CancelRun",
    "CancelStage",
    "ChangeKind",
    "ChangePart",
    "ChangeSet",
    "Expand",
    "FlushJournal",
    "JournalFailed",
    "Message",
    "RemoveStage",
    "ReplacePending",
    "ReplySlot",
    "Request",
    "SendSignal",
    "SignalMessage",
    "SignalsReturned",
    "SlotTaken",
    "StageCancelled",
    "StageFailed",
    "StageOutcome",
    "StageSkipped",
    "StageSucceeded",
    "StagesEnded",
    "WaitSignal",
    "WithdrawWait",
]


# -- outcomes: how a stage ended -------------------------------------------------


@attrs.frozen
class StageSucceeded:
    """The stage returned ``value`` (``encoded`` for the journal, if journaled and
    persisted: see `dagvisor.actors._stored`)."""

    token: object
    value: Any
    encoded: Encoded | None = None


@attrs.frozen
class StageFailed:
    """The stage raised ``error`` on its last attempt."""

    token: object
    error: BaseException


@attrs.frozen
class StageCancelled:
    """The stage's own cancel scope was cancelled (``cancel_stage``)."""

    token: object


@attrs.frozen
class StageSkipped:
    """The stage's ``when`` predicate was false; its body did not run."""

    token: object


@attrs.frozen
class AttemptFailed:
    """An attempt of the stage failed and will be retried (not an outcome).

    Sent only by a journaled run's stages, when the attempt fails (before the
    backoff), so that the journal holds each attempt's end and error.
    """

    token: object
    attempt: int
    error: Exception


@attrs.frozen
class AttemptStarted:
    """A retry of the stage started: attempt number ``attempt`` (not an outcome).

    Sent only by a journaled run's stages, so that a resumed run counts on
    from the attempts that really ran; the first attempt's start is the
    stage's own start, which the supervisor records when it spawns it.
    """

    token: object
    attempt: int


@attrs.frozen
class SlotTaken:
    """The stage's first attempt has its room (slot, limit) at ``time``: it runs.

    Sent once, by the actor of a stage that may queue (`StageSpec.queues`),
    which its supervisor marked ``queued`` when it spawned it; never by an
    ``async def`` stage without a limit, which is running from the start.
    """

    token: object
    time: float


@attrs.frozen
class StagesEnded:
    """Every stage actor of the run has ended (sent by the nursery that held them)."""


@attrs.frozen(eq=False)
class FlushJournal:
    """Set ``done`` once the run's records so far are committed (`Run.wait_committed`)."""

    done: trio.Event


@attrs.frozen
class JournalFailed:
    """The run's records can no longer be committed to its journal: it must stop.

    Sent by the journal writer (a `JournalWriteError`, or `LeaseLostError`
    when another runtime took the run over); the run fails, writing no more.
    """

    error: Exception


StageOutcome: TypeAlias = StageSucceeded | StageFailed | StageCancelled | StageSkipped


ChangeKind: TypeAlias = Literal[
    "add_stage",
    "add_edge",
    "expand",
    "remove_stage",
    "replace_pending",
    "cancel_stage",
    "cancel_run",
    "change_set",
    "signal",
]
"""What a change request asks; each request class names its own as ``kind``."""


# -- requests: changes asked of the graph ---------------------------------------
#
# A request is prepared in the requester's task before it is sent (names
# made plain strings, items frozen, encoded for the journal and fingerprinted,
# specs checked restorable), so that the supervisor never runs user code. A
# problem found then travels as ``refused``: the supervisor audits the
# request and answers with that error, like any refusal.


@attrs.frozen(kw_only=True)
class AddStage:
    """Add ``spec`` after the stages ``after`` and before the pending ``before``.

    ``ref`` is how the journal names ``spec`` (a journaled run only).
    """

    kind: ClassVar[ChangeKind] = "add_stage"

    spec: StageSpec
    after: tuple[str, ...]
    before: tuple[str, ...]
    reason: str
    requester: str
    reply: ReplySlot
    ref: dict[str, Any] | None = None
    refused: DagvisorError | None = None


_new = object.__new__
(
    _set_spec,
    _set_after,
    _set_before,
    _set_reason,
    _set_requester,
    _set_reply,
    _set_ref,
    _set_refused,
) = (AddStage.__dict__[field.name].__set__ for field in attrs.fields(AddStage))
# The slots' own descriptors: the most common request is made by the
# thousand a second, and attrs' frozen __init__ (a bound object.__setattr__
# per field) costs twice as much. `tests/test_requests.py` checks both ways
# give equal requests, field by field.


def add_stage_request(
    spec: StageSpec,
    after: tuple[str, ...],
    before: tuple[str, ...],
    reason: str,
    requester: str,
    ref: dict[str, Any] | None,
    refused: DagvisorError | None,
) -> AddStage:
    """An `AddStage` of prepared values, with a new reply slot, as its constructor makes it."""
    request: AddStage = _new(AddStage)
    _set_spec(request, spec)
    _set_after(request, after)
    _set_before(request, before)
    _set_reason(request, reason)
    _set_requester(request, requester)
    _set_reply(request, ReplySlot())
    _set_ref(request, ref)
    _set_refused(request, refused)
    return request


@attrs.frozen(kw_only=True)
class AddEdge:
    """Make pending stage ``downstream`` wait for ``upstream``."""

    kind: ClassVar[ChangeKind] = "add_edge"

    upstream: str
    downstream: str
    reason: str
    requester: str
    reply: ReplySlot
    refused: DagvisorError | None = None


@attrs.frozen(kw_only=True)
class Expand:
    """Add one stage per item (``spec`` mapped over ``items``), after ``after``.

    ``prints`` tells an item from another without comparing the items (see
    ``_requests.fingerprint``); ``encoded`` holds the items as the journal
    stores them (a journaled run only); ``item_specs``, when given, holds
    each item's spec (``spec`` with that item's parameters).
    """

    kind: ClassVar[ChangeKind] = "expand"

    spec: StageSpec
    items: tuple[Any, ...]
    keys: tuple[str, ...]
    after: tuple[str, ...]
    reason: str
    requester: str
    reply: ReplySlot
    prints: tuple[object, ...] = ()
    encoded: tuple[str, ...] | None = None
    ref: dict[str, Any] | None = None
    refused: DagvisorError | None = None
    item_specs: tuple[StageSpec, ...] = ()
    """One spec per item when ``expand(params=...)`` gave each its parameters."""

    def spec_of(self, position: int) -> StageSpec:
        """The spec of the stage mapped over item ``position``."""
        return self.item_specs[position] if self.item_specs else self.spec


@attrs.frozen(kw_only=True)
class RemoveStage:
    """Remove stage ``name``, which must not have started."""

    kind: ClassVar[ChangeKind] = "remove_stage"

    name: str
    reason: str
    requester: str
    reply: ReplySlot
    refused: DagvisorError | None = None


@attrs.frozen(kw_only=True)
class ReplacePending:
    """Replace every stage that has not started by ``pipeline``.

    ``refs`` is how the journal names the pipeline's specs, in entry order.
    """

    kind: ClassVar[ChangeKind] = "replace_pending"

    pipeline: Pipeline
    reason: str
    requester: str
    reply: ReplySlot
    refs: tuple[dict[str, Any], ...] | None = None
    refused: DagvisorError | None = None


@attrs.frozen(kw_only=True)
class CancelStage:
    """Cancel stage ``name``: a running one is interrupted, a pending one never runs."""

    kind: ClassVar[ChangeKind] = "cancel_stage"

    name: str
    reason: str
    requester: str
    reply: ReplySlot
    refused: DagvisorError | None = None


@attrs.frozen(kw_only=True)
class CancelRun:
    """Cancel the whole run."""

    kind: ClassVar[ChangeKind] = "cancel_run"

    reason: str
    requester: str
    reply: ReplySlot
    refused: DagvisorError | None = None


ChangePart: TypeAlias = AddStage | AddEdge | Expand
"""What a change set is made of (each part's own reply slot is unused)."""


@attrs.frozen(kw_only=True)
class ChangeSet:
    """Several changes applied in one step, whole or not at all."""

    kind: ClassVar[ChangeKind] = "change_set"

    parts: tuple[ChangePart, ...]
    reason: str
    requester: str
    reply: ReplySlot
    refused: DagvisorError | None = None


Request: TypeAlias = (
    AddStage
    | AddEdge
    | Expand
    | RemoveStage
    | ReplacePending
    | CancelStage
    | CancelRun
    | ChangeSet
)
Message: TypeAlias = (
    StageOutcome
    | AttemptFailed
    | AttemptStarted
    | SlotTaken
    | StagesEnded
    | JournalFailed
    | FlushJournal
    | Request
    | SignalMessage
)
