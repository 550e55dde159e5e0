"""Messages that actors and clients send to a run's `GraphSupervisor`.

Every message is an immutable attrs class. A stage actor reports how its stage
ended with exactly one outcome message; a client (a stage, an interceptor or
the `Run` handle) asks for a change with a request that carries a reply slot,
a memory channel with a buffer of one that the supervisor answers with
``send_nowait`` and never blocks on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import outcome
import trio

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from ._spec import StageSpec

__all__ = [
    "AddEdge",
    "AddStage",
    "CancelRun",
    "CancelStage",
    "Expand",
    "Message",
    "RemoveStage",
    "ReplacePending",
    "ReplySlot",
    "Request",
    "StageCancelled",
    "StageFailed",
    "StageOutcome",
    "StageSkipped",
    "StageSucceeded",
]

ReplySlot: TypeAlias = trio.MemorySendChannel[outcome.Outcome[Any]]
"""Where the supervisor puts its answer to one request."""


# -- outcomes: how a stage ended -------------------------------------------------


@attrs.frozen
class StageSucceeded:
    """The stage returned ``value``."""

    token: object
    value: Any


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


StageOutcome: TypeAlias = StageSucceeded | StageFailed | StageCancelled | StageSkipped


# -- requests: changes asked of the graph ---------------------------------------


@attrs.frozen(kw_only=True)
class AddStage:
    """Add ``spec`` after the stages ``after`` and before the pending ``before``."""

    spec: StageSpec
    after: tuple[str, ...]
    before: tuple[str, ...]
    reason: str
    requester: str
    reply: ReplySlot


@attrs.frozen(kw_only=True)
class AddEdge:
    """Make pending stage ``downstream`` wait for ``upstream``."""

    upstream: str
    downstream: str
    reason: str
    requester: str
    reply: ReplySlot


@attrs.frozen(kw_only=True)
class Expand:
    """Add one stage per item (``spec`` mapped over ``items``), after ``after``."""

    spec: StageSpec
    items: tuple[Any, ...]
    keys: tuple[str, ...]
    after: tuple[str, ...]
    reason: str
    requester: str
    reply: ReplySlot


@attrs.frozen(kw_only=True)
class RemoveStage:
    """Remove stage ``name``, which must not have started."""

    name: str
    reason: str
    requester: str
    reply: ReplySlot


@attrs.frozen(kw_only=True)
class ReplacePending:
    """Replace every stage that has not started by ``pipeline``."""

    pipeline: Pipeline
    reason: str
    requester: str
    reply: ReplySlot


@attrs.frozen(kw_only=True)
class CancelStage:
    """Cancel stage ``name``: a running one is interrupted, a pending one never runs."""

    name: str
    reason: str
    requester: str
    reply: ReplySlot


@attrs.frozen(kw_only=True)
class CancelRun:
    """Cancel the whole run."""

    reason: str
    requester: str
    reply: ReplySlot


Request: TypeAlias = (
    AddStage | AddEdge | Expand | RemoveStage | ReplacePending | CancelStage | CancelRun
)
Message: TypeAlias = StageOutcome | Request
