"""The runs a served runtime answers for: every run going, and the last ended ones.

Kept only while the runtime serves its control API: a runtime that does
not serve holds no run after it ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from .._run import Run

__all__ = ["RunIndex"]

_ENDED_KEPT = 200


@final
class RunIndex:
    """Runs by id, in the order they started; ended ones beyond a bound are forgotten."""

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}

    def add(self, run: Run) -> None:
        """Remember a run that just started (or was resumed)."""
        self._runs.pop(run.id, None)
        self._runs[run.id] = run
        ended = [key for key, known in self._runs.items() if known.done]
        for key in ended[: max(0, len(ended) - _ENDED_KEPT)]:
            del self._runs[key]

    def get(self, run_id: str) -> Run | None:
        """The run of that id, or None."""
        return self._runs.get(run_id)

    def all(self) -> list[Run]:
        """Every run known, oldest first."""
        return list(self._runs.values())
