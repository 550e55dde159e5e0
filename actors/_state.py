"""The states a stage passes through, from pending to one terminal state."""

from __future__ import annotations

import enum

__all__ = ["TERMINAL_STATES", "StageState"]


class StageState(enum.StrEnum):
    """Where a stage is in its life.

    ``PENDING`` and ``RUNNING`` are the only states a stage can leave; every
    other state is terminal. A run ends exactly when every stage is terminal.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def is_terminal(self) -> bool:
        """Whether the stage has ended and will never change state again."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        StageState.SUCCEEDED,
        StageState.FAILED,
        StageState.SKIPPED,
        StageState.CANCELLED,
        StageState.UPSTREAM_FAILED,
    }
)
