"""A snapshot of a live graph: what a run looks like at one moment."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from dagvisor.actors import StageState

__all__ = ["GraphSnapshot"]


@final
@attrs.frozen(kw_only=True)
class GraphSnapshot:
    """A run's live graph as it was when `Run.snapshot` was called.

    Attributes:
        run_id: the run.
        status: ``"running"``, or how the run ended.
        version: the graph version (one more for every change that changed it).
        states: every stage in memory, by name, with its state.
        dependencies: every stage in memory, by name, with the stages it waits for.
    """

    run_id: str
    status: str
    version: int
    states: Mapping[str, StageState]
    dependencies: Mapping[str, tuple[str, ...]]

    def edges(self) -> Iterator[tuple[str, str]]:
        """Every edge, as ``(upstream, downstream)``."""
        for name, deps in self.dependencies.items():
            for dep in deps:
                yield dep, name
