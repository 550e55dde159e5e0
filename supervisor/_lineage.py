"""Lineage: where a stage came from, what it read, and what became of it.

Answers for every stage the run's audit trail names, whatever became of it:
a stage still in the graph (its state, times and inputs), a stage removed
by a change (``remove_stage`` or ``replace_pending``: who added it, who
removed it, when and why; only a stage that had not started can be removed),
and a stage that left memory once it ended (``retain_outputs="journal"``,
or a streamed pipeline moving on: the journal keeps its record). Only a name no change ever mentioned and the
graph does not hold is an unknown stage.

The records that name a stage come from the audit's per-stage index
(`AuditLog.for_stage`), never from a scan of the whole trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, final

import attrs

from dagvisor.actors import StageState, UnknownStageError
from dagvisor.actors._params import params_text

from ._text import line_text, when_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._audit import AuditLog, AuditRecord
    from ._graph import Node
    from ._history import Attempt

__all__ = ["NO_STAGE_GONE", "ConsumedOutput", "GoneStages", "Lineage", "lineage_of"]


class GoneStages(Protocol):
    """The stages that left a run's memory (the supervisor's table of names)."""

    def created_by(self, name: str) -> int | None:
        """The seq of the change that added ``name`` (-1: the pipeline's own),
        or None if no such stage left memory."""
        ...


@final
class _NoStageGone:
    """For a run read back from a journal: every stage is there."""

    __slots__ = ()

    def created_by(self, name: str) -> int | None:
        return None


NO_STAGE_GONE: GoneStages = _NoStageGone()


@final
@attrs.frozen
class ConsumedOutput:
    """An upstream output a stage read: whose, and when it was produced.

    Attributes:
        stage: the upstream stage.
        produced_at: when that stage finished, seconds since the epoch.
    """

    stage: str
    produced_at: float


@final
@attrs.frozen(kw_only=True)
class Lineage:
    """Where a stage came from, what it read and what became of it.

    Attributes:
        stage: the stage.
        state: how it ended (or its state now, for a run still going); None
            when the stage is no longer in the graph (see ``in_graph``).
        created_by: the audit record of the change that added it (who asked,
            why, when), or None for a stage of the pipeline the run started with.
        item_key: the key of a mapped stage (`expand`), else None.
        consumed: the upstream outputs it read, in dependency order.
        started_at: when it started, seconds since the epoch (None if it never
            ran, or is no longer in memory).
        finished_at: when it ended, seconds since the epoch (None if it has not,
            or is no longer in memory).
        changes: every audit record that names the stage, in order.
        in_graph: False for a stage removed by a change (``removed_by`` says
            which) or dropped from memory after it ended
            (``retain_outputs="journal"`` or a streamed pipeline;
            ``Journal.result`` reads it back whole).
        removed_by: the audit record of the change that removed the stage
            (``remove_stage`` or ``replace_pending``), while it stays removed.
            Only a stage that had not started can be removed: it never ran.
        params: the stage's parameters (``ctx.params``); empty when it has
            none or is no longer in memory.
        attempts: each attempt since the stage was added, as the journal
            recorded it: when it started and ended, how, and its error (a
            stage retried, or run again after a resume, has several). Read
            back from a journal (``Journal.result``, ``Journal.lineage``,
            ``dagvisor lineage``); empty for a run read live.
    """

    stage: str
    state: StageState | None
    created_by: AuditRecord | None
    item_key: str | None
    consumed: tuple[ConsumedOutput, ...]
    started_at: float | None
    finished_at: float | None
    changes: tuple[AuditRecord, ...]
    in_graph: bool = True
    removed_by: AuditRecord | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    attempts: tuple[Attempt, ...] = ()

    @property
    def dropped(self) -> bool:
        """Whether the stage ended and left memory (``retain_outputs="journal"``, streams)."""
        return not self.in_graph and self.removed_by is None

    def __str__(self) -> str:
        if self.created_by is None:
            origin = "part of the pipeline the run started with"
        else:
            origin = f"added by {_change(self.created_by)}"
        if self.removed_by is not None:
            fate = "removed"
        elif self.state is None:
            fate = "dropped from memory"
        else:
            fate = self.state.value
        lines = [f"{line_text(self.stage)} [{fate}]", f"  origin: {origin}"]
        if self.removed_by is not None:
            lines.append(f"  removed by {_change(self.removed_by)}")
            lines.append("  it never ran: only a stage that has not started is removed")
        elif self.state is None:
            lines.append(
                "  it ended and was dropped from memory (retain_outputs='journal' or "
                "a streamed pipeline); its state, times and inputs are in the journal"
            )
        if self.item_key is not None:
            lines.append(f"  mapped item key: {line_text(self.item_key)}")
        if self.params:
            lines.append(f"  parameters: {line_text(params_text(self.params))}")
        lines.extend(
            f"  read output of {consumed.stage!r} (produced {when_text(consumed.produced_at)})"
            for consumed in self.consumed
        )
        if self.started_at is not None:
            lines.append(f"  started {when_text(self.started_at)}")
        if self.finished_at is not None:
            lines.append(f"  finished {when_text(self.finished_at)}")
        if len(self.attempts) > 1 or any(
            attempt.outcome in ("interrupted", "retried") for attempt in self.attempts
        ):
            lines.append(f"  ran {len(self.attempts)} times:")
            lines.extend(f"    {_attempt(attempt)}" for attempt in self.attempts)
        lines.extend(f"  change: {line_text(str(record))}" for record in self.changes)
        return "\n".join(lines)


def _attempt(attempt: Attempt) -> str:
    """One attempt on a line: its number, when, how long, how it ended."""
    line = f"attempt {attempt.number}: started {when_text(attempt.started_at)}"
    if attempt.ended_at is not None:
        line += f", ended {when_text(attempt.ended_at)} ({attempt.ended_at - attempt.started_at:.3f} s)"
    line += f", {_OUTCOMES[attempt.outcome]}"
    if attempt.error is not None:
        line += f": {line_text(attempt.error)}"
    return line


_OUTCOMES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retried": "failed, then retried",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "interrupted": "cut short: the run stopped while it ran, and was resumed",
    "running": "no end recorded (running, or the run died)",
}


def _change(record: AuditRecord) -> str:
    return (
        f"change #{record.seq} ({record.kind}) requested by {record.requester!r} "
        f"at {when_text(record.wall_time)}: {line_text(record.reason)}"
    )


def lineage_of(
    name: str,
    *,
    nodes: Mapping[str, Node],
    audit: AuditLog,
    gone: GoneStages,
    wall_offset: float,
    where: str,
    attempts: Callable[[str], tuple[Attempt, ...]] | None = None,
) -> Lineage:
    """The lineage of stage ``name`` of a run.

    Args:
        name: the stage.
        nodes: the run's graph, by name.
        audit: the run's audit trail, with its per-stage index.
        gone: the stages that left memory, with the change that added each.
        wall_offset: added to the nodes' times to make them wall-clock.
        where: the run, for an error message.
        attempts: a stage's attempts, by name (a run read back).

    Raises:
        UnknownStageError: the graph has no such stage and no change names it.
    """
    changes = tuple(audit.for_stage(name))
    node = nodes.get(name)
    if node is not None:
        found = _in_graph(node, changes, audit, wall_offset)
        if attempts is not None:
            found = attrs.evolve(found, attempts=attempts(name))
        return found
    created_seq = gone.created_by(name)
    if created_seq is not None:
        return Lineage(
            stage=name,
            state=None,
            created_by=None if created_seq < 0 else audit[created_seq],
            item_key=None,
            consumed=(),
            started_at=None,
            finished_at=None,
            changes=changes,
            in_graph=False,
        )
    if not changes:
        raise UnknownStageError(name, where=where)
    added, removed = _last_added_and_removed(name, changes)
    return Lineage(
        stage=name,
        state=None,
        created_by=added,
        item_key=None,
        consumed=(),
        started_at=None,
        finished_at=None,
        changes=changes,
        in_graph=False,
        removed_by=removed,
    )


def _last_added_and_removed(
    name: str, changes: Sequence[AuditRecord]
) -> tuple[AuditRecord | None, AuditRecord | None]:
    """The change that last added ``name`` (None: the pipeline's own) and the
    change that removed it since (None: it was not removed, but dropped)."""
    added: AuditRecord | None = None
    removed: AuditRecord | None = None
    for record in changes:
        if not record.accepted:
            continue
        # A record that removes and adds the same name (replace_pending
        # swapping a pending stage for a new one) removes it first.
        if name in record.removed:
            removed = record
        if name in record.added:
            added, removed = record, None
    return added, removed


def _in_graph(
    node: Node,
    changes: tuple[AuditRecord, ...],
    audit: AuditLog,
    wall_offset: float,
) -> Lineage:
    ran = node.started is not None
    return Lineage(
        stage=node.name,
        state=node.state,
        created_by=None if node.created_by < 0 else audit[node.created_by],
        item_key=node.key,
        consumed=tuple(
            ConsumedOutput(dep.name, dep.finished + wall_offset)
            for dep in node.deps
            if ran and dep.state is StageState.SUCCEEDED
        ),
        started_at=None if node.started is None else node.started + wall_offset,
        finished_at=node.finished + wall_offset if node.state.is_terminal else None,
        changes=changes,
        params=node.spec.params,
    )
