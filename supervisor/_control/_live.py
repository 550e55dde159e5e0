"""What the live view draws of a run now: the report's graph model, and the audit's tail.

The graph is modelled as the report models a final graph (`graph_model`:
stages, mapped groups, families, chains; at most `MAX_DRAWN` boxes) and
given in the form the report's drawing script takes (``graph_view.js``),
with each listed stage's state and, for a stage added at run time, the
change that added it. The run's graph is copied on the event loop (a
snapshot); the model is built from the copy in a worker thread, one at a
time, so a viewer of a large run does not hold the loop for the layout's
grouping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import trio

from dagvisor.actors import StageState

from .._export import COLOURS
from .._report_data import CHAIN_INLINE, LISTED, PER_BOX, box_form
from .._report_graph import graph_model
from .._text import line_text
from ._forms import audit_form, run_summary

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._audit import AuditRecord
    from .._report_graph import Box
    from .._run import Run

__all__ = ["AUDIT_SHOWN", "live_graph"]

AUDIT_SHOWN: Final = 200
"""How many of the latest audit records the page is given."""


def _stage_entry(
    name: str, state: StageState, origin: AuditRecord | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": line_text(name), "state": state.value}
    if origin is not None:
        entry["added"] = line_text(
            f"#{origin.seq} {origin.kind} from {origin.requester}"
        )
        entry["why"] = line_text(origin.reason)
    return entry


def _listed(box: Box, states: Mapping[str, StageState]) -> list[str]:
    if box.kind == "stage":
        return box.members
    failed = [m for m in box.members if states[m] is StageState.FAILED][:PER_BOX]
    first = set(failed)
    return (failed + [m for m in box.members[: PER_BOX * 2] if m not in first])[
        :PER_BOX
    ]


def _model(
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> dict[str, Any]:
    """The drawing script's input (as `_report_data.graph_data` makes for a report)."""
    model = graph_model(states, dependencies, origins)
    stages: list[dict[str, Any]] = []
    index: dict[str, int] = {}

    def listed(name: str) -> int:
        if name not in index:
            index[name] = len(stages)
            stages.append(_stage_entry(name, states[name], origins[name]))
        return index[name]

    number = {id(box): i for i, box in enumerate(model.boxes)}
    boxes: list[dict[str, Any]] = []
    for box in model.boxes:
        room = LISTED - len(stages)
        inline = (
            box.kind == "chain"
            and len(box.members) <= CHAIN_INLINE
            and room >= len(box.members)
        )
        wanted = box.members if inline else _listed(box, states)
        shown = [listed(m) for m in wanted[: max(room, 0)]]
        shown += [index[m] for m in wanted[len(shown) :] if m in index]
        boxes.append(box_form(box, number, inline=inline, stages=shown))
    return {
        "boxes": boxes,
        "stages": stages,
        "total": len(states),
        "left_out": model.left_out,
        "listed_max": LISTED,
        "colours": {s.value: list(c) for s, c in COLOURS.items()},
    }


async def live_graph(run: Run, limiter: trio.CapacityLimiter) -> dict[str, Any]:
    """``{"run", "version", "model", "audit", "audit_total"}`` for the live view.

    The model is built in a worker thread that ``limiter`` admits.
    """
    snapshot = run.snapshot()
    audit = run.audit()
    origins = {
        name: None if seq is None else audit.get(seq)
        for name, seq in snapshot.origins.items()
    }
    total = len(audit)
    tail = [audit_form(record) for record in audit[max(0, total - AUDIT_SHOWN) :]]
    summary = run_summary(run)
    model = await trio.to_thread.run_sync(
        _model, snapshot.states, snapshot.dependencies, origins, limiter=limiter
    )
    return {
        "run": summary,
        "version": snapshot.version,
        "model": model,
        "audit": tail,
        "audit_total": total,
    }
