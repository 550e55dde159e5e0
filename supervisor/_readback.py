"""A run read back from its journal, as a `RunResult`: `Journal.result` and the commands.

Nothing runs and no class is rebuilt (see `_replay`). Stage times are
wall-clock (seconds since the epoch). A run whose record does not say it
ended has status ``"interrupted"``; its stages that were running are
``running``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagvisor.actors import StageState

from ._replay import replay
from ._result import RunResult

if TYPE_CHECKING:
    from dagvisor.actors import StageRegistry

    from ._journal_rows import JournaledRun
    from ._result import RunStatus

__all__ = ["result_from_journal"]


def result_from_journal(
    run: JournaledRun, *, registry: StageRegistry | None
) -> RunResult:
    """The result of a run as its journal records it (read-only; nothing runs).

    Stage times are wall-clock (seconds since the epoch). A run whose record
    does not say it ended has status ``"interrupted"``; its stages that were
    running are ``running``.
    """
    replayed = replay(run, registry=registry, codec=None)
    nodes = replayed.graph.nodes
    status: RunStatus = "interrupted"  # its record does not say it ended
    if run.status in ("succeeded", "failed", "cancelled"):
        status = run.status  # type: ignore[assignment]  # one of RunStatus, checked
    errors = {
        name: node.error
        for name, node in nodes.items()
        if node.state is StageState.FAILED and node.error is not None
    }
    ended = run.ended
    if ended is None:
        ended = max((node.finished for node in nodes.values()), default=run.created)
    return RunResult.build(
        nodes,
        replayed.audit,
        run_id=run.run_id,
        name=run.name,
        status=status,
        errors=errors,
        started_at=run.created,
        duration=max(0.0, ended - run.created),
        added=replayed.added,
        memory=replayed.memory,
    )
