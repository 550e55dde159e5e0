"""A stage of a live graph (`Node`) and the sentinels its fields may hold.

A node is slotted and holds a stage's run state: its state, its output or
error, its times, its edges (``deps`` and ``dependents``) and its place in
the topological order, which `LiveGraph` (`_graph`) keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast

import attrs

from dagvisor.actors import NO_ITEM, StageSpec, StageState
from dagvisor.actors._context import Sentinel

if TYPE_CHECKING:
    import trio

__all__ = ["NO_DEPENDENTS", "RELEASED", "Node"]


RELEASED: Final = Sentinel("RELEASED")
"""The output of a stage released under ``retain_outputs="final"``."""

NO_DEPENDENTS: Final = cast("list[Any]", ())
"""`Node.dependents` of a node without any: an empty tuple, which refuses to be
appended to (use `add_dependent`)."""

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
    dependents: list[Node] = NO_DEPENDENTS
    """The stages that wait for this one. Shared and empty until the first is
    added with `add_dependent` (most stages of a large run have none: no list
    each for the cyclic collector to walk); never appended to directly."""
    state: StageState = PENDING
    waiting: int = 0
    output: Any = None
    error: BaseException | None = None
    started: float | None = None
    """When it ran: its first attempt had its slot (None: it never ran)."""
    finished: float = 0.0
    queued: float | None = None
    """When its actor started waiting for a slot or a limit (None: it never queued)."""
    scope: trio.CancelScope | None = None
    readers: int = 0
    """Dependents still pending: they will read this node's output when they start."""
    ended_dependents: int = 0
    """How many of ``dependents``, from the first, are known to have ended (a
    cursor: appended or removed dependents are never before it)."""
    slots: dict[Node, int] | None = None
    """Where dependents are in ``dependents``, once one was removed from a long
    list (see `drop_dependent`); each entry is checked before it is trusted."""

    def __repr__(self) -> str:
        return f"<Node {self.name!r} {self.state}>"

    def add_dependent(self, child: Node) -> None:
        """``child`` waits for this node (its list is made with the first one)."""
        if self.dependents:
            self.dependents.append(child)
        else:
            self.dependents = [child]

    def lets_through(self, child: Node) -> bool:
        """Whether this node, now terminal, lets a pending child proceed."""
        return self.state is SUCCEEDED or (
            self.state is SKIPPED and child.spec.trigger == "none_failed"
        )
