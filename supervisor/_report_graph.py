"""The report's model of a run's final graph: which boxes to draw, and their edges.

A box is one stage, a mapped group (the stages one ``expand`` added), a
family (`FAMILY_MIN` or more groups or stages alike: those the members of
one box added, such as one group per partition or one check per flagged
item, or the pipeline's own stages named alike, ``s1`` ... ``s900``, that
wait for the same stages) or a straight chain of stages. So a run of any size is drawn as a summary whose boxes say how many
stages they hold; the page lists a box's stages on demand. Past `MAX_DRAWN`
boxes only the first ones in graph order are kept. The browser lays the
boxes out (`_assets`); nothing here knows coordinates.

Iterative throughout: no recursion over the graph.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from typing import TYPE_CHECKING, Final, Literal

import attrs

from dagvisor.actors import StageState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._audit import AuditRecord

__all__ = ["MAX_DRAWN", "Box", "GraphModel", "graph_model"]

MAX_DRAWN: Final = 400
CHAIN_MIN: Final = 4
FAMILY_MIN: Final = 8

BoxKind = Literal["stage", "group", "family", "chain"]

# Which state a box of several stages shows: the most alarming of its members'.
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

# A name's family: without its mapped key (``item[3.1]``) and trailing
# numbering (``check_07``), so the checks added one by one group together.
_KEY: Final = re.compile(r"\[[^\[]*\]$")
_NUMBERING: Final = re.compile(r"[\s_.:#-]*\d+$")


def base_name(name: str) -> str:
    """The part of a stage's name its siblings share (``item[3]`` -> ``item``)."""
    stem = _KEY.sub("", name)
    stem = _NUMBERING.sub("", stem)
    return stem or name


@attrs.define(eq=False)
class Box:
    """One drawn node: a stage, a mapped group, a family of them, or a chain.

    Attributes:
        kind: what the box stands for.
        label: its name: a stage's, or what its stages' names share.
        note: what it holds, for a box of several stages (``12 mapped``).
        members: its stages, in graph order.
        deps: the boxes it waits for.
        state: the most alarming state of its members.
        counts: its members by state.
        added: how many of its members were added at run time.
        origin: how it came into the graph, for people.
        changes: the changes that added its members (a family: several).
        mapped: whether a family's members were mapped (one group each).
        by: the box holding the stage that asked for this box's first
            member, when a stage of the drawing asked.
    """

    kind: BoxKind
    label: str
    members: list[str]
    note: str = ""
    deps: list[Box] = attrs.field(factory=list)
    state: StageState = StageState.PENDING
    counts: dict[StageState, int] = attrs.field(factory=dict)
    added: int = 0
    origin: str = ""
    changes: int = 0
    mapped: bool = False
    by: Box | None = None


@attrs.frozen
class GraphModel:
    """The boxes to draw in graph order, and how many stages are left undrawn."""

    boxes: list[Box]
    left_out: int


def _topological(names: list[str], deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Kahn's order over the result's stages (iterative; ties by listing order)."""
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
        order.extend(name for name in names if name not in seen)
    return order


class _Mapped:
    """Which part of a change mapped a stage: ``(seq, part)``, or None."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, int]] = {}

    def of(self, name: str, record: AuditRecord) -> tuple[int, int] | None:
        parts = self._parts.get(record.seq)
        if parts is None:
            parts = self._parts[record.seq] = {}
            if record.kind == "expand" and len(record.added) > 1:
                parts.update(dict.fromkeys(record.added, 0))
            for index, (kind, added) in enumerate(record.parts):
                if kind == "expand" and len(added) > 1:
                    parts.update(dict.fromkeys(added, index))
        part = parts.get(name)
        return None if part is None else (record.seq, part)


def _many(name: str) -> str:
    """The label of several stages named like ``name``: ``item[…]``, ``check…``."""
    return base_name(name) + ("[…]" if name.endswith("]") else "…")


def _origin_text(record: AuditRecord | None) -> str:
    if record is None:
        return "part of the pipeline"
    return f"added by change #{record.seq} ({record.kind}) from {record.requester}: {record.reason}"


def _units(
    order: list[str], origins: Mapping[str, AuditRecord | None]
) -> tuple[list[Box], dict[str, Box]]:
    """Stages and mapped groups, in graph order, and each stage's box."""
    box_of: dict[str, Box] = {}
    groups: dict[tuple[int, int], Box] = {}
    units: list[Box] = []
    mapped = _Mapped()
    for name in order:
        record = origins[name]
        key = None if record is None else mapped.of(name, record)
        if key is None:
            box = Box("stage", name, [name], origin=_origin_text(record), changes=1)
            units.append(box)
        else:
            group = groups.get(key)
            if group is None:
                group = groups[key] = Box(
                    "group", _many(name), [], origin=_origin_text(record), changes=1
                )
                units.append(group)
            group.members.append(name)
            box = group
        box_of[name] = box
    return units, box_of


def _families(
    units: list[Box],
    box_of: dict[str, Box],
    origins: Mapping[str, AuditRecord | None],
    deps: Mapping[str, tuple[str, ...]],
) -> list[Box]:
    """Units alike, merged once they are many: the stages or groups that the
    members of one box added, or the pipeline's stages named alike that wait
    for the same stages."""
    key_of: dict[int, tuple[str, str, object]] = {}
    sizes: Counter[tuple[str, str, object]] = Counter()
    asked_by: dict[tuple[str, str, object], str] = {}
    for box in units:
        first = box.members[0]
        record = origins[first]
        if record is None:
            static = ("static", _many(first), tuple(sorted(deps[first])))
            key_of[id(box)] = static
            sizes[static] += 1
            continue
        requester = box_of.get(record.requester)
        who: object = record.requester if requester is None else id(requester)
        key = (box.kind, _many(box.members[0]), who)
        key_of[id(box)] = key
        sizes[key] += 1
        asked_by[key] = record.requester if requester is None else requester.label
    merged: dict[tuple[str, str, object], Box] = {}
    result: list[Box] = []
    for box in units:
        found = key_of.get(id(box))
        if found is None or sizes[found] < FAMILY_MIN:
            result.append(box)
            continue
        family = merged.get(found)
        if family is None:
            origin = (
                "stages of the pipeline named alike, waiting for the same stages"
                if found[0] == "static"
                else f"added by {sizes[found]:,} changes from {asked_by[found]}"
            )
            family = merged[found] = Box(
                "family",
                found[1],
                [],
                origin=origin,
                changes=0 if found[0] == "static" else sizes[found],
                mapped=box.kind == "group",
            )
            result.append(family)
        family.members.extend(box.members)
        for member in box.members:
            box_of[member] = family
    return result


def _link(
    boxes: list[Box], box_of: dict[str, Box], deps: Mapping[str, tuple[str, ...]]
) -> None:
    for box in boxes:
        seen: set[int] = {id(box)}
        for member in box.members:
            for dep_name in deps[member]:
                dep_box = box_of.get(dep_name)
                if dep_box is not None and id(dep_box) not in seen:
                    seen.add(id(dep_box))
                    box.deps.append(dep_box)


def _chains(boxes: list[Box], box_of: dict[str, Box]) -> list[Box]:
    """Straight chains (one way in, one way out) of single stages as one box."""
    forward: dict[int, list[Box]] = {id(b): [] for b in boxes}
    for box in boxes:
        for dep in box.deps:
            forward[id(dep)].append(box)
    merged_into: dict[int, Box] = {}
    result: list[Box] = []

    def single(box: Box) -> bool:
        return box.kind == "stage"

    for box in boxes:
        if id(box) in merged_into:
            continue
        run = [box]
        current = box
        while (
            single(current)
            and len(forward[id(current)]) == 1
            and len(forward[id(current)][0].deps) == 1
            and single(forward[id(current)][0])
        ):
            current = forward[id(current)][0]
            run.append(current)
        if len(run) >= CHAIN_MIN and single(run[0]):
            chain = Box(
                "chain",
                f"{run[0].label} … {run[-1].label}",
                [b.members[0] for b in run],
                deps=list(run[0].deps),
                origin="a straight chain: each stage waits for the one before",
            )
            for part in run:
                merged_into[id(part)] = chain
                box_of[part.members[0]] = chain
            result.append(chain)
        else:
            result.append(box)
    for box in result:
        box.deps = [
            dep
            for dep in dict.fromkeys(merged_into.get(id(d), d) for d in box.deps)
            if dep is not box
        ]
    return result


def _note(box: Box) -> str:
    size = len(box.members)
    if box.kind == "group":
        return f"{size:,} mapped"
    if box.kind == "family" and box.mapped:
        return f"{size:,} mapped in {box.changes:,} expansions"
    if box.kind == "family" and box.changes:
        return f"{size:,} added"
    if box.kind == "family":
        return f"{size:,} stages"
    if box.kind == "chain":
        return f"chain of {size:,}"
    return ""


def graph_model(
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> GraphModel:
    """The boxes that draw a run's final graph; see the module docstring."""
    deps = {name: tuple(d) for name, d in dependencies.items()}
    order = _topological(list(deps), deps)
    units, box_of = _units(order, origins)
    boxes = _families(units, box_of, origins, deps)
    _link(boxes, box_of, deps)
    boxes = _chains(boxes, box_of)
    for box in boxes:
        record = origins[box.members[0]]
        asker = None if record is None else box_of.get(record.requester)
        box.by = asker if asker is not box else None
        counts = Counter(states[m] for m in box.members)
        box.counts = dict(counts)
        box.state = next(s for s in _SEVERITY if counts.get(s))
        box.added = sum(1 for m in box.members if origins[m] is not None)
        box.note = _note(box)
    left_out = 0
    if len(boxes) > MAX_DRAWN:
        kept, dropped = boxes[:MAX_DRAWN], boxes[MAX_DRAWN:]
        left_out = sum(len(b.members) for b in dropped)
        kept_ids = {id(b) for b in kept}
        for box in kept:
            box.deps = [dep for dep in box.deps if id(dep) in kept_ids]
            if box.by is not None and id(box.by) not in kept_ids:
                box.by = None
        boxes = kept
    return GraphModel(boxes, left_out)
