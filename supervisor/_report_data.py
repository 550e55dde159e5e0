"""What the report's graph view is given: its boxes, edges and listed stages.

A plain JSON-able mapping built from a `GraphModel` and the run's result
(``graph_view.js`` draws it). Each box lists some of its stages with their
state, run time, output and parameters, all shortened; a straight chain of
up to `CHAIN_INLINE` stages lists all of them (it is drawn stage by stage).
At most `LISTED` stages are listed in all, so a report stays small however
large the run. Every text is made encodable and one line, its control
characters as escapes (`_text`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from dagvisor.actors import RecordedError, StageState
from dagvisor.actors._errors import message_of
from dagvisor.actors._params import params_text

from ._export import COLOURS
from ._text import line_text, preview, shortened

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._report_graph import Box, GraphModel
    from ._result import RunResult

__all__ = ["CHAIN_INLINE", "LISTED", "PER_BOX", "box_form", "graph_data"]

CHAIN_INLINE: Final = 64
PER_BOX: Final = 20
LISTED: Final = 1_500
OUTPUT_WIDTH: Final = 160
_ABSENT: Final = object()


def _params_of(result: RunResult, name: str) -> str | None:
    """A stage's parameters as JSON on one line (as its lineage says), shortened."""
    found = result.params.get(name)
    if not found:
        return None
    return shortened(line_text(params_text(found)), OUTPUT_WIDTH)


def _output_of(result: RunResult, name: str, state: StageState) -> str | None:
    if state is not StageState.SUCCEEDED:
        return None
    try:
        value = result.outputs.get(name, _ABSENT)
    except Exception:  # an output mapping of a journal read back: stay total
        value = _ABSENT
    if value is _ABSENT:
        return "(not kept in memory)"
    return preview(value, OUTPUT_WIDTH)


def _error_of(result: RunResult, name: str) -> str | None:
    error = result.errors.get(name)
    if error is None:
        return None
    if isinstance(error, RecordedError):
        text = error.recorded
    else:
        text = f"{type(error).__name__}: {message_of(error)}"
    return shortened(line_text(text[: OUTPUT_WIDTH * 2]), OUTPUT_WIDTH)


class _Listing:
    """The stages listed so far, each once, within the budget."""

    __slots__ = ("index", "result", "stages")

    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.stages: list[dict[str, Any]] = []
        self.index: dict[str, int] = {}

    @property
    def room(self) -> int:
        return LISTED - len(self.stages)

    def add(self, name: str) -> int:
        known = self.index.get(name)
        if known is not None:
            return known
        result = self.result
        state = result.states[name]
        timing = result.timings[name]
        origin = result.origins[name]
        entry: dict[str, Any] = {"name": line_text(name), "state": state.value}
        if timing.started is not None:
            entry["took"] = round(timing.duration, 6)
        if origin is not None:
            entry["added"] = line_text(
                f"#{origin.seq} {origin.kind} from {origin.requester}"
            )
            entry["why"] = line_text(origin.reason)
        shown = {
            "output": _output_of(result, name, state),
            "params": _params_of(result, name),
            "error": _error_of(result, name),
        }
        entry.update((key, text) for key, text in shown.items() if text is not None)
        self.index[name] = len(self.stages)
        self.stages.append(entry)
        return self.index[name]


def box_form(
    box: Box, number: Mapping[int, int], *, inline: bool, stages: list[Any]
) -> dict[str, Any]:
    """One box of the drawn graph as the page's script reads it (the report's
    and the live view's alike); ``number``: each box's position, by ``id``."""
    return {
        "kind": box.kind,
        "label": line_text(box.label),
        "note": box.note,
        "state": box.state.value,
        "counts": {s.value: n for s, n in box.counts.items()},
        "size": len(box.members),
        "added": box.added,
        "origin": line_text(box.origin),
        "inline": inline,
        "stages": stages,
        "deps": [number[id(dep)] for dep in box.deps],
        "by": None if box.by is None else number[id(box.by)],
    }


def _listed_members(box: Box, states: Mapping[str, StageState]) -> list[str]:
    """Which of a box's stages to list: failed ones first, then in graph order."""
    if box.kind == "stage":
        return box.members
    failed = [m for m in box.members if states[m] is StageState.FAILED][:PER_BOX]
    first = set(failed)
    rest = [m for m in box.members[: PER_BOX * 2] if m not in first]
    return (failed + rest)[:PER_BOX]


def graph_data(
    result: RunResult, model: GraphModel, states: Mapping[str, StageState]
) -> dict[str, Any]:
    """The graph view's input: see the module docstring.

    ``states`` are the result's, read once (a plain mapping is faster).
    """
    listing = _Listing(result)
    number = {id(box): i for i, box in enumerate(model.boxes)}
    boxes: list[dict[str, Any]] = []
    for box in model.boxes:
        inline = (
            box.kind == "chain"
            and len(box.members) <= CHAIN_INLINE
            and listing.room >= len(box.members)
        )
        wanted = box.members if inline else _listed_members(box, states)
        listed = [listing.add(m) for m in wanted[: max(listing.room, 0)]]
        # A member already listed by another box costs nothing more.
        listed += [
            listing.index[m] for m in wanted[len(listed) :] if m in listing.index
        ]
        boxes.append(box_form(box, number, inline=inline, stages=listed))
    return {
        "boxes": boxes,
        "stages": listing.stages,
        "total": result.stats.stages,
        "left_out": model.left_out,
        "listed_max": LISTED,
        "colours": {s.value: list(c) for s, c in COLOURS.items()},
    }
