"""The JSON the control API answers with: runs, graphs, audit records, events.

Everything is encoded with ``ensure_ascii=True``: a stage name or a reason
holding any string Python can (a lone surrogate included) is escaped, never
an encoding error.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .._events import (
    EventsLost,
    GraphChanged,
    StageFinished,
    StageQueued,
    StageStarted,
)

if TYPE_CHECKING:
    from .._audit import AuditRecord
    from .._events import RunEvent
    from .._run import Run

__all__ = ["audit_form", "dumps", "event_form", "run_form", "run_summary"]


def dumps(value: Any) -> bytes:
    """JSON text, ASCII only (any string escapes), as bytes."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _status(run: Run) -> str:
    status: str = run._supervisor.status
    if run.done and run._result is not None:
        status = run._result.status
    return status


def run_summary(run: Run) -> dict[str, Any]:
    """``{"id", "name", "status"}``."""
    return {"id": run.id, "name": run.name, "status": _status(run)}


def run_form(run: Run) -> dict[str, Any]:
    """A run's graph as it is now: states, edges, version."""
    snapshot = run.snapshot()
    return {
        **run_summary(run),
        "version": snapshot.version,
        "stages": dict(snapshot.states),
        "edges": [[upstream, downstream] for upstream, downstream in snapshot.edges()],
    }


def audit_form(record: AuditRecord) -> dict[str, Any]:
    """One audit record, every field."""
    return {
        "seq": record.seq,
        "kind": record.kind,
        "requester": record.requester,
        "reason": record.reason,
        "accepted": record.accepted,
        "version_before": record.version_before,
        "version_after": record.version_after,
        "wall_time": record.wall_time,
        "added": list(record.added),
        "removed": list(record.removed),
        "edges": [list(edge) for edge in record.edges],
        "cancelled": list(record.cancelled),
        "error_type": record.error_type,
        "error": record.error,
        "parts": [[kind, list(names)] for kind, names in record.parts],
        "signal": record.signal,
        "carried": record.carried,
    }


def event_form(event: RunEvent) -> tuple[str, dict[str, Any]]:
    """An event's name in the stream, and its data."""
    match event:
        case StageQueued(stage=stage):
            return "stage_queued", {"stage": stage}
        case StageStarted(stage=stage):
            return "stage_started", {"stage": stage}
        case StageFinished(stage=stage, state=state):
            return "stage_finished", {"stage": stage, "state": state}
        case GraphChanged(record=record) if record.kind == "signal":
            return "signal", audit_form(record)
        case GraphChanged(record=record):
            return "graph_changed", audit_form(record)
        case EventsLost(count=count):
            return "lost", {"count": count}
    return "unknown", {}  # pragma: no cover - a new event kind is shown, not lost
