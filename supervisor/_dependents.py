"""Removing one dependent of a stage in O(1), whatever the number of its dependents.

A node of the live graph lists the stages that wait for it
(``dependents``). Removing stages that have not started (``remove_stage``,
undoing a change, a replay) takes each out of the lists of the stages it
waits for; with ``list.remove`` on a stage with 10,000 dependents, removing
all of them cost the square. `drop_dependent` costs O(1), amortised.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

__all__ = ["Dependents", "drop_dependent"]


class Dependents(Protocol):
    """What `drop_dependent` reads and writes of a node (`Node` has it all)."""

    dependents: list[Any]
    ended_dependents: int
    slots: dict[Any, int] | None


_SEARCHED: Final = 32
"""Lists of dependents up to this long are searched for the one removed."""


def drop_dependent(owner: Dependents, node: Any) -> None:
    """Remove ``node`` from ``owner.dependents`` in O(1), amortised.

    The newest dependent, at the end, is popped. From a short list, the
    dependent is found and removed in place. From a long one, it is found in
    ``owner.slots`` and the last dependent takes its place: removing
    thousands of dependents of one stage, in any order, costs what they
    are, where ``list.remove`` cost the square. The removed stage has not
    started, so it is past the ``ended_dependents`` cursor, and so is the
    dependent that moves (the order of siblings carries no meaning).

    ``owner.slots`` indexes ``dependents`` from the first: its entries are
    the positions below ``len(slots)``, kept right by every removal here;
    what was appended since is indexed when first needed. An entry that no
    longer holds (the supervisor rebuilt the list) is never trusted: the
    index is rebuilt.
    """
    nodes = owner.dependents
    slots = owner.slots
    if nodes and nodes[-1] is node:
        nodes.pop()
        if slots:
            slots.pop(node, None)
        return
    if len(nodes) <= _SEARCHED:
        nodes.remove(node)
        owner.slots = None  # positions moved: index again if the list grows
        return
    pos = _slot_of(owner, node)
    if pos < owner.ended_dependents:  # pragma: no cover - never a pending stage
        del nodes[pos]
        owner.ended_dependents -= 1
        owner.slots = None
        return
    slots = owner.slots
    assert slots is not None  # indexed by _slot_of
    del slots[node]
    last = nodes.pop()
    if last is not node:
        nodes[pos] = last
        slots[last] = pos


def _slot_of(owner: Dependents, node: Any) -> int:
    """Where ``node`` is in ``owner.dependents``, indexing what is not indexed yet."""
    nodes = owner.dependents
    slots = owner.slots
    if slots is None:
        slots = owner.slots = {}
    pos = slots.get(node)
    if pos is not None and pos < len(nodes) and nodes[pos] is node:
        return pos
    if pos is None:  # appended since the list was indexed: index the rest
        for later in range(len(slots), len(nodes)):
            slots[nodes[later]] = later
        pos = slots.get(node)
        if pos is not None and pos < len(nodes) and nodes[pos] is node:
            return pos
    # The list was rebuilt elsewhere, or the node is not in it: start over.
    slots.clear()
    for index, dependent in enumerate(nodes):
        slots[dependent] = index
    pos = slots.get(node)
    if pos is None:
        msg = f"{node!r} is not a dependent of {owner!r}"
        raise ValueError(msg)
    return pos
