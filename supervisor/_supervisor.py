"""The GraphSupervisor: the one task that owns and changes a run's live graph.

Invariants:

* It is the only writer of the graph. Stage outcomes and change requests
  arrive on one memory channel and are handled one at a time, in arrival
  order. Handling a message is synchronous, pure graph logic (validate, apply,
  record, reply, start what became ready): there is no await inside a change,
  so every change is atomic by construction.
* A request is validated completely before anything is applied. A refused
  request leaves the graph and its version untouched and is answered with a
  typed error. Every request, accepted or refused, gets one audit record with
  the next sequence number.
* ``_unfinished`` counts the stages that are not terminal. The run ends when
  it reaches zero; as requests are handled in order, nothing is in flight
  then. Requests still queued when the run ends are answered with
  `RunClosedError`, never dropped.
* Per finished stage the work is O(1) plus its edges: no scan of the graph.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections import deque
from operator import attrgetter
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    TypeAlias,
    TypeVar,
    assert_never,
    cast,
)

import attrs
import outcome
import trio

from dagvisor.actors import (
    NO_ITEM,
    AddEdge,
    AddStage,
    AttemptStarted,
    CancelRun,
    CancelStage,
    ChangePart,
    ChangeSet,
    CycleError,
    DagvisorError,
    DuplicateStageError,
    Expand,
    InternalError,
    InvalidRequestError,
    JournalFailed,
    Message,
    RemoveStage,
    ReplacePending,
    Request,
    RunClosedError,
    RunEnv,
    StageCancelled,
    StageContext,
    StageFailed,
    StagesEnded,
    StageSkipped,
    StageSpec,
    StageState,
    StageStateError,
    StageSucceeded,
    StreamedPipeline,
    UnknownStageError,
    freeze,
    ref_names,
    run_stage,
    same_print,
    spec_ref,
)

from ._audit import AuditLog, AuditRecord, ChangeKind
from ._events import EventLog
from ._gone import GoneNames
from ._graph import RELEASED, LiveGraph, Node
from ._result import Event, GraphChanged, StageFinished, StageStarted
from ._snapshot import GraphSnapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from dagvisor.actors import Pipeline, StreamItem

    from ._replay import Replayed
    from ._writer import JournalWriter

__all__ = ["FailurePolicy", "GraphSupervisor", "RetainOutputs"]

logger = logging.getLogger("dagvisor")

FailurePolicy: TypeAlias = Literal["cancel", "continue"]
RetainOutputs: TypeAlias = Literal["all", "final", "journal"]
R = TypeVar("R")

PENDING = StageState.PENDING
RUNNING = StageState.RUNNING
SUCCEEDED = StageState.SUCCEEDED
FAILED = StageState.FAILED
SKIPPED = StageState.SKIPPED
CANCELLED = StageState.CANCELLED
UPSTREAM_FAILED = StageState.UPSTREAM_FAILED

# Audit records kept in memory beyond those of the stages in memory, with
# retain_outputs="journal" (the journal keeps them all).
_RECENT_RECORDS = 1_000

# The end of a failed stage's traceback that the journal keeps (characters).
_TRACEBACK_KEPT = 16_000

# The state a pending stage takes when a dependency ends in a state that
# does not let it through.
_BLOCKED: dict[StageState, StageState] = {
    FAILED: UPSTREAM_FAILED,
    UPSTREAM_FAILED: UPSTREAM_FAILED,
    SKIPPED: SKIPPED,
    CANCELLED: CANCELLED,
}


class _Change:
    """What a change did so far, for its audit record, its reply, and its undoing.

    Handlers append to ``added`` and ``edges`` right after each addition to
    the graph, so that an addition can always be undone (`_undo`) if a later
    step of the same change is refused. A handler that is about to remove
    or settle stages first sets ``undoable`` to False.
    """

    __slots__ = ("added", "cancelled", "edges", "parts", "removed", "undoable", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.added: list[str] = []
        self.removed: list[str] = []
        self.edges: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.parts: list[tuple[str, tuple[str, ...]]] = []
        self.undoable = True

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.edges or self.cancelled)


class GraphSupervisor:
    """Owns one run's live graph; serves its inbox until every stage is terminal."""

    def __init__(
        self,
        *,
        run_id: str,
        pipeline: Pipeline | StreamedPipeline,
        env: RunEnv,
        inbox: trio.MemoryReceiveChannel[Message],
        policy: FailurePolicy,
        retain_outputs: RetainOutputs = "all",
        journal: JournalWriter | None = None,
        restored: Replayed | None = None,
    ) -> None:
        self.run_id = run_id
        # With retain_outputs="journal" the journal holds every record: in
        # memory, the recent ones and those of the stages still in memory.
        self.audit = AuditLog(
            keep_recent=_RECENT_RECORDS if retain_outputs == "journal" else None
        )
        self.errors: dict[str, BaseException] = {}
        self.status: Literal["running", "succeeded", "failed", "cancelled"] = "running"
        self.version = 0
        self.started_wall = time.time()
        self.started_at = trio.current_time()
        # Journal times are wall-clock: the run's clock plus this offset.
        self.wall_offset = self.started_wall - self.started_at
        self.ended_at: float | None = None
        self._env = env
        self._inbox = inbox
        self._policy = policy
        self._release = retain_outputs in ("final", "journal")
        # "journal": a finished stage whose dependents have all ended is also
        # dropped from memory; the journal keeps its record.
        self._drop = retain_outputs == "journal"
        self._ended: list[Node] = []
        # Stages that left memory (dropped or evicted): their names stay taken.
        self._gone = GoneNames()
        self._journal = journal
        self._serving: Request | None = None
        self._journal_out: list[tuple[Any, ...]] = []
        self._journal_seq = 0
        self._where = f"run {run_id!r}"
        self._nursery: trio.Nursery | None = None
        self._stages_closed = trio.Event()
        self._stopping = False
        self._closed = False
        self.events = EventLog()
        self._ready: list[Node] = []
        self._to_settle: list[tuple[Node, StageState]] = []
        self._stream: Iterator[StreamItem] | None = None
        self._window = self._refill_at = 0
        self._previous: str | None = None
        # A streamed run's stages, oldest first (streamed and added at run
        # time alike): the oldest finished ones leave memory as it goes on.
        self._streamed: deque[Node] = deque()
        self._streaming = isinstance(pipeline, StreamedPipeline)
        self.evicted: dict[StageState, int] = dict.fromkeys(StageState, 0)
        self._roots: list[Node]
        if isinstance(pipeline, StreamedPipeline):
            self.graph, self._roots = LiveGraph(), []
            self._stream = pipeline.take()
            self._window = pipeline.window
            self._refill_at = max(1, pipeline.window // 2)
        elif restored is not None:
            self.graph, self._roots = restored.graph, []
        else:
            self.graph, self._roots = LiveGraph.from_pipeline(pipeline)
        self._unfinished = len(self.graph)
        self.running = 0
        self.added = 0
        self.failed = 0
        # Stages that reached a terminal state: a counter, never derived from
        # the graph, which finished stages may leave (streams, retention).
        self.done = 0
        self._now = trio.lowlevel.current_clock().current_time
        self._start_soon: Callable[..., None] | None = None
        self._prior_starts: dict[str, int] = {}
        self._restoring = False
        if restored is not None:
            self._restore(restored)

    @property
    def unfinished(self) -> int:
        """Stages not yet in a terminal state."""
        return self._unfinished

    # -- the actor ---------------------------------------------------------------

    async def host_stages(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        """Hold the nursery that stage actors run in (its scope is the run's).

        Ends when the supervisor cancels it, after every actor has ended.
        """
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()
        finally:
            self._stages_closed.set()
            # Wake the supervisor, which keeps serving its inbox meanwhile.
            # If the inbox is full it is awake anyway; if closed, the run ended.
            with contextlib.suppress(
                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                self._env.outbox.send_nowait(StagesEnded())

    async def serve(self, stage_nursery: trio.Nursery) -> None:
        """Run the graph to its end: every stage terminal, nothing in flight."""
        self._nursery = stage_nursery
        self._start_soon = stage_nursery.start_soon
        receive = self._inbox
        try:
            if self._restoring:
                self._settle_restored()
            roots, self._roots = self._roots, []
            for node in roots:
                if node.state is PENDING and node.waiting == 0:
                    self._spawn(node)
            if self._journal_out:  # the run's first records go out at once
                await self.ship_journal()
            while not self._stopping:
                if self._stream is not None and self._unfinished < self._refill_at:
                    self._refill()
                    continue
                if not self._unfinished:
                    break
                self._handle(await receive.receive())
                while self._unfinished and not self._stopping:
                    try:
                        message = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._handle(message)
                if self._ended:
                    self._drop_ended()
                if self._journal_out:
                    await self.ship_journal()
            if self._stopping:
                # Cancel every stage, and keep answering while they unwind (a
                # shielded cleanup may take its time): changes are refused at
                # once, outcomes recorded, until the last actor has ended.
                stage_nursery.cancel_scope.cancel()
                while not self._stages_closed.is_set():
                    self._handle(await receive.receive())
                self._drain()
        except trio.Cancelled:
            if self.status == "running":
                self.status = "cancelled"
            raise
        finally:
            self._close()

    def _drain(self) -> None:
        """Handle what is queued without waiting (after every actor ended)."""
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._handle(message)

    def _close(self) -> None:
        """End the run: answer every request, close the inbox, settle every stage.

        Also the way out when the supervisor itself failed (a bug): then the
        request it was serving is answered with `InternalError`, queued ones
        with `RunClosedError`, and stages are settled even if settling one
        fails again. Nobody waits forever for an answer.
        """
        now = trio.current_time()
        self._stopping = True
        self._closed = True
        serving, self._serving = self._serving, None
        if serving is not None and not serving.reply.answered:
            msg = "the run ended on a failure of dagvisor while serving this request; please report it"
            serving.reply.send_nowait(outcome.Error(InternalError(msg)))
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not isinstance(
                message,
                StageSucceeded
                | StageFailed
                | StageCancelled
                | StageSkipped
                | AttemptStarted
                | StagesEnded
                | JournalFailed,
            ):
                try:
                    self._refuse_closed(message)
                except Exception:  # not even the audit: still answer
                    if not message.reply.answered:
                        error = RunClosedError(self.run_id)
                        message.reply.send_nowait(outcome.Error(error))
        self._inbox.close()
        if self._unfinished:
            for node in list(self.graph):
                if not node.state.is_terminal:
                    try:
                        self._finish(node, CANCELLED, now)
                    except Exception:  # settled without its effects: the run is over
                        node.state = CANCELLED
                        node.finished = now
        if self.status == "running":
            self.status = "failed" if self.errors else "succeeded"
        self.ended_at = now
        if self._journal is not None:
            self._journal_out.append(("end", self.run_id, self.status, time.time()))
        self.events.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _refuse_closed(self, request: Request) -> None:
        error = RunClosedError(self.run_id)
        self._record(request, _kind_of(request), None, error)
        request.reply.send_nowait(outcome.Error(error))

    def snapshot(self) -> GraphSnapshot:
        """The live graph now (a copy: O(stages), never on the hot path)."""
        nodes = self.graph.nodes
        return GraphSnapshot(
            run_id=self.run_id,
            status=self.status,
            version=self.version,
            states=MappingProxyType({name: node.state for name, node in nodes.items()}),
            dependencies=MappingProxyType(
                {
                    name: tuple(dep.name for dep in node.deps)
                    for name, node in nodes.items()
                }
            ),
        )

    def _publish(self, event: Event) -> None:
        self.events.publish(event)

    # -- dispatch ----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        match message:
            case StageSucceeded(token=token, value=value, encoded=encoded):
                node = cast("Node", token)
                if node.state is RUNNING:
                    node.output = value
                    self._finish(node, SUCCEEDED, self._now(), encoded)
            case StageFailed(token=token, error=error):
                node = cast("Node", token)
                if node.state is RUNNING:
                    node.error = error
                    self.errors[node.name] = error
                    self._finish(node, FAILED, self._now())
                    if self._policy == "cancel":
                        self._stop("failed")
            case StageCancelled(token=token):
                node = cast("Node", token)
                if node.state is RUNNING:
                    self._finish(node, CANCELLED, self._now())
            case StageSkipped(token=token):
                node = cast("Node", token)
                if node.state is RUNNING:
                    self._finish(node, SKIPPED, self._now())
            case AttemptStarted(token=token, attempt=attempt):
                node = cast("Node", token)
                if node.state is RUNNING and self._journal is not None:
                    # So that a resume counts on from the attempts that ran.
                    self._jot(
                        "attempt_started",
                        {
                            "stage": node.name,
                            "attempt": attempt,
                            "time": self._now() + self.wall_offset,
                        },
                    )
            case StagesEnded():
                pass  # a wake-up: serve() checks that the stages have ended
            case JournalFailed():
                # Its records can no longer be committed (the writer drops
                # them): the run stops, and the run task reports why.
                self._stop("failed")
            case AddStage():
                self._serve(message, self._add_stage)
            case AddEdge():
                self._serve(message, self._add_edge)
            case Expand():
                self._serve(message, self._expand)
            case RemoveStage():
                self._serve(message, self._remove_stage)
            case ReplacePending():
                self._serve(message, self._replace_pending)
            case CancelStage():
                self._serve(message, self._cancel_stage)
            case CancelRun():
                self._serve(message, self._cancel_run)
            case ChangeSet():
                self._serve(message, self._change_set)
            case _:
                assert_never(message)

    # -- stage life --------------------------------------------------------------

    def _spawn(self, node: Node) -> None:
        """Start the actor of a ready stage."""
        if self._stopping:
            return
        node.state = RUNNING
        self.running += 1
        node.started = now = self._now()
        scope = node.scope = trio.CancelScope()
        # Outputs were frozen by the stages that produced them: shared as they are.
        inputs = {}
        for dep in node.deps:  # a loop, not a comprehension: this is the hot path
            if dep.state is SUCCEEDED:
                inputs[dep.name] = dep.output
        if self._release:  # after the inputs were taken: now they may go
            self._left_pending(node)
        ctx = StageContext(
            self._env, node, node.name, MappingProxyType(inputs), node.item, node.key
        )
        if self._prior_starts:  # a resumed run: attempts count on from those that ran
            ctx.attempt = self._prior_starts.get(node.name, 0)
        start_soon = self._start_soon
        assert start_soon is not None
        start_soon(run_stage, node.spec, ctx, scope, name=node.name)
        if self._journal is not None:
            self._jot(
                "stage_started", {"stage": node.name, "time": now + self.wall_offset}
            )
        if self.events.readers:
            self._publish(StageStarted(node.name, now))

    def _finish(
        self,
        node: Node,
        state: StageState,
        now: float,
        encoded: str | bytearray | None = None,
    ) -> None:
        """Make ``node`` terminal and let its dependents go or settle them too."""
        if self._journal is not None:
            self._jot_end(node, state, now, encoded)
        if node.state is RUNNING:
            self.running -= 1
        elif self._release and node.state is PENDING:
            self._left_pending(node)
        if state is FAILED:
            self.failed += 1
        node.state = state
        node.finished = now
        node.scope = None
        self._unfinished -= 1
        self.done += 1
        if self._drop:
            self._ended.append(node)
        if self.events.readers:
            self._publish(StageFinished(node.name, state, now))
        if state is SUCCEEDED:
            for child in node.dependents:
                child.waiting -= 1
                if child.waiting == 0 and child.state is PENDING:
                    self._spawn(child)
            if self._release and node.readers == 0 and node.dependents:
                node.output = RELEASED  # every consumer has already read it
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
                        self._spawn(child)
                    continue
                if self._release:
                    self._left_pending(child)
                child.state = _BLOCKED[parent.state]
                child.finished = now
                if self._journal is not None:
                    self._jot_end(child, child.state, now, None)
                if self._drop:
                    self._ended.append(child)
                self._unfinished -= 1
                self.done += 1
                if self.events.readers:
                    self._publish(StageFinished(child.name, child.state, now))
                stack.append(child)

    def _drop_ended(self) -> None:
        """Drop from memory the finished stages whose dependents have all ended.

        Called between messages. A stage with no dependents is kept: its
        output is a result of the run. The journal keeps every record.
        """
        ended, self._ended = self._ended, []
        for node in ended:
            for dep in node.deps:  # first: dropping the node unlinks them
                self._drop_if_done(dep)
            self._drop_if_done(node)

    def _drop_if_done(self, node: Node) -> None:
        if not node.state.is_terminal or node.order < 0:  # running, or gone
            return
        dependents = node.dependents
        if not dependents:
            return
        seen = node.ended_dependents
        while seen < len(dependents) and dependents[seen].state.is_terminal:
            seen += 1
        node.ended_dependents = seen
        if seen < len(dependents):
            return
        self._forget(node)

    def _added(self, node: Node) -> None:
        """A change added ``node`` to the graph: count it, keep its record, track it."""
        self._unfinished += 1
        self.added += 1
        self.audit.pin(node.created_by)
        if self._streaming:
            self._streamed.append(node)

    def _removed(self, node: Node) -> None:
        """A change took ``node``, pending, out of the graph (or a change was undone)."""
        self._unfinished -= 1
        self.audit.unpin(node.created_by)

    def _forget(self, node: Node) -> None:
        """Let a finished stage leave memory; its name stays taken.

        The one way out for retained (``retain_outputs="journal"``) and
        streamed runs alike. What is left of the node is a husk (its name,
        state, times and spec): dependents still in memory keep it among
        their dependencies, but never its item, its output or the stages
        before it, so memory follows the stages in flight.
        """
        nodes = self.graph.nodes
        if nodes.get(node.name) is node:
            del nodes[node.name]
            requester = (
                None if node.created_by < 0 else self.audit[node.created_by].requester
            )
            self._gone.add(node.name, node.created_by, requester)
            self.audit.unpin(node.created_by)
            self.evicted[node.state] += 1
        node.deps = ()
        node.dependents.clear()
        node.item = NO_ITEM
        node.item_print = None
        node.output = None
        node.order = -1  # never in an order region again (see LiveGraph)

    def _dropped_error(self, name: str, action: str) -> StageStateError:
        return StageStateError(
            name,
            "ended, and left memory (retain_outputs='journal' and streamed "
            "pipelines drop finished stages; a journal keeps their record)",
            action,
        )

    def _left_pending(self, node: Node) -> None:
        """``node`` starts or ends: release outputs nobody else will read."""
        for dep in node.deps:
            dep.readers -= 1
            if dep.readers == 0 and dep.state is SUCCEEDED and dep.dependents:
                dep.output = RELEASED

    def _check_readable(self, dep: Node, name: str) -> None:
        """A new dependency needs its upstream output still held."""
        if dep.output is RELEASED:
            raise StageStateError(
                dep.name,
                "succeeded, and its output was released (retain_outputs='final')",
                f"make {name!r} read",
            )

    def _settle_new(self, node: Node) -> None:
        """A new or rewired pending stage: mark it to settle, to start, or let it wait.

        Both happen in `_after_change`, once the change is recorded: a stage
        a change adds must be in the journal before its end is.
        """
        if node.state is not PENDING:
            return
        for dep in node.deps:
            if dep.state.is_terminal and not dep.lets_through(node):
                self._to_settle.append((node, _BLOCKED[dep.state]))
                return
        if node.waiting == 0:
            self._ready.append(node)

    def _after_change(self) -> None:
        """Settle the stages a change blocked, then start the ones it made ready."""
        if self._to_settle:
            settle, self._to_settle = self._to_settle, []
            now = self._now()
            for node, state in settle:
                if node.state is PENDING:
                    self._finish(node, state, now)
        ready, self._ready = self._ready, []
        for node in ready:
            if node.state is PENDING and node.waiting == 0:
                self._spawn(node)

    # -- the journal --------------------------------------------------------------

    def _jot(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue one journal record (sent between messages, never mid-change)."""
        self._journal_out.append(
            ("event", self.run_id, self._journal_seq, kind, payload)
        )
        self._journal_seq += 1

    def _jot_end(
        self, node: Node, state: StageState, now: float, encoded: str | bytearray | None
    ) -> None:
        payload: dict[str, Any] = {
            "stage": node.name,
            "state": state.value,
            "time": now + self.wall_offset,
        }
        if encoded is not None:
            payload["output"] = encoded
        if state is FAILED and node.error is not None:
            error = node.error
            payload["error"] = f"{type(error).__name__}: {error}"
            payload["traceback"] = "".join(traceback.format_exception(error))[
                -_TRACEBACK_KEPT:
            ]
        self._jot("stage_ended", payload)

    def journal_start(self, name: str, pipeline: dict[str, Any], inputs: str) -> None:
        """Queue the run's first record (called by the run before it serves)."""
        self._journal_out.append(
            (
                "run",
                self.run_id,
                name,
                self.started_wall,
                {
                    **pipeline,
                    "inputs": inputs,
                    "codec": None if self._env.codec is None else self._env.codec.name,
                },
            )
        )

    def journal_memory(self, samples: list[tuple[float, int]]) -> None:
        """Record the run's memory samples (wall-clock time, RSS bytes), if journaled."""
        if self._journal is not None and samples:
            offset = self.wall_offset
            self._jot("memory", {"samples": [[t + offset, rss] for t, rss in samples]})

    def journal_resume(self) -> None:
        """Queue the records that say the run goes on (called before it serves)."""
        self._journal_out.append(("resume", self.run_id))
        kept = sum(1 for node in self.graph if node.state.is_terminal)
        self._jot(
            "resumed",
            {"time": self.started_wall, "kept": kept, "to_run": self._unfinished},
        )

    # -- resuming ------------------------------------------------------------------

    def _restore(self, restored: Replayed) -> None:
        """Take over a graph rebuilt from the journal, to go on with the run.

        Kept as they ended: succeeded stages (with their outputs), skipped
        ones, and stages cancelled on purpose (``cancel_stage``). Every other
        stage (running at the crash, failed, cancelled with the run, never
        started) is pending again; `_settle_restored` settles the ones a kept
        stage blocks once the run serves.
        """
        for node in self.graph:  # pinned first: their records stay in memory
            self.audit.pin(node.created_by)
        for record in restored.audit:
            self.audit.append(record)
        self.version = restored.version
        self.added = restored.added
        self._journal_seq = restored.next_seq
        self._prior_starts = restored.starts
        shift = -self.wall_offset  # recorded wall-clock times -> this run's clock
        kept = restored.kept_cancelled
        unfinished = 0
        for node in self.graph:
            state = node.state
            # Decoded from the journal: frozen like every value stages share.
            node.item = freeze(node.item)
            if (
                state is SUCCEEDED
                or state is SKIPPED
                or (state is CANCELLED and node.name in kept)
            ):
                node.output = freeze(node.output)
                if node.started is not None:
                    node.started += shift
                node.finished += shift
                continue
            node.state = PENDING
            node.output = None
            node.error = None
            node.started = None
            node.finished = 0.0
            unfinished += 1
        for node in self.graph:
            node.readers = sum(1 for child in node.dependents if child.state is PENDING)
            if node.state is PENDING:
                node.waiting = sum(
                    1
                    for dep in node.deps
                    if not (dep.state.is_terminal and dep.lets_through(node))
                )
        self._unfinished = unfinished
        self.done = len(self.graph) - unfinished
        self._restoring = True

    def _settle_restored(self) -> None:
        """Settle what kept stages block, then start what is ready (in order)."""
        self._restoring = False
        now = self._now()
        in_order = sorted(self.graph, key=attrgetter("order"))
        for node in in_order:
            if node.state is not PENDING:
                continue
            for dep in node.deps:
                if dep.state.is_terminal and not dep.lets_through(node):
                    self._finish(node, _BLOCKED[dep.state], now)
                    break
        if self._release:
            for node in in_order:
                if node.state is SUCCEEDED and node.readers == 0 and node.dependents:
                    node.output = RELEASED
        self._roots = [
            node for node in in_order if node.state is PENDING and node.waiting == 0
        ]
        if self._drop:
            self._ended.extend(node for node in in_order if node.state.is_terminal)
            self._drop_ended()

    async def ship_journal(self) -> None:
        """Hand queued records to the journal writer; wait only if it is full."""
        journal = self._journal
        if journal is None or not self._journal_out:
            return
        out, self._journal_out = self._journal_out, []
        for index, record in enumerate(out):
            if not journal.submit_nowait(record):
                # Shielded: records dropped by a cancel would leave a gap in
                # the run's events. The writer drains its queue in bounded time.
                with trio.CancelScope(shield=True):
                    for rest in out[index:]:
                        await journal.submit(rest)
                return

    # -- streamed pipelines ------------------------------------------------------

    def _refill(self) -> None:
        """Materialise streamed stages until ``window`` are unfinished or it ends.

        Runs between messages, like any change. Finished streamed stages are
        evicted first, oldest first, once every stage after them has ended.
        """
        self._evict()
        stream = self._stream
        assert stream is not None
        nodes = self.graph.nodes
        where = f"{self._where} (a streamed stage may only depend on the last {self._window} stages)"
        while self._unfinished < self._window and not self._stopping:
            try:
                item = next(stream)
            except StopIteration:
                self._stream = None
                break
            except (
                Exception
            ) as exc:  # the user's iterable failed: fail the run, cleanly
                self._stream_failed("<stream>", exc)
                break
            try:
                spec, after = self._stream_item(item)
                name = spec.name
                if name in nodes or name in self._gone:
                    raise DuplicateStageError(name, where=self._where)
                deps = []
                for dep_name in after:
                    dep = nodes.get(dep_name)
                    if dep is None:
                        raise UnknownStageError(dep_name, referrer=name, where=where)
                    self._check_readable(dep, name)
                    deps.append(dep)
            except DagvisorError as exc:
                self._stream_failed(_item_name(item), exc)
                break
            node = self.graph.add_node(spec, deps)
            self._unfinished += 1
            self._streamed.append(node)
            self._previous = name
            self._settle_new(node)
        self._after_change()

    def _stream_item(self, item: object) -> tuple[StageSpec, tuple[str, ...]]:
        """The stage a streamed item names and what it comes after.

        The ``after=`` part is the user's iterable: read here, between
        messages; whatever it raises fails the stream with a typed error.
        """
        if isinstance(item, StageSpec):
            return item, () if self._previous is None else (self._previous,)
        if type(item) is tuple and len(item) == 2 and isinstance(item[0], StageSpec):
            try:
                return item[0], ref_names(item[1])
            except Exception as exc:
                msg = (
                    f"the stages streamed stage {item[0].name!r} comes after could "
                    f"not be read ({type(exc).__name__}: {exc}); yield a list of names"
                )
                raise InvalidRequestError(msg) from exc
        msg = (
            "a streamed pipeline yields stages or (stage, after) pairs, not a "
            f"{type(item).__qualname__}"
        )
        raise InvalidRequestError(msg)

    def _stream_failed(self, name: str, error: Exception) -> None:
        self._stream = None
        self.errors[name] = error
        if self._policy == "cancel":
            self._stop("failed")

    def _evict(self) -> None:
        """Let the oldest finished stages of a stream leave memory (see `_forget`).

        Oldest first, beyond the window, once every stage after them has
        ended; stages a change added at run time go the same way.
        """
        streamed = self._streamed
        nodes = self.graph.nodes
        while len(streamed) > self._window:
            node = streamed[0]
            if nodes.get(node.name) is not node:  # removed, or a change undone
                streamed.popleft()
                continue
            if not node.state.is_terminal or any(
                not child.state.is_terminal for child in node.dependents
            ):
                break
            streamed.popleft()
            self._forget(node)

    def _stop(self, status: Literal["failed", "cancelled"]) -> None:
        """Begin ending the run: no new stage starts, running ones are cancelled."""
        if self._stopping:
            return
        self._stopping = True
        self.status = status
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # -- requests ----------------------------------------------------------------

    def _serve(self, request: R, apply: Callable[[R, _Change], Any]) -> None:
        """Apply one request whole, or refuse it; audit and answer it exactly once."""
        req = cast("Request", request)
        if self._stopping:
            # The run is ending (a failure under fail-fast, or a cancel): a new
            # stage would never start, so the change is refused, not dropped.
            self._refuse_closed(req)
            return
        if req.refused is not None:  # found by the requester while preparing it
            self._refuse(req, req.refused)
            return
        self._ready.clear()
        self._to_settle.clear()
        change = _Change()
        counters = (self._unfinished, self.added)
        self._serving = req
        try:
            change.value = apply(request, change)
        except DagvisorError as refusal:
            self._undo(change, counters)
            self._refuse(req, refusal)
            self._serving = None
            return
        except Exception as exc:
            # A bug in dagvisor while applying. Undone when it can be: the
            # change is refused and the run goes on. Otherwise the graph may
            # be inconsistent: refused, and the run ends (every waiting
            # requester is answered when it closes).
            undone = self._undo(change, counters)
            failure = _internal_refusal(exc, undone=undone)
            self._refuse(req, failure)
            if not undone:
                raise failure from exc
            self._serving = None
            return
        self._record(req, _kind_of(req), change, None)
        req.reply.send_nowait(outcome.Value(change.value))
        self._serving = None
        self._after_change()

    def _refuse(self, request: Request, error: DagvisorError) -> None:
        self._record(request, _kind_of(request), None, error)
        request.reply.send_nowait(outcome.Error(error))

    def _undo(self, change: _Change, counters: tuple[int, int]) -> bool:
        """Take back what a change added so far; False if it cannot be (it removed or settled)."""
        self._ready.clear()
        self._to_settle.clear()
        if not change.undoable:
            return False
        if not change.added and not change.edges:
            return True
        graph = self.graph
        added = set(change.added)
        try:
            for upstream, downstream in reversed(change.edges):
                if downstream not in added:  # an edge into a stage that stays
                    graph.remove_edge(graph.nodes[upstream], graph.nodes[downstream])
            for name in reversed(change.added):
                node = graph.nodes[name]
                graph.remove_node(node)
                self.audit.unpin(node.created_by)
        except Exception:  # the graph is not what the change left: give up
            return False
        self._unfinished, self.added = counters
        return True

    def _record(
        self,
        request: Request,
        kind: ChangeKind,
        change: _Change | None,
        error: BaseException | None,
    ) -> AuditRecord:
        before = self.version
        if change is not None and not change.empty:
            self.version += 1
        record = AuditRecord(
            seq=len(self.audit),
            run_id=self.run_id,
            kind=kind,
            requester=request.requester,
            reason=request.reason,
            accepted=error is None,
            version_before=before,
            version_after=self.version,
            wall_time=time.time(),
            monotonic_time=trio.current_time(),
            added=tuple(change.added) if change and change.added else (),
            removed=tuple(change.removed) if change and change.removed else (),
            edges=tuple(change.edges) if change and change.edges else (),
            cancelled=tuple(change.cancelled) if change and change.cancelled else (),
            error_type=None if error is None else type(error).__name__,
            error=None if error is None else str(error),
            parts=tuple(change.parts) if change and change.parts else (),
        )
        self.audit.append(record)
        if self._journal is not None:
            self._jot(
                "change",
                {
                    **{name: getattr(record, name) for name in _RECORD_FIELDS},
                    "request": _asked(request),
                },
            )
        if self.events.readers:
            self._publish(GraphChanged(record))
        if logger.isEnabledFor(
            logging.DEBUG
        ):  # a change, not a stage: off the hot path
            logger.debug(
                "run %s: %s",
                self.run_id,
                record,
                extra={
                    "run_id": self.run_id,
                    "seq": record.seq,
                    "requester": record.requester,
                },
            )
        return record

    def _require(self, name: str, referrer: str | None = None) -> Node:
        node = self.graph.get(name)
        if node is None:
            if name in self._gone:
                raise self._dropped_error(
                    name,
                    "change" if referrer is None else f"make {referrer!r} depend on",
                )
            raise UnknownStageError(name, referrer=referrer, where=self._where)
        return node

    def _dropped_again(self, name: str, requester: str) -> bool:
        """Whether ``name`` was dropped and is asked for again by the one who added it.

        That is the idempotent re-add of a stage that has already run (a
        stage run again after a resume asks for its changes again). Its spec
        and item are no longer in memory: it is matched by requester and name.

        Raises:
            DuplicateStageError: the name was dropped and someone else asks.
        """
        if name not in self._gone:
            return False
        if self._gone.added_by(name, requester):
            return True
        raise DuplicateStageError(name, where=self._where)

    def _require_pending(self, name: str, action: str) -> Node:
        node = self._require(name)
        if node.state is not PENDING:
            raise StageStateError(name, node.state.value, action)
        return node

    def _is_same_addition(
        self,
        node: Node,
        spec: StageSpec,
        deps: tuple[str, ...],
        requester: str,
        item_print: object,
    ) -> bool:
        """Whether ``node`` is what this request would add (an idempotent re-add).

        Compares by identity and builtin equality only: never user code.
        """
        if not _same_spec(node.spec, spec) or node.created_by < 0:
            return False
        if self.audit[node.created_by].requester != requester:
            return False
        if not same_print(node.item_print, item_print):
            return False
        return {dep.name for dep in node.deps} >= set(deps)

    def _check_before(
        self, name: str, deps: list[Node], before: tuple[str, ...]
    ) -> list[Node]:
        """Validate ``before=``: pending stages that may wait for a new stage."""
        targets = []
        for later in before:
            node = self._require_pending(later, f"make {name!r} run before")
            for dep in deps:
                path = self.graph.cycle_path(dep, node)
                if path is not None:
                    raise CycleError([name, *path[1:], name], where=self._where)
            targets.append(node)
        return targets

    def _add_stage(self, request: AddStage, change: _Change) -> str:
        spec = request.spec
        name = spec.name
        existing = self.graph.get(name)
        if existing is not None:
            if self._is_same_addition(
                existing, spec, request.after, request.requester, None
            ):
                return name
            raise DuplicateStageError(name, where=self._where)
        if self._gone and self._dropped_again(name, request.requester):
            return name
        deps = [self._require(dep, referrer=name) for dep in request.after]
        for dep in deps:
            self._check_readable(dep, name)
        befores = self._check_before(name, deps, request.before)
        # Validated: apply.
        node = self.graph.add_node(
            spec, deps, created_by=len(self.audit), before=befores
        )
        self._added(node)
        change.added.append(name)
        change.edges.extend((dep.name, name) for dep in deps)
        for later in befores:
            self.graph.add_edge(node, later)
            change.edges.append((name, later.name))
        self._settle_new(node)
        return name

    def _add_edge(self, request: AddEdge, change: _Change) -> None:
        upstream = self._require(request.upstream)
        self._check_readable(upstream, request.downstream)
        downstream = self._require_pending(
            request.downstream, f"make it wait for {request.upstream!r}: cannot change"
        )
        if upstream in downstream.deps:
            return
        path = self.graph.cycle_path(upstream, downstream)
        if path is not None:
            raise CycleError(path, where=self._where)
        self.graph.add_edge(upstream, downstream)
        change.edges.append((upstream.name, downstream.name))
        self._settle_new(downstream)

    def _expand(self, request: Expand, change: _Change) -> tuple[str, ...]:
        spec = request.spec
        names = tuple(f"{spec.name}[{key}]" for key in request.keys)
        prints = request.prints
        existing = [self.graph.get(name) for name in names]
        again = (
            [self._dropped_again(name, request.requester) for name in names]
            if self._gone
            else [False] * len(names)
        )
        if any(again) or any(node is not None for node in existing):
            # Asked before: an idempotent re-add only if every stage is the
            # same addition (or was added by the same requester and dropped).
            for name, node, item_print, dropped in zip(
                names, existing, prints, again, strict=True
            ):
                if dropped or (
                    node is not None
                    and self._is_same_addition(
                        node, spec, request.after, request.requester, item_print
                    )
                ):
                    continue
                clash = name
                if node is None:  # name the stage that does exist
                    clash = next(
                        other
                        for other, found, gone in zip(
                            names, existing, again, strict=True
                        )
                        if found is not None or gone
                    )
                raise DuplicateStageError(clash, where=self._where)
            return names
        deps = [
            self._require(dep, referrer=names[0] if names else spec.name)
            for dep in request.after
        ]
        for dep in deps:
            self._check_readable(dep, names[0] if names else spec.name)
        # Validated: apply.
        seq = len(self.audit)
        for name, item, key, item_print in zip(
            names, request.items, request.keys, prints, strict=True
        ):
            node = self.graph.add_node(
                spec,
                deps,
                name=name,
                created_by=seq,
                item=item,
                key=key,
                item_print=item_print,
            )
            self._added(node)
            change.added.append(name)
            change.edges.extend((dep.name, name) for dep in deps)
            self._settle_new(node)
        return names

    def _change_set(self, request: ChangeSet, change: _Change) -> None:
        """Apply every part in order into one change; a refused part refuses all."""
        for part in request.parts:
            added = len(change.added)
            match part:
                case AddStage():
                    self._add_stage(part, change)
                case AddEdge():
                    self._add_edge(part, change)
                case Expand():
                    self._expand(part, change)
                case _:
                    assert_never(part)
            named = (
                tuple(change.added[added:])
                if not isinstance(part, AddEdge)
                else (part.upstream, part.downstream)
            )
            change.parts.append((_kind_of(part), named))

    def _remove_stage(self, request: RemoveStage, change: _Change) -> None:
        node = self._require_pending(request.name, "remove")
        children = list(node.dependents)
        deps = node.deps
        # Validated: apply.
        change.undoable = False
        self.graph.remove_node(node)
        if self._release:
            for dep in deps:
                if dep.readers == 0 and dep.state is SUCCEEDED and dep.dependents:
                    dep.output = RELEASED
        self._removed(node)
        change.removed.append(node.name)
        for child in children:
            self._settle_new(child)

    def _replace_pending(self, request: ReplacePending, change: _Change) -> None:
        # A pipeline is valid by construction (its dependencies name its own
        # stages, without cycles), and no started stage waits for a pending
        # one, so this change cannot be refused. A stage of the new pipeline
        # that already started or ended is not added again: its work is kept
        # and the new stages that depend on it use its output.
        graph = self.graph
        if (
            self._release
        ):  # validate: a kept stage must still hold what the new ones read
            for spec, dep_names in request.pipeline.entries():
                if spec.name in self._gone:
                    continue  # ended: kept as it is, like any started stage
                if (
                    spec.name not in graph.nodes
                    or graph.nodes[spec.name].state is PENDING
                ):
                    for dep_name in dep_names:
                        kept = graph.nodes.get(dep_name)
                        if kept is None and dep_name in self._gone:
                            raise self._dropped_error(
                                dep_name, f"make {spec.name!r} read"
                            )
                        if kept is not None and kept.state is not PENDING:
                            self._check_readable(kept, spec.name)
        # Validated: apply.
        change.undoable = False
        self._stream = None  # the rest of a streamed pipeline is replaced too
        pending = [node for node in graph if node.state is PENDING]
        touched: dict[int, Node] = {}
        settled_children: dict[int, Node] = {}
        for node in pending:
            for dep in node.deps:
                touched[id(dep)] = dep
            for child in node.dependents:
                # A stage settled (cancelled, upstream failed) while it still
                # waited for this one: it must not keep an edge to a stage
                # that is no longer in the graph.
                if child.state is not PENDING:
                    settled_children[id(child)] = child
            del graph.nodes[node.name]
            self._removed(node)
            change.removed.append(node.name)
        for child in settled_children.values():
            child.deps = tuple(dep for dep in child.deps if dep.state is not PENDING)
        for dep in touched.values():
            if dep.state is not PENDING:
                dep.dependents = [c for c in dep.dependents if c.state is not PENDING]
                dep.readers = 0  # its pending dependents are gone
                if self._release and dep.state is SUCCEEDED and dep.dependents:
                    dep.output = RELEASED
        seq = len(self.audit)
        added: list[Node] = []
        for spec, dep_names in request.pipeline.entries():
            if spec.name in graph.nodes or spec.name in self._gone:
                continue
            deps = [graph.nodes[dep] for dep in dep_names]
            node = graph.add_node(spec, deps, created_by=seq)
            self._added(node)
            added.append(node)
            change.added.append(spec.name)
            change.edges.extend((dep, spec.name) for dep in dep_names)
        for node in added:
            self._settle_new(node)

    def _cancel_stage(self, request: CancelStage, change: _Change) -> None:
        node = self._require(request.name)
        if node.state.is_terminal:
            raise StageStateError(node.name, node.state.value, "cancel")
        # Validated: apply.
        change.undoable = False
        change.cancelled.append(node.name)
        if node.state is RUNNING:
            assert node.scope is not None
            node.scope.cancel()
        else:
            self._finish(node, CANCELLED, self._now())

    def _cancel_run(self, request: CancelRun, change: _Change) -> None:
        if not self._stopping:
            change.undoable = False
            change.cancelled.extend(
                node.name for node in self.graph if not node.state.is_terminal
            )
            self._stop("cancelled")


def _internal_refusal(exc: Exception, *, undone: bool) -> InternalError:
    then = (
        "nothing of it was applied and the run goes on"
        if undone
        else "the run cannot go on safely and ends"
    )
    msg = (
        "the change was refused: dagvisor failed while applying it "
        f"({type(exc).__name__}: {exc}); {then}; please report it"
    )
    error = InternalError(msg)
    error.__cause__ = exc
    return error


def _asked(request: Request) -> dict[str, Any]:
    """What a request asked, for the journal: enough to replay it.

    Stage specs travel as the references the requester computed (never
    recomputed here: that would run user code on the supervisor).
    """
    match request:
        case AddStage():
            return {
                "spec": _ref(request.spec, request.ref),
                "after": list(request.after),
                "before": list(request.before),
            }
        case AddEdge():
            return {"upstream": request.upstream, "downstream": request.downstream}
        case Expand():
            return {
                "spec": _ref(request.spec, request.ref),
                "keys": list(request.keys),
                "after": list(request.after),
                "items": None if request.encoded is None else list(request.encoded),
            }
        case RemoveStage() | CancelStage():
            return {"name": request.name}
        case ReplacePending():
            entries = list(request.pipeline.entries())
            refs = request.refs or [None] * len(entries)
            return {
                "pipeline": request.pipeline.name,
                "stages": [
                    {"spec": _ref(spec, ref), "after": list(deps)}
                    for (spec, deps), ref in zip(entries, refs, strict=True)
                ],
            }
        case CancelRun():
            return {}
        case ChangeSet():
            return {
                "parts": [
                    {"kind": _kind_of(part), **_asked(part)} for part in request.parts
                ]
            }
        case _:
            assert_never(request)


def _ref(spec: StageSpec, ref: dict[str, Any] | None) -> dict[str, Any]:
    # Without a reference (a run without a journal, or a request refused
    # before it was prepared) the options alone are recorded.
    return ref if ref is not None else spec_ref(spec, None)


def _same_spec(a: StageSpec, b: StageSpec) -> bool:
    """Whether two specs run the same function the same way (identity and builtins only)."""
    if a is b:
        return True
    return (
        a.fn is b.fn
        and a.when is b.when
        and (a.executor is b.executor or _plain_equal(a.executor, b.executor))
        and _plain_equal(a.name, b.name)
        and _plain_equal(a.retries, b.retries)
        and _plain_equal(a.backoff, b.backoff)
        and _plain_equal(a.timeout, b.timeout)
        and _plain_equal(a.trigger, b.trigger)
    )


def _plain_equal(a: object, b: object) -> bool:
    kind = type(a)
    return kind is type(b) and kind in _PLAIN and a == b


_PLAIN: Final = frozenset({str, int, float, type(None)})
_RECORD_FIELDS: Final = tuple(attrs.fields_dict(AuditRecord))


def _item_name(item: object) -> str:
    """The stage a streamed item names, for error reports; ``<stream>`` if none."""
    if isinstance(item, tuple) and item:
        item = item[0]
    return item.name if isinstance(item, StageSpec) else "<stream>"


def _kind_of(request: Request | ChangePart) -> ChangeKind:
    match request:
        case AddStage():
            return "add_stage"
        case AddEdge():
            return "add_edge"
        case Expand():
            return "expand"
        case RemoveStage():
            return "remove_stage"
        case ReplacePending():
            return "replace_pending"
        case CancelStage():
            return "cancel_stage"
        case CancelRun():
            return "cancel_run"
        case ChangeSet():
            return "change_set"
        case _:
            assert_never(request)
