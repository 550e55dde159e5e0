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
        origins: every stage in memory, by name, with the sequence number of
            the audit record of the change that added it (None for a stage of
            the pipeline the run started with).
    """

    run_id: str
    status: str
    version: int
    states: Mapping[str, StageState]
    dependencies: Mapping[str, tuple[str, ...]]
    origins: Mapping[str, int | None]

    def edges(self) -> Iterator[tuple[str, str]]:
        """Every edge, as ``(upstream, downstream)``."""
        for name, deps in self.dependencies.items():
            for dep in deps:
                yield dep, name
