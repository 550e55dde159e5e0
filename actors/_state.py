"""The states a stage passes through, from pending to one terminal state."""

from __future__ import annotations

import enum

__all__ = ["TERMINAL_STATES", "StageState"]


class StageState(enum.StrEnum):
    """Where a stage is in its life.

    ``PENDING``, ``QUEUED`` and ``RUNNING`` are the only states a stage can
    leave; every other state is terminal. A run ends exactly when every
    stage is terminal.

    A stage is ``PENDING`` until its dependencies let it start. Then its
    actor starts: a stage whose body needs room (a thread, a worker
    process, a Dask slot, or a named limit: ``@stage(limit=...)``) is
    ``QUEUED`` until its first attempt has it, then ``RUNNING``; an
    ``async def`` stage without a limit never waits and is ``RUNNING`` at
    once. A retry waits for its room again, untimed, while its stage stays
    ``RUNNING``.
    """

    PENDING = "pending"
    QUEUED = "queued"
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
