"""A run read back from its journal, as a `RunResult`: `Journal.result` and the commands.

Nothing runs and no class is rebuilt (see `_replay`). Stage times are
wall-clock (seconds since the epoch). A run whose record does not say it
ended has status ``"interrupted"``; its stages that were running are
``running``. Its duration leaves out the time it was stopped (`_history`).
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
    run: JournaledRun,
    *,
    registry: StageRegistry | None,
    attempts: bool | str = True,
) -> RunResult:
    """The result of a run as its journal records it (read-only; nothing runs).

    Stage times are wall-clock (seconds since the epoch). A run whose record
    does not say it ended has status ``"interrupted"``; its stages that were
    running are ``running``. With ``attempts`` False, each stage's events are
    not kept (its lineage then lists no attempts), and with a stage's name
    only that stage's are: what `dagvisor show` and `lineage` need, in less
    memory.
    """
    replayed = replay(run, registry=registry, codec=None, attempts=attempts)
    nodes = replayed.graph.nodes
    status: RunStatus = "interrupted"  # its record does not say it ended
    if run.status in ("succeeded", "failed", "cancelled"):
        status = run.status  # type: ignore[assignment]  # one of RunStatus, checked
    errors = {
        name: node.error
        for name, node in nodes.items()
        if node.state is StageState.FAILED and node.error is not None
    }
    history = replayed.history
    return RunResult.build(
        nodes,
        replayed.audit,
        run_id=run.run_id,
        name=run.name,
        status=status,
        errors=errors,
        started_at=run.created,
        duration=history.duration,
        added=replayed.added,
        memory=replayed.memory,
        history=history,
        stage_log=replayed.stage_log,
    )
