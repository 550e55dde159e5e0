"""The messages of signals: sending one to a run, waiting for one, giving one back.

A signal is sent to its run's supervisor, which owns the run's mailbox (see
``dagvisor.supervisor._mailbox``). A stage waits for one with a request the
supervisor answers from the mailbox, at once or when one arrives. A waiter
that is cancelled withdraws its request, and a stage attempt that fails
before a retry gives back the signals it took, so no signal is lost to an
attempt that did not succeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    from ._errors import DagvisorError
    from ._reply import ReplySlot

__all__ = [
    "SendSignal",
    "Signal",
    "SignalMessage",
    "SignalsReturned",
    "WaitSignal",
    "WithdrawWait",
]


@attrs.frozen(kw_only=True, eq=False)
class SendSignal:
    """Put a signal in the run's mailbox (answered once it is audited).

    ``text`` is the payload's JSON text and ``summary`` its short form for
    the audit trail, both made in the sender's task.
    """

    kind: ClassVar[Literal["signal"]] = "signal"

    name: str
    text: str
    summary: str
    reason: str
    requester: str
    reply: ReplySlot
    refused: DagvisorError | None = None


@attrs.frozen(eq=False)
class WaitSignal:
    """The stage ``token`` waits for the next signal ``name`` (answered with its text)."""

    name: str
    token: object
    reply: ReplySlot


@attrs.frozen(eq=False)
class WithdrawWait:
    """The waiter of ``request`` was cancelled: it takes nothing.

    If the supervisor had already answered it, the signal goes back to the
    front of the mailbox.
    """

    request: WaitSignal


@attrs.frozen
class SignalsReturned:
    """An attempt of stage ``token`` failed and is retried: what it took goes back."""

    token: object


Signal: TypeAlias = tuple[int, str, str]
"""A signal in a run's mailbox: its id (the seq of its audit record), name and
payload text."""

SignalMessage: TypeAlias = SendSignal | WaitSignal | WithdrawWait | SignalsReturned
