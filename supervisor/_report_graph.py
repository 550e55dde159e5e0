"""The report's drawing of a run's final graph: boxes laid out as inline SVG.

Large graphs stay readable: mapped groups (the stages of one ``expand``)
are drawn as one box with their state counts, straight chains of stages as
one box, and past `MAX_DRAWN` boxes only the first ones in graph order are
drawn (the report's tables still list everything that matters). Iterative
throughout: no recursion over the graph.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING, Final

from dagvisor.actors import StageState

from ._export import COLOURS
from ._text import html_text, shortened

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._audit import AuditRecord

__all__ = ["MAX_DRAWN", "graph_svg"]

MAX_DRAWN: Final = 400
_CHAIN_MIN: Final = 4
_LAYER_MAX: Final = 60

# Which state a collapsed group shows: the most alarming of its members'.
_SEVERITY: Final = (
    StageState.FAILED,
    StageState.UPSTREAM_FAILED,
    StageState.CANCELLED,
    StageState.RUNNING,
    StageState.QUEUED,
    StageState.PENDING,
    StageState.SKIPPED,
    StageState.SUCCEEDED,
)


class _Box:
    """One node of the drawn graph: a stage, a mapped group or a chain."""

    __slots__ = ("deps", "dynamic", "label", "layer", "members", "state", "title")

    def __init__(self, label: str, members: list[str]) -> None:
        self.label = label
        self.members = members
        self.deps: list[_Box] = []
        self.layer = 0
        self.state = StageState.PENDING
        self.dynamic = False
        self.title = ""


def _topological(names: list[str], deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Kahn's order over the result's stages (iterative; ties by listing order)."""
    position = {name: i for i, name in enumerate(names)}
    children: dict[str, list[str]] = {name: [] for name in names}
    waiting = dict.fromkeys(names, 0)
    for name in names:
        for dep in deps[name]:
            if dep in children:
                children[dep].append(name)
                waiting[name] += 1
    ready = deque(name for name in names if waiting[name] == 0)
    order: list[str] = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(names):  # cannot happen for a run's graph; stay total
        seen = set(order)
        order.extend(
            sorted((n for n in names if n not in seen), key=lambda name: position[name])
        )
    return order


def _boxes(
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> tuple[list[_Box], int]:
    """The boxes to draw, in graph order, and how many stages were left undrawn."""
    deps = {name: tuple(d) for name, d in dependencies.items()}
    order = _topological(list(deps), deps)
    # 1. Mapped groups: the stages one expand added, as one box.
    group_of: dict[str, _Box] = {}
    boxes: dict[str, _Box] = {}
    for name in order:
        record = origins[name]
        if record is not None and record.kind == "expand" and len(record.added) > 1:
            key = f"#{record.seq}"
            box = boxes.get(key)
            if box is None:
                base = name.rsplit("[", 1)[0]
                box = boxes[key] = _Box(f"{base}[…] {len(record.added)} mapped", [])
            box.members.append(name)
            group_of[name] = box
        else:
            box = boxes[name] = _Box(name, [name])
            group_of[name] = box
    drawn = list(dict.fromkeys(group_of[name] for name in order))
    for box in drawn:
        seen: set[int] = set()
        for member in box.members:
            for dep_name in deps[member]:
                dep_box = group_of.get(dep_name)
                if (
                    dep_box is not None
                    and dep_box is not box
                    and id(dep_box) not in seen
                ):
                    seen.add(id(dep_box))
                    box.deps.append(dep_box)
    # 2. Straight chains (one way in, one way out) as one box.
    merged_into: dict[int, _Box] = {}
    forward: dict[int, list[_Box]] = {id(b): [] for b in drawn}
    for box in drawn:
        for dep in box.deps:
            forward[id(dep)].append(box)
    result_boxes: list[_Box] = []
    for box in drawn:
        if id(box) in merged_into:
            continue
        run = [box]
        current = box
        while (
            len(current.members) == 1
            and len(forward[id(current)]) == 1
            and len(forward[id(current)][0].deps) == 1
            and len(forward[id(current)][0].members) == 1
        ):
            current = forward[id(current)][0]
            run.append(current)
        if len(run) >= _CHAIN_MIN and len(run[0].members) == 1:
            chain = _Box(
                f"{shortened(run[0].label, 14)} … {shortened(run[-1].label, 14)} ({len(run)})",
                [m for b in run for m in b.members],
            )
            chain.deps = list(run[0].deps)
            for merged in run:
                merged_into[id(merged)] = chain
            forward[id(chain)] = forward[id(run[-1])]
            result_boxes.append(chain)
        else:
            result_boxes.append(box)
    for box in result_boxes:
        box.deps = list(
            dict.fromkeys(merged_into.get(id(dep), dep) for dep in box.deps)
        )
        box.deps = [dep for dep in box.deps if dep is not box]
    # States, dynamic marks and titles.
    for box in result_boxes:
        counts = Counter(states[m] for m in box.members)
        box.state = next(s for s in _SEVERITY if counts.get(s))
        box.dynamic = any(origins[m] is not None for m in box.members)
        if len(box.members) == 1:
            (member,) = box.members
            origin = origins[member]
            how = (
                "part of the pipeline"
                if origin is None
                else f"added by #{origin.seq} {origin.kind} from {origin.requester}: {origin.reason}"
            )
            box.title = f"{member}\n{states[member].value}\n{how}"
        else:
            shown = ", ".join(f"{n} {s.value}" for s, n in counts.most_common())
            box.title = f"{len(box.members)} stages: {box.members[0]} … {box.members[-1]}\n{shown}"
    left_out = 0
    if len(result_boxes) > MAX_DRAWN:
        kept = result_boxes[:MAX_DRAWN]
        left_out = sum(len(b.members) for b in result_boxes[MAX_DRAWN:])
        kept_ids = {id(b) for b in kept}
        for box in kept:
            box.deps = [dep for dep in box.deps if id(dep) in kept_ids]
        result_boxes = kept
    return result_boxes, left_out


def graph_svg(
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> str:
    """The final graph as inline SVG, with a note when stages are left undrawn."""
    boxes, left_out = _boxes(states, dependencies, origins)
    for box in boxes:  # boxes are in graph order: deps come first
        box.layer = max((dep.layer + 1 for dep in box.deps), default=0)
    layers: dict[int, list[_Box]] = {}
    for box in boxes:
        layers.setdefault(box.layer, []).append(box)
    width_step, height_step, box_w, box_h = 200, 38, 170, 26
    position: dict[int, tuple[int, int]] = {}
    hidden = 0
    for layer, members in layers.items():
        for row, box in enumerate(members):
            if row >= _LAYER_MAX:
                hidden += len(box.members)
                continue
            position[id(box)] = (20 + layer * width_step, 20 + row * height_step)
    rows = min(max((len(m) for m in layers.values()), default=1), _LAYER_MAX)
    width = 40 + max(len(layers), 1) * width_step
    height = 40 + rows * height_step
    parts = [
        f'<svg id="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="final graph">'
    ]
    for box in boxes:
        if id(box) not in position:
            continue
        x, y = position[id(box)]
        for dep in box.deps:
            if id(dep) not in position:
                continue
            dx, dy = position[id(dep)]
            x1, y1, x2, y2 = dx + box_w, dy + box_h // 2, x, y + box_h // 2
            mid = (x1 + x2) // 2
            parts.append(
                f'<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>'
            )
    for box in boxes:
        if id(box) not in position:
            continue
        x, y = position[id(box)]
        fill, stroke = COLOURS[box.state]
        dash = ' stroke-dasharray="5,3"' if box.dynamic else ""
        parts.append(
            f'<g class="stage {box.state.value}{" dynamic" if box.dynamic else ""}">'
            f"<title>{html_text(box.title)}</title>"
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" '
            f'fill="{fill}" stroke="{stroke}"{dash}/>'
            f'<text x="{x + 8}" y="{y + 17}">{html_text(shortened(box.label, 24))}</text></g>'
        )
    parts.append("</svg>")
    notes = []
    if left_out or hidden:
        notes.append(
            f"{left_out + hidden:,} stages are not drawn (the graph is large); "
            "the tables below cover them."
        )
    note = "".join(f'<p class="note">{html_text(n)}</p>' for n in notes)
    return note + "".join(parts)
