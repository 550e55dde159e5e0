"""What the versions of a pipeline share: its stages, their dependencies, an order.

`Pipeline` is immutable, and building one change at a time must cost O(1)
a change, so the versions of one line share a `PipelineStore`:

* Lists of specs and of dependency tuples, and an index by name. A
  version sees the first ``count`` entries, as they were at its ``stamp``
  (the store's count of changes when the version was made).
* Only the newest version (its stamp is the store's) changes the store:
  adding a stage appends; adding an edge replaces one stage's dependencies
  in place, and keeps what they were in ``history``, where an older
  version reads them (a bisection over that stage's changes). A change to
  an older version (a branch) is made on a copy of its view: `branch`.
* Labels, a topological order for versions whose insertion order is not
  one (an edge was added against it): ``label(pos)`` is ``pos * GAP``
  unless a reorder moved the stage. An edge ``u -> v`` with ``label(u) <
  label(v)`` cannot close a cycle; otherwise only the stages that reach
  ``u`` with a label above ``v``'s are searched (`region`), and they move
  into the gap below ``v`` (`move_below`); the stages are labelled again
  (Kahn, O(stages)) only when a gap is used up. Labels that are valid for
  the newest version are valid for every older one: its edges are a subset.

Nothing here recurses: million-stage pipelines are fine under Python's
default recursion limit.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._spec import StageSpec

__all__ = ["GAP", "PipelineStore", "kahn"]

GAP: Final = 1 << 32
"""Room between two stages' default labels (32 halvings before a relabel)."""

Deps = tuple[str, ...]


@final
class PipelineStore:
    """The lists, history and labels one line of pipeline versions shares."""

    __slots__ = ("deps", "history", "index", "labels", "specs", "stamp")

    def __init__(
        self,
        specs: list[StageSpec],
        deps: list[Deps],
        index: dict[str, int],
        labels: dict[int, int] | None = None,
    ) -> None:
        self.specs = specs
        self.deps = deps
        self.index = index
        """Stage name to position; a version sees the positions below its count."""
        self.stamp = 0
        """Changes made so far; the version holding the same stamp is the newest."""
        self.history: dict[int, list[tuple[int, Deps]]] = {}
        """By position: ``(stamp of a change, dependencies before it)``, oldest first."""
        self.labels: dict[int, int] = {} if labels is None else labels
        """The labels that are not ``pos * GAP``."""

    # -- reading, as one version sees it ------------------------------------------------

    def deps_at(self, pos: int, stamp: int) -> Deps:
        """The dependencies of the stage at ``pos``, as the version ``stamp`` sees them."""
        if stamp != self.stamp:
            changes = self.history.get(pos)
            if changes:
                first_later = bisect_right(changes, stamp, key=_stamp_of)
                if first_later < len(changes):
                    return changes[first_later][1]
        return self.deps[pos]

    def deps_view(self, count: int, stamp: int) -> list[Deps]:
        """Every stage's dependencies as a version sees them (the caller must not change it)."""
        if stamp == self.stamp:
            return self.deps  # the newest version sees the store as it is
        deps = self.deps[:count]
        for pos in self.history:
            if pos < count:
                deps[pos] = self.deps_at(pos, stamp)
        return deps

    def label(self, pos: int) -> int:
        """A topological label of the stage at ``pos``."""
        return self.labels.get(pos, pos * GAP)

    # -- changing: the newest version only -------------------------------------------------

    def branch(self, count: int, stamp: int, *, labelled: bool) -> PipelineStore:
        """A new store holding what the version ``(count, stamp)`` sees, to change."""
        index = {name: pos for name, pos in self.index.items() if pos < count}
        labels = None
        if labelled:
            labels = {pos: label for pos, label in self.labels.items() if pos < count}
        deps = self.deps_view(count, stamp)[:count]
        return PipelineStore(self.specs[:count], deps, index, labels)

    def append(self, spec: StageSpec, deps: Deps, pos: int) -> None:
        """Add a stage at ``pos``, the end (its default label is above every other)."""
        self.specs.append(spec)
        self.deps.append(deps)
        self.index[spec.name] = pos
        self.stamp += 1

    def set_deps(self, pos: int, deps: Deps) -> None:
        """Replace the dependencies of the stage at ``pos``, keeping what they were."""
        self.stamp += 1
        self.history.setdefault(pos, []).append((self.stamp, self.deps[pos]))
        self.deps[pos] = deps

    # -- the order ---------------------------------------------------------------------------

    def region(
        self, up_pos: int, down_pos: int, stamp: int, *, labelled: bool
    ) -> tuple[dict[int, int | None] | None, list[str] | None]:
        """The stages an edge ``up -> down`` affects, and the cycle it would close.

        ``labelled``: the version's order is the labels (else its insertion
        order, which older versions of a store may keep while newer ones
        moved labels).

        Returns ``(region, path)``: ``region`` is None when the order
        already puts ``up`` first, else every stage that reaches ``up``
        ordered after ``down`` (each with the stage it was reached from);
        ``path`` is the cycle, as names ``down -> ... -> up`` along
        dependencies, or None.
        """
        label = self.label if labelled else _position_label
        index, specs = self.index, self.specs
        floor = label(down_pos)
        if label(up_pos) < floor:
            return None, None
        # Depth first, the target recognised when popped. The stages
        # skipped have a label below down's: down is not among their
        # ancestors, so the path found is the one a search over every
        # ancestor of up would find.
        parent: dict[int, int | None] = {up_pos: None}
        stack = [up_pos]
        while stack:
            pos = stack.pop()
            if pos == down_pos:
                path = []
                node: int | None = pos
                while node is not None:
                    path.append(specs[node].name)
                    node = parent[node]
                return None, path  # down first: down -> ... -> up
            for dep in self.deps_at(pos, stamp):
                dep_pos = index[dep]
                if dep_pos not in parent and label(dep_pos) >= floor:
                    parent[dep_pos] = pos
                    stack.append(dep_pos)
        return parent, None

    def move_below(self, region: Iterable[int], down_pos: int, count: int) -> None:
        """Label the stages of ``region`` below ``down_pos``, keeping their own order.

        Called once the edge into ``down_pos`` is in the store: every stage
        that depends on one of ``region`` has a label above all of them, and
        every dependency outside it one below ``down_pos``'s.
        """
        label, deps, index = self.label, self.deps, self.index
        moved = sorted(region, key=label)
        inside = set(moved)
        low = max(
            (
                label(index[dep])
                for pos in moved
                for dep in deps[pos]
                if index[dep] not in inside
            ),
            default=-GAP,
        )
        step = (label(down_pos) - low) // (len(moved) + 1)
        if step < 1:  # the gap is used up: label every stage again
            self.relabel(count)
            return
        for rank, pos in enumerate(moved, 1):
            self.labels[pos] = low + rank * step

    def relabel(self, count: int) -> None:
        """Label every stage again, ``GAP`` apart, in a topological order."""
        labels = self.labels
        labels.clear()
        for rank, pos in enumerate(kahn(self.deps, self.index, count)):
            if rank != pos:
                labels[pos] = rank * GAP


def _stamp_of(change: tuple[int, Deps]) -> int:
    return change[0]


def _position_label(pos: int) -> int:
    return pos * GAP


def kahn(deps: list[Deps], index: dict[str, int], count: int) -> list[int]:
    """The positions ``0 .. count - 1`` in a topological order of ``deps`` (Kahn's)."""
    waiting = [len(deps[pos]) for pos in range(count)]
    dependents: list[list[int]] = [[] for _ in range(count)]
    for pos in range(count):
        for dep in deps[pos]:
            dependents[index[dep]].append(pos)
    ready = [pos for pos in range(count) if waiting[pos] == 0]
    found: list[int] = []
    while ready:
        pos = ready.pop()
        found.append(pos)
        for child in dependents[pos]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return found
