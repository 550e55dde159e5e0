"""Taking over a graph replayed from the journal, to go on with the run.

Kept as they ended: succeeded stages (with their outputs), skipped ones,
and stages cancelled on purpose (``cancel_stage``). Every other stage
(running at the crash, failed, cancelled with the run, never started) is
pending again, and so is a success whose output the journal does not hold
(``persist=False``) when a stage that will run reads it (transitively: its
own unjournaled inputs run again too); otherwise it stays succeeded, its
output released. `restore` sets the run's state from the replay before it
serves; `settle_restored` then settles the pending stages a kept stage
blocks and returns the ones ready to start, in order.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING

from dagvisor.actors import StageState
from dagvisor.actors._freeze import freeze

from ._core import BLOCKED

if TYPE_CHECKING:
    from ._core import RunCore
    from ._graph import Node
    from ._replay import Replayed

__all__ = ["restore", "settle_restored"]

PENDING = StageState.PENDING
SUCCEEDED = StageState.SUCCEEDED
SKIPPED = StageState.SKIPPED
CANCELLED = StageState.CANCELLED


def restore(core: RunCore, restored: Replayed, wall_offset: float) -> None:
    """Make ``core`` the replayed run's state (its times moved to this run's clock)."""
    audit = core.audit
    for node in core.graph:  # pinned first: their records stay in memory
        audit.pin(node.created_by)
    for record in restored.audit:
        audit.append(record)
    core.version = restored.version
    core.added = restored.added
    shift = -wall_offset  # recorded wall-clock times -> this run's clock
    kept = restored.kept_cancelled
    again = _needed_again(core, restored)
    unfinished = 0
    for node in core.graph:
        state = node.state
        # Decoded from the journal: frozen like every value stages share.
        node.item = freeze(node.item)
        if (
            (state is SUCCEEDED and node not in again)
            or state is SKIPPED
            or (state is CANCELLED and node.name in kept)
        ):
            node.output = freeze(node.output)
            if node.started is not None:
                node.started += shift
            if node.queued is not None:
                node.queued += shift
            node.finished += shift
            continue
        node.state = PENDING
        node.output = None
        node.error = None
        node.started = None
        node.queued = None
        node.finished = 0.0
        unfinished += 1
    for node in core.graph:
        node.readers = sum(1 for child in node.dependents if child.state is PENDING)
        if node.state is PENDING:
            node.waiting = sum(
                1
                for dep in node.deps
                if not (dep.state.is_terminal and dep.lets_through(node))
            )
    core.unfinished = unfinished
    core.done = len(core.graph) - unfinished


def _needed_again(core: RunCore, restored: Replayed) -> set[Node]:
    """Successes without a journaled output that a stage which will run reads."""
    unpersisted = restored.unpersisted
    if not unpersisted:
        return set()
    kept = restored.kept_cancelled
    todo = [
        node
        for node in core.graph
        if not (
            node.state is SUCCEEDED
            or node.state is SKIPPED
            or (node.state is CANCELLED and node.name in kept)
        )
    ]
    again: set[Node] = set()
    while todo:  # iterative: chains may be deep
        node = todo.pop()
        for dep in node.deps:
            if dep.state is SUCCEEDED and dep.name in unpersisted and dep not in again:
                again.add(dep)
                todo.append(dep)
    return again


def settle_restored(core: RunCore) -> list[Node]:
    """Settle what kept stages block; the stages ready to start, in order."""
    now = core.now()
    in_order = sorted(core.graph, key=attrgetter("order"))
    for node in in_order:
        if node.state is not PENDING:
            continue
        for dep in node.deps:
            if dep.state.is_terminal and not dep.lets_through(node):
                core.finish(node, BLOCKED[dep.state], now)
                break
    retention = core.retention
    if retention.release:
        for node in in_order:
            retention.release_if_read(node)
    core.ready.clear()  # the roots below are started in order instead
    roots = [node for node in in_order if node.state is PENDING and node.waiting == 0]
    retention.drop_all_ended(in_order)
    return roots
