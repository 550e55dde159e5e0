"""The live graph of a run: nodes, edges, states and a topological order.

Only the `GraphSupervisor` of the run writes to it. Invariants it keeps:

* Acyclic, with a topological order kept incrementally: for every edge
  ``u -> v``, ``u.order < v.order``. Orders are integers spaced ``_GAP``
  apart when nodes are appended, so there is room between any two: a new
  node goes above every other (O(edges)), or, when it must come before some
  nodes (``before=``), into the gap between its dependencies and them, with
  no reordering at all.
* A new edge ``u -> v`` against the order is checked and repaired in the
  affected region only (Pearce-Kelly): the nodes after ``v`` with order up
  to ``u``'s, and the nodes before ``u`` with order down to ``v``'s. Both
  sides are searched in lockstep and the search stops with the first side
  that is complete: its absence of ``u`` (or ``v``) proves there is no
  cycle, and that side alone is moved into the gap beyond the other end.
  So the cost is proportional to the smaller side, however large the other
  (inserting a check before an early stage of a long chain visits the
  check, not the chain). Only when a gap is used up are both sides
  computed and relabelled together (plain Pearce-Kelly), which spreads
  their labels out again.
* ``node.waiting`` is the number of dependencies of a pending node that have
  not yet let it through (succeeded, or were skipped under the
  ``none_failed`` trigger). A pending node with ``waiting == 0`` is ready.
* Every method validates before it changes anything, so a refused change
  leaves the graph exactly as it was.
* No recursion: every traversal uses an explicit stack.

A stage of it, `Node`, is `_node`'s.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any, Final

from dagvisor.actors import NO_ITEM, StageSpec

from ._dependents import drop_dependent
from ._node import NO_DEPENDENTS, RELEASED, Node

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from dagvisor.actors import Pipeline

# Node and its sentinels are the graph's vocabulary: importable from here too.
__all__ = ["NO_DEPENDENTS", "RELEASED", "LiveGraph", "Node"]


_GAP: Final = 1 << 32
"""Room between two appended nodes' orders (32 halvings before a relabel)."""


class LiveGraph:
    """Nodes by name, their edges, and an incremental topological order."""

    __slots__ = ("_next_order", "last_region", "nodes", "relabels")

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._next_order = 0
        self.last_region = 0
        """Nodes visited by the last cycle check or reorder (a cost figure)."""
        self.relabels = 0
        """How many times the whole graph was labelled again (a cost figure)."""

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> tuple[LiveGraph, list[Node]]:
        """The live graph of a pipeline, and its roots (stages ready at once)."""
        graph = cls()
        nodes = graph.nodes
        roots: list[Node] = []
        # Building a million nodes allocates millions of containers and frees
        # none: the cyclic collector would walk the growing heap again and
        # again for nothing (half the build time at 1,000,000 stages). It is
        # paused for this burst only and left as it was found.
        collecting = gc.isenabled()
        gc.disable()
        try:
            graph._fill(pipeline, nodes, roots)
        finally:
            if collecting:
                gc.enable()
        return graph, roots

    def _fill(
        self, pipeline: Pipeline, nodes: dict[str, Node], roots: list[Node]
    ) -> None:
        order = 0
        for spec, dep_names in pipeline.entries():
            if dep_names:
                deps = tuple([nodes[name] for name in dep_names])
                node = Node(spec.name, spec, deps, order)
                node.waiting = len(deps)
                for dep in deps:
                    dep.add_dependent(node)
                    dep.readers += 1
            else:
                node = Node(spec.name, spec, (), order)
                roots.append(node)
            nodes[spec.name] = node
            order += _GAP
        self._next_order = order

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def get(self, name: str) -> Node | None:
        """The node called ``name``, or None."""
        return self.nodes.get(name)

    # -- adding --------------------------------------------------------------------

    def add_node(
        self,
        spec: StageSpec,
        deps: Iterable[Node],
        *,
        name: str | None = None,
        created_by: int = -1,
        item: Any = NO_ITEM,
        key: str | None = None,
        item_print: object = None,
        before: Iterable[Node] = (),
    ) -> Node:
        """Add a node after ``deps`` (which must be in the graph; no check here).

        The caller has checked that the name is free. Upstream edges alone
        cannot close a cycle. The node's order is above every other, or, if
        it will be made to come before the nodes ``before`` (with
        `add_edge`, by the caller), in the gap between its dependencies and
        them when there is one, so those edges need no reordering.
        """
        dep_tuple = tuple(deps)
        order = self._next_order
        if before:
            low = max((dep.order for dep in dep_tuple), default=-_GAP)
            high = min(later.order for later in before)
            if high - low > 1:
                order = (low + high) // 2
        node = Node(
            spec.name if name is None else name,
            spec,
            dep_tuple,
            order,
            created_by,
            item,
            key,
            item_print,
        )
        if order == self._next_order:
            self._next_order += _GAP
        waiting = 0
        for dep in dep_tuple:
            dep.add_dependent(node)
            dep.readers += 1
            if not dep.lets_through(node):
                waiting += 1
        node.waiting = waiting
        self.nodes[node.name] = node
        return node

    def cycle_path(self, upstream: Node, downstream: Node) -> list[str] | None:
        """The cycle an edge ``upstream -> downstream`` would close, or None.

        Returned as names ``[upstream, downstream, ..., upstream]``. Only nodes
        whose order lies between the two ends are visited, and of those only
        as many as the smaller side of the affected region holds.
        """
        if upstream is downstream:
            return [upstream.name, upstream.name]
        if upstream.order < downstream.order:
            return None
        search = _Search(upstream, downstream)
        self.last_region = search.visited
        return None if search.cycle is None else [upstream.name, *search.cycle]

    def add_edge(self, upstream: Node, downstream: Node) -> None:
        """Add ``upstream -> downstream``; the caller checked `cycle_path` is None."""
        if upstream.order >= downstream.order:
            self._reorder(upstream, downstream)
        downstream.deps = (*downstream.deps, upstream)
        upstream.add_dependent(downstream)
        upstream.readers += 1
        if not upstream.lets_through(downstream):
            downstream.waiting += 1

    def _reorder(self, upstream: Node, downstream: Node) -> None:
        """Make ``upstream`` precede ``downstream``, moving the smaller side of the region."""
        search = _Search(upstream, downstream)
        self.last_region = search.visited
        if search.backward_done:
            # Everything that reaches upstream from down to downstream's
            # order moves below downstream, above its own outside deps.
            region = search.backward
            low = max(
                (
                    dep.order
                    for node in region
                    for dep in node.deps
                    if dep not in region
                ),
                default=-_GAP,
            )
            if _spread(region, low, downstream.order):
                return
        else:
            # Everything downstream reaches up to upstream's order moves above
            # upstream, below its own outside dependents.
            region = search.forward
            high = min(
                (
                    child.order
                    for node in region
                    for child in node.dependents
                    if child not in region
                ),
                default=self._next_order,
            )
            if _spread(region, upstream.order, high):
                if high == self._next_order:
                    self._next_order += _GAP
                return
        # No room left in the gap: label the whole graph again, spread out
        # (rare: a gap holds 32 halvings; amortised over the changes that
        # used it up, and never recursive).
        self._relabel(upstream, downstream)
        if upstream.order >= downstream.order:  # pragma: no cover - a bug
            msg = "the graph's order could not be repaired; this is a bug in dagvisor"
            raise AssertionError(msg)

    def _relabel(self, upstream: Node, downstream: Node) -> None:
        """Give every node a fresh order, ``_GAP`` apart, in a topological order (Kahn),
        counting the edge ``upstream -> downstream`` about to be added."""
        nodes = self.nodes
        pending = {
            id(node): sum(1 for dep in node.deps if nodes.get(dep.name) is dep)
            for node in nodes.values()
        }
        pending[id(downstream)] += 1
        ready = [node for node in nodes.values() if pending[id(node)] == 0]
        ready.sort(key=_order_of, reverse=True)  # keep today's order where it holds
        order = 0
        while ready:
            node = ready.pop()
            node.order = order
            order += _GAP
            children = node.dependents
            if node is upstream:
                children = [*children, downstream]
            for child in children:
                key = id(child)
                if key in pending:
                    pending[key] -= 1
                    if pending[key] == 0:
                        ready.append(child)
        self._next_order = order
        self.relabels += 1

    # -- removing --------------------------------------------------------------------

    def remove_edge(self, upstream: Node, downstream: Node) -> None:
        """Remove ``upstream -> downstream`` (undoing `add_edge`; the order stays valid)."""
        downstream.deps = tuple(dep for dep in downstream.deps if dep is not upstream)
        drop_dependent(upstream, downstream)
        upstream.readers -= 1
        if not upstream.lets_through(downstream):
            downstream.waiting -= 1

    def remove_node(self, node: Node) -> None:
        """Remove a node and its edges. The caller checked it has not started."""
        for dep in node.deps:
            drop_dependent(dep, node)
            dep.readers -= 1
        for child in node.dependents:
            child.deps = tuple(dep for dep in child.deps if dep is not node)
            if not node.lets_through(child):
                child.waiting -= 1
        node.dependents = NO_DEPENDENTS
        node.slots = None
        node.deps = ()
        del self.nodes[node.name]


def _order_of(node: Node) -> int:
    return node.order


def _spread(region: Iterable[Node], low: int, high: int) -> bool:
    """Give ``region``'s nodes orders strictly between ``low`` and ``high``,
    keeping their relative order; False if there is no room."""
    nodes = sorted(region, key=_order_of)
    step = (high - low) // (len(nodes) + 1)
    if step < 1:
        return False
    for index, node in enumerate(nodes, 1):
        node.order = low + index * step
    return True


class _Search:
    """Both sides of the region an edge ``upstream -> downstream`` affects, in lockstep.

    Forward: the nodes ``downstream`` reaches with order up to
    ``upstream``'s; backward: the nodes that reach ``upstream`` with order
    down to ``downstream``'s. One node of each side at a time, until a side
    is complete (no cycle: the other end is not in it) or the forward side
    reaches ``upstream`` (a cycle, kept as names from ``downstream``).
    """

    __slots__ = ("backward", "backward_done", "cycle", "forward", "visited")

    def __init__(self, upstream: Node, downstream: Node) -> None:
        upper, lower = upstream.order, downstream.order
        ahead: dict[Node, Node | None] = {downstream: None}
        behind: dict[Node, Node | None] = {upstream: None}
        forward_stack, backward_stack = [downstream], [upstream]
        self.forward: set[Node] = set()
        self.backward: set[Node] = set()
        self.cycle: list[str] | None = None
        self.backward_done = False
        while forward_stack and backward_stack:
            node = forward_stack.pop()
            self.forward.add(node)
            for child in node.dependents:
                if child is upstream:
                    self.cycle = _path(ahead, node, upstream)
                    break
                if child.order <= upper and child not in ahead:
                    ahead[child] = node
                    forward_stack.append(child)
            if self.cycle is not None:
                break
            node = backward_stack.pop()
            self.backward.add(node)
            for dep in node.deps:
                if dep is downstream:
                    self.cycle = [downstream.name, *_path_back(behind, node)]
                    break
                if dep.order >= lower and dep not in behind:
                    behind[dep] = node
                    backward_stack.append(dep)
            if self.cycle is not None:
                break
        self.backward_done = not backward_stack and self.cycle is None
        self.visited = len(self.forward) + len(self.backward)


def _path(parents: dict[Node, Node | None], last: Node, target: Node) -> list[str]:
    """Names from the search's start to ``last``, then ``target``."""
    path = [target.name]
    back: Node | None = last
    while back is not None:
        path.append(back.name)
        back = parents[back]
    path.reverse()
    return path


def _path_back(children: dict[Node, Node | None], start: Node) -> list[str]:
    """Names from ``start`` along the backward search's links to its origin."""
    path = []
    node: Node | None = start
    while node is not None:
        path.append(node.name)
        node = children[node]
    return path
