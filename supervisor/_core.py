"""The state of one run: its live graph, its counters, and every stage transition.

`RunCore` is what the supervisor owns and the only thing it writes. It is
plain synchronous code over plain data: no trio, no I/O, no user code. A
transition records what it did (a journal record, an event) and leaves the
stages it made ready in ``ready``, for the supervisor to start; so the whole
core can be driven and checked without an event loop.

Invariants:

* ``unfinished`` counts the stages in the graph that are not terminal (the
  run ends when it reaches zero); ``done`` counts every stage that became
  terminal, those that left memory since included, so it never decreases;
  ``running`` and ``queued`` count the stages in those states.
* A started stage that may wait for room (`StageSpec.queues`) is queued
  until its actor says its first attempt has it (`run`); any other starts
  running at once.
* A pending stage's ``waiting`` is the number of its dependencies that have
  not let it through; a pending stage with ``waiting == 0`` is ready.
* A stage a change adds is recorded (audit, journal) before anything about
  its end is: changes queue the stages to settle and to start
  (`settle_new`), and `after_change` settles them once the change is
  recorded.
* Per finished stage the work is O(1) plus its edges; a failure settles the
  stages after it with an explicit stack (chains may be a million deep).
* ``started`` holds exactly the stages that started (queued or running) and
  have not ended; a queued stage's actor exists, so it is not pending (a
  ``replace_pending`` keeps it) and the stages after it wait for it. Every
  pending stage is either ready (in ``ready``) or waits for a stage that has
  not ended, so the pending stages are those reached from ``started`` and
  ``ready`` through pending stages (`pending_stages`): found without looking
  at the stages that ended.
"""

from __future__ import annotations

import sys
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, final

from dagvisor.actors import StageState

from ._snapshot import GraphSnapshot

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagvisor.actors._stored import Encoded

    from ._audit import AuditLog
    from ._events import EventLog
    from ._graph import LiveGraph, Node
    from ._retention import Retention
    from ._run_records import RunRecords

__all__ = ["BLOCKED", "RunCore"]


def _order(node: Node) -> int:
    return node.order


PENDING = StageState.PENDING
QUEUED = StageState.QUEUED
RUNNING = StageState.RUNNING
SUCCEEDED = StageState.SUCCEEDED
FAILED = StageState.FAILED
SKIPPED = StageState.SKIPPED
CANCELLED = StageState.CANCELLED
UPSTREAM_FAILED = StageState.UPSTREAM_FAILED
_QUEUED: Final = QUEUED.value
_RUNNING: Final = RUNNING.value

_TERMINAL: Final = frozenset(state for state in StageState if state.is_terminal)

BLOCKED: Final[dict[StageState, StageState]] = {
    FAILED: UPSTREAM_FAILED,
    UPSTREAM_FAILED: UPSTREAM_FAILED,
    SKIPPED: SKIPPED,
    CANCELLED: CANCELLED,
}
"""The state a pending stage takes when a dependency ends in one that does not
let it through."""


@final
class RunCore:
    """The live graph of one run and its counters, and every stage transition."""

    __slots__ = (
        "_to_settle",
        "added",
        "audit",
        "done",
        "events",
        "failed",
        "graph",
        "now",
        "queued",
        "ready",
        "records",
        "retention",
        "run_id",
        "started",
        "unfinished",
        "version",
    )

    def __init__(
        self,
        run_id: str,
        graph: LiveGraph,
        audit: AuditLog,
        retention: Retention,
        events: EventLog,
        records: RunRecords | None,
        now: Callable[[], float],
    ) -> None:
        self.run_id = run_id
        self.graph = graph
        self.audit = audit
        self.retention = retention
        self.events = events
        self.records = records
        """The run's journal records, or None for a run without a journal."""
        self.now = now
        """The run's clock."""
        self.unfinished = len(graph)
        self.done = 0
        self.started: dict[Node, None] = {}
        """The stages that started (queued or running) and have not ended
        (insertion-ordered)."""
        self.queued = 0
        """How many of them are queued."""
        self.added = 0
        self.failed = 0
        self.version = 0
        self.ready: list[Node] = []
        """Stages that became ready: the supervisor starts them, in order."""
        self._to_settle: list[tuple[Node, StageState]] = []

    # -- stages starting and ending -------------------------------------------------

    def start(self, node: Node) -> dict[str, Any]:
        """Mark ``node`` running, or queued if it may wait for room; return its
        inputs (upstream outputs, by name)."""
        now = self.now()
        queues = node.spec.queues
        self.started[node] = None
        if queues:
            node.state = QUEUED
            self.queued += 1
            node.queued = now
        else:
            node.state = RUNNING
            node.started = now
        # Outputs were frozen by the stages that produced them: shared as they are.
        inputs = {}
        for dep in node.deps:  # a loop, not a comprehension: this is the hot path
            if dep.state is SUCCEEDED:
                inputs[dep.name] = dep.output
        if self.retention.release:  # after the inputs were taken: now they may go
            self.retention.left_pending(node)
        if queues:
            if self.records is not None:
                self.records.queued(node, now)
            if self.events.readers:
                self.events.moved(node.name, _QUEUED, now)
        else:
            if self.records is not None:
                self.records.started(node, now)
            if self.events.readers:
                self.events.moved(node.name, _RUNNING, now)
        return inputs

    def run(self, node: Node, when: float) -> None:
        """A queued stage's first attempt had its room at ``when``: it is running."""
        node.state = RUNNING
        self.queued -= 1
        node.started = when
        if self.records is not None:
            self.records.started(node, when)
        if self.events.readers:
            self.events.moved(node.name, _RUNNING, when)

    def finish(
        self,
        node: Node,
        state: StageState,
        now: float,
        encoded: Encoded | None = None,
    ) -> None:
        """Make ``node`` terminal, and let the stages after it go or settle them too."""
        # What _ended does, inlined: this is the hot path (once per stage).
        if self.records is not None:
            self.records.ended(node, state, now, encoded)
        retention = self.retention
        if node.state is RUNNING:
            del self.started[node]
        elif node.state is QUEUED:
            del self.started[node]
            self.queued -= 1
        elif retention.release and node.state is PENDING:
            retention.left_pending(node)
        if state is FAILED:
            self.failed += 1
        node.state = state
        node.finished = now
        node.scope = None
        self.unfinished -= 1
        self.done += 1
        if retention.drop:
            retention.ended(node)
        if self.events.readers:
            self.events.moved(node.name, state._value_, now)
        if state is SUCCEEDED:
            ready = self.ready
            for child in node.dependents:
                child.waiting -= 1
                if child.waiting == 0 and child.state is PENDING:
                    ready.append(child)
            if retention.release:
                retention.release_if_read(node)  # every consumer may have read it
            return
        # A stage that did not succeed settles the pending stages after it,
        # transitively (explicit stack: chains may be a million deep).
        stack = [node]
        while stack:
            parent = stack.pop()
            for child in parent.dependents:
                if child.state is not PENDING:
                    continue
                if parent.lets_through(child):
                    child.waiting -= 1
                    if child.waiting == 0:
                        self.ready.append(child)
                    continue
                self._ended(child, BLOCKED[parent.state], now, None)
                stack.append(child)

    def _ended(
        self,
        node: Node,
        state: StageState,
        now: float,
        encoded: Encoded | None,
    ) -> None:
        if self.records is not None:
            self.records.ended(node, state, now, encoded)
        if node.state is RUNNING:
            del self.started[node]
        elif node.state is QUEUED:
            del self.started[node]
            self.queued -= 1
        elif self.retention.release and node.state is PENDING:
            self.retention.left_pending(node)
        if state is FAILED:
            self.failed += 1
        node.state = state
        node.finished = now
        node.scope = None
        self.unfinished -= 1
        self.done += 1
        if self.retention.drop:
            self.retention.ended(node)
        if self.events.readers:
            self.events.moved(node.name, state._value_, now)

    @property
    def running(self) -> int:
        """How many stages started, have their room (not queued) and have not ended."""
        return len(self.started) - self.queued

    def pending_stages(self) -> list[Node]:
        """Every pending stage, in topological order: O(pending + their edges).

        Walks down from the stages that started and the ready ones through
        pending stages only (see the invariants above); the stages that
        ended are never looked at, however many are in memory.
        """
        found: dict[Node, None] = {}
        stack = [node for node in self.ready if node.state is PENDING]
        started = self.started
        if sys.getsizeof(started) > 1024 + 128 * len(started):
            # A dict keeps its size when entries leave, and iterating it walks
            # the holes too: after a burst of starts, compact it once.
            started = self.started = dict(started)
        for node in started:
            stack.extend(node.dependents)
        while stack:
            node = stack.pop()
            if node.state is PENDING and node not in found:
                found[node] = None
                stack.extend(node.dependents)
        return sorted(found, key=_order)

    # -- stages a change adds, rewires or removes ------------------------------------

    def note_added(self, node: Node) -> None:
        """A change added ``node`` to the graph."""
        self.unfinished += 1
        self.added += 1
        if self.retention.watches_added:
            self.retention.added(node)

    def note_removed(self, node: Node) -> None:
        """A change took ``node``, pending, out of the graph (or a change was undone)."""
        self.unfinished -= 1
        self.retention.removed(node)

    def settle_new(self, node: Node) -> None:
        """A new or rewired pending stage: mark it to settle, to start, or let it wait.

        Both happen in `after_change`, once the change is recorded: a stage a
        change adds must be in the journal before its end is.
        """
        if node.state is not PENDING:
            return
        for dep in node.deps:
            if dep.state in _TERMINAL and not dep.lets_through(node):
                self._to_settle.append((node, BLOCKED[dep.state]))
                return
        if node.waiting == 0:
            self.ready.append(node)

    def forget_pending(self) -> None:
        """A change was refused or undone: nothing it marked may settle or start."""
        self._to_settle.clear()
        self.ready.clear()

    def after_change(self) -> None:
        """Settle the stages a recorded change blocked (the ready ones stay in ``ready``)."""
        if self._to_settle:
            settle, self._to_settle = self._to_settle, []
            now = self.now()
            for node, state in settle:
                if node.state is PENDING:
                    self.finish(node, state, now)

    # -- a look from outside ---------------------------------------------------------

    def snapshot(self, status: str) -> GraphSnapshot:
        """The live graph now (a copy: O(stages), never on the hot path)."""
        nodes = self.graph.nodes
        return GraphSnapshot(
            run_id=self.run_id,
            status=status,
            version=self.version,
            states=MappingProxyType({name: node.state for name, node in nodes.items()}),
            dependencies=MappingProxyType(
                {
                    name: tuple(dep.name for dep in node.deps)
                    for name, node in nodes.items()
                }
            ),
            origins=MappingProxyType(
                {
                    name: None if node.created_by < 0 else node.created_by
                    for name, node in nodes.items()
                }
            ),
        )
