"""The live graph of a run: nodes, edges, states and a topological order.

Only the `GraphSupervisor` of the run writes to it. Invariants it keeps:

* Acyclic, with a topological order kept incrementally: for every edge
  ``u -> v``, ``u.order < v.order``. A new node gets an order above every
  other, so adding a node with upstream edges only costs O(edges). A new edge
  between existing nodes that violates the order is checked and repaired with
  the Pearce-Kelly algorithm, visiting only the nodes whose order lies between
  the two ends (the affected region), never the whole graph.
* ``node.waiting`` is the number of dependencies of a pending node that have
  not yet let it through (succeeded, or were skipped under the
  ``none_failed`` trigger). A pending node with ``waiting == 0`` is ready.
* Every method validates before it changes anything, so a refused change
  leaves the graph exactly as it was.
* No recursion: every traversal uses an explicit stack.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any, Final

import attrs

from dagvisor.actors import NO_ITEM, Sentinel, StageSpec, StageState

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import trio

    from dagvisor.actors import Pipeline

__all__ = ["RELEASED", "LiveGraph", "Node"]


RELEASED: Final = Sentinel("RELEASED")
"""The output of a stage released under ``retain_outputs="final"``."""

PENDING = StageState.PENDING
SUCCEEDED = StageState.SUCCEEDED
SKIPPED = StageState.SKIPPED


@attrs.define(eq=False, repr=False)
class Node:
    """One stage of a live graph. Slotted: a run may hold millions."""

    name: str
    spec: StageSpec
    deps: tuple[Node, ...]
    order: int
    created_by: int = -1
    """Sequence number of the change that added the stage; -1 for the pipeline."""
    item: Any = NO_ITEM
    key: str | None = None
    item_print: object = None
    """What tells the item from another (see ``_requests.fingerprint``)."""
    dependents: list[Node] = attrs.Factory(list)
    state: StageState = PENDING
    waiting: int = 0
    output: Any = None
    error: BaseException | None = None
    started: float | None = None
    finished: float = 0.0
    scope: trio.CancelScope | None = None
    readers: int = 0
    """Dependents still pending: they will read this node's output when they start."""
    ended_dependents: int = 0
    """How many of ``dependents``, from the first, are known to have ended (a
    cursor: appended or removed dependents are never before it)."""

    def __repr__(self) -> str:
        return f"<Node {self.name!r} {self.state}>"

    def lets_through(self, child: Node) -> bool:
        """Whether this node, now terminal, lets a pending child proceed."""
        return self.state is SUCCEEDED or (
            self.state is SKIPPED and child.spec.trigger == "none_failed"
        )


class LiveGraph:
    """Nodes by name, their edges, and an incremental topological order."""

    __slots__ = ("_next_order", "last_region", "nodes")

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._next_order = 0
        self.last_region = 0
        """Nodes visited by the last cycle check or reorder (a cost figure)."""

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
                    dep.dependents.append(node)
                    dep.readers += 1
            else:
                node = Node(spec.name, spec, (), order)
                roots.append(node)
            nodes[spec.name] = node
            order += 1
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
    ) -> Node:
        """Add a node after ``deps`` (which must be in the graph; no check here).

        The caller has checked that the name is free. Upstream edges alone
        cannot close a cycle, and the new node's order is above every other.
        """
        dep_tuple = tuple(deps)
        node = Node(
            spec.name if name is None else name,
            spec,
            dep_tuple,
            self._next_order,
            created_by,
            item,
            key,
            item_print,
        )
        self._next_order += 1
        waiting = 0
        for dep in dep_tuple:
            dep.dependents.append(node)
            dep.readers += 1
            if not dep.lets_through(node):
                waiting += 1
        node.waiting = waiting
        self.nodes[node.name] = node
        return node

    def cycle_path(self, upstream: Node, downstream: Node) -> list[str] | None:
        """The cycle an edge ``upstream -> downstream`` would close, or None.

        Returned as names ``[upstream, downstream, ..., upstream]``. Only nodes
        whose order lies between the two ends are visited.
        """
        if upstream is downstream:
            return [upstream.name, upstream.name]
        if upstream.order < downstream.order:
            return None
        path, _ = self._forward_region(downstream, upstream.order, target=upstream)
        if path is None:
            return None
        return [upstream.name, *path]

    def _forward_region(
        self, start: Node, upper: int, *, target: Node | None = None
    ) -> tuple[list[str] | None, list[Node]]:
        """Nodes reachable from ``start`` with order <= ``upper``.

        If ``target`` is reached, the search stops and the first item is the
        path ``start -> ... -> target`` as names (a cycle was found).
        """
        parent: dict[Node, Node | None] = {start: None}
        stack = [start]
        region: list[Node] = []
        while stack:
            node = stack.pop()
            region.append(node)
            self.last_region = len(region)
            for child in node.dependents:
                if child is target:
                    path = [target.name]
                    back: Node | None = node
                    while back is not None:
                        path.append(back.name)
                        back = parent[back]
                    path.reverse()
                    return path, region
                if child.order <= upper and child not in parent:
                    parent[child] = node
                    stack.append(child)
        return None, region

    def _backward_region(self, start: Node, lower: int) -> list[Node]:
        """Nodes that reach ``start``, with order >= ``lower``."""
        seen = {start}
        stack = [start]
        region: list[Node] = []
        while stack:
            node = stack.pop()
            region.append(node)
            for dep in node.deps:
                if dep.order >= lower and dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return region

    def add_edge(self, upstream: Node, downstream: Node) -> None:
        """Add ``upstream -> downstream``; the caller checked `cycle_path` is None."""
        if upstream.order > downstream.order:
            self._reorder(upstream, downstream)
        downstream.deps = (*downstream.deps, upstream)
        upstream.dependents.append(downstream)
        upstream.readers += 1
        if not upstream.lets_through(downstream):
            downstream.waiting += 1

    def _reorder(self, upstream: Node, downstream: Node) -> None:
        """Pearce-Kelly: move the affected region so ``upstream`` precedes ``downstream``."""
        _, forward = self._forward_region(downstream, upstream.order)
        backward = self._backward_region(upstream, downstream.order)
        forward.sort(key=_order_of)
        backward.sort(key=_order_of)
        moved = backward + forward
        orders = sorted(node.order for node in moved)
        for node, order in zip(moved, orders, strict=True):
            node.order = order

    # -- removing --------------------------------------------------------------------

    def remove_edge(self, upstream: Node, downstream: Node) -> None:
        """Remove ``upstream -> downstream`` (undoing `add_edge`; the order stays valid)."""
        downstream.deps = tuple(dep for dep in downstream.deps if dep is not upstream)
        _drop_from(upstream.dependents, downstream)
        upstream.readers -= 1
        if not upstream.lets_through(downstream):
            downstream.waiting -= 1

    def remove_node(self, node: Node) -> None:
        """Remove a node and its edges. The caller checked it has not started."""
        for dep in node.deps:
            _drop_from(dep.dependents, node)
            dep.readers -= 1
        for child in node.dependents:
            child.deps = tuple(dep for dep in child.deps if dep is not node)
            if not node.lets_through(child):
                child.waiting -= 1
        node.dependents = []
        node.deps = ()
        del self.nodes[node.name]


def _order_of(node: Node) -> int:
    return node.order


def _drop_from(nodes: list[Node], node: Node) -> None:
    """Remove ``node`` from a list of dependents (the newest, at the end, in O(1))."""
    if nodes and nodes[-1] is node:
        nodes.pop()
    else:
        nodes.remove(node)
