"""The signals a replayed run sent, and which stage holds each: a resumed run's mailbox.

A signal is consumed only by a stage that took it and then succeeded (or
was skipped: its predicate decided on it); every other one, never taken,
given back, or held by a stage that failed, was cancelled or was cut short
by a crash, is in the resumed run's mailbox again, in the order it was sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from dagvisor.actors import StageState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dagvisor.actors._signal_messages import Signal

    from ._audit import AuditRecord
    from ._graph import Node

__all__ = ["SignalLedger"]

_CONSUMED = (StageState.SUCCEEDED, StageState.SKIPPED)


@final
class SignalLedger:
    """Signals sent (by their audit record's number, in order) and their holders."""

    __slots__ = ("_holders", "_sent")

    def __init__(self) -> None:
        self._sent: dict[int, Signal] = {}
        self._holders: dict[int, str | None] = {}

    def sent(self, record: AuditRecord, payload: str) -> None:
        """An accepted signal, its audit record and its encoded payload."""
        assert record.signal is not None  # checked by signal_record
        self._sent[record.seq] = (record.seq, record.signal, payload)

    def was_sent(self, number: object) -> bool:
        """Whether ``number`` (as read from an event) names a signal sent."""
        return type(number) is int and number in self._sent

    def held(self, number: int, stage: str | None) -> None:
        """Signal ``number`` is now held by ``stage`` (None: given back)."""
        self._holders[number] = stage

    def kept(self, nodes: Mapping[str, Node]) -> tuple[Signal, ...]:
        """The signals not consumed: not held by a stage that succeeded or skipped."""
        kept = []
        for number, signal in self._sent.items():
            holder = self._holders.get(number)
            node = None if holder is None else nodes.get(holder)
            if node is None or node.state not in _CONSUMED:
                kept.append(signal)
        return tuple(kept)
