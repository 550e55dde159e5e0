"""The GraphSupervisor: the one task that owns and changes a run's live graph.

Invariants:

* It is the only writer of the graph (its `RunCore`). Stage outcomes and
  change requests arrive on one memory channel and are handled one at a
  time, in arrival order. Handling a message is synchronous (a transition
  of the core, or a change served by `Changes`): there is no await inside a
  change, so every change is atomic by construction. Awaiting happens only
  between messages: shipping journal records, waiting for the next message.
* After each message the supervisor carries out what it left to do: start
  the stages that became ready, cancel the scopes a change asked to cancel,
  stop the run. The core never touches trio itself.
* A request is answered exactly once: applied, refused with a typed error
  (then the graph and its version are untouched), refused because the run
  is ending (`RunClosedError`), or, if the supervisor itself fails, by its
  way out (`_close`), which answers every request still waiting.
* The run ends when no stage is unfinished; as messages are handled in
  order, nothing is in flight then.

This module owns the message loop, its dispatch and starting stages; how
the run ends is `_run_end`'s (`RunEnd`), carrying out a served change is
`_carry_out`'s (`CarryOut`), both parts of the one supervisor class.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, assert_never, cast

import trio

from dagvisor.actors import StageContext, StageState, StreamedPipeline
from dagvisor.actors._actor import run_stage
from dagvisor.actors._messages import (
    AddEdge,
    AddStage,
    AttemptFailed,
    AttemptStarted,
    CancelRun,
    CancelStage,
    ChangeSet,
    Expand,
    FlushJournal,
    JournalFailed,
    Message,
    RemoveStage,
    ReplacePending,
    SendSignal,
    SignalsReturned,
    SlotTaken,
    StageCancelled,
    StageFailed,
    StagesEnded,
    StageSkipped,
    StageSucceeded,
    WaitSignal,
    WithdrawWait,
)

from ._audit import AuditLog
from ._carry_out import CarryOut
from ._changes import Changes
from ._core import RunCore
from ._events import EventLog
from ._graph import LiveGraph, Node
from ._mailbox import Mailbox
from ._restore import restore, settle_restored
from ._retention import RetainOutputs, Retention
from ._run_records import RunRecords
from ._stream import StreamFeed

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagvisor.actors import Pipeline
    from dagvisor.actors._env import RunEnv

    from ._options import FailurePolicy
    from ._replay import Replayed
    from ._snapshot import GraphSnapshot
    from ._writer import JournalWriter

__all__ = ["GraphSupervisor"]


PENDING = StageState.PENDING
QUEUED = StageState.QUEUED
RUNNING = StageState.RUNNING
SUCCEEDED = StageState.SUCCEEDED
FAILED = StageState.FAILED
SKIPPED = StageState.SKIPPED
CANCELLED = StageState.CANCELLED

# Audit records kept in memory beyond those of the stages in memory, with
# retain_outputs="journal" (the journal keeps them all).
_RECENT_RECORDS = 1_000


class GraphSupervisor(CarryOut):
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
        self.errors: dict[str, BaseException] = {}
        self.status: Literal["running", "succeeded", "failed", "cancelled"] = "running"
        self._cancel_reason: str | None = None  # why run.cancel stopped it
        self._stopped_early = False  # by _stop: a failure or a cancel
        self.started_wall = time.time()
        self.started_at = trio.current_time()
        # Journal times are wall-clock: the run's clock plus this offset.
        self.wall_offset = self.started_wall - self.started_at
        self.ended_at: float | None = None
        self._env = env
        self._inbox = inbox
        self._policy = policy
        self.journal = journal
        self._where = f"run {run_id!r}"
        self._nursery: trio.Nursery | None = None
        self._start_soon: Callable[..., None] = _not_started
        self._stages_closed = trio.Event()
        self._stopping = False
        self._closed = False
        self._prior_starts: dict[str, int] = {}
        self._roots: list[Node] = []
        # With retain_outputs="journal" the journal holds every record: in
        # memory, the recent ones and those of the stages still in memory.
        audit = AuditLog(
            keep_recent=_RECENT_RECORDS if retain_outputs == "journal" else None
        )
        if isinstance(pipeline, StreamedPipeline):
            graph = LiveGraph()
        elif restored is not None:
            graph = restored.graph
        else:
            graph, self._roots = LiveGraph.from_pipeline(pipeline)
        retention = Retention(
            graph,
            audit,
            retain_outputs,
            window=pipeline.window if isinstance(pipeline, StreamedPipeline) else None,
        )
        records = None
        if journal is not None:
            next_seq = 0 if restored is None else restored.next_seq
            records = RunRecords(run_id, self.wall_offset, next_seq)
        self.events = EventLog()
        self.core = core = RunCore(
            run_id,
            graph,
            audit,
            retention,
            self.events,
            records,
            trio.lowlevel.current_clock().current_time,
        )
        self._changes = Changes(core, self._where)
        self._stream: StreamFeed | None = None
        if isinstance(pipeline, StreamedPipeline):
            self._stream = StreamFeed(core, pipeline, self._where, env.limits)
        self.mailbox = Mailbox(core, () if restored is None else restored.signals)
        """The run's signals (see `Mailbox`)."""
        self._restoring = restored is not None
        if restored is not None:
            restore(core, restored, self.wall_offset)
            self._prior_starts = restored.starts

    # -- what the run task and its readers see ---------------------------------------

    @property
    def graph(self) -> LiveGraph:
        """The live graph (read it between messages only)."""
        return self.core.graph

    @property
    def audit(self) -> AuditLog:
        """The run's audit trail."""
        return self.core.audit

    def snapshot(self) -> GraphSnapshot:
        """The live graph now (a copy: O(stages), never on the hot path)."""
        return self.core.snapshot(self.status)

    # -- the journal ----------------------------------------------------------------

    async def ship_journal(self) -> None:
        """Hand queued records to the journal writer; wait only if it is full."""
        records = self.core.records
        if records is not None and self.journal is not None:
            await records.ship(self.journal)

    # -- the actor ---------------------------------------------------------------

    async def serve(self, stage_nursery: trio.Nursery) -> None:
        """Run the graph to its end: every stage terminal, nothing in flight."""
        self._nursery = stage_nursery
        self._start_soon = stage_nursery.start_soon
        core = self.core
        receive = self._inbox
        records, journal = core.records, self.journal
        try:
            if self._restoring:
                self._restoring = False
                self._roots = settle_restored(core)
            roots, self._roots = self._roots, []
            for node in roots:
                if node.state is PENDING and node.waiting == 0:
                    self._spawn(node)
            await self.ship_journal()  # the run's first records go out at once
            stream = self._stream
            while not self._stopping:
                if (
                    stream is not None
                    and stream.open
                    and core.unfinished < stream.refill_at
                ):
                    self._refill(stream)
                    continue
                if not core.unfinished:
                    break
                self._handle(await receive.receive())
                while core.unfinished and not self._stopping:
                    try:
                        message = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._handle(message)
                if core.retention.drop:
                    core.retention.drop_ended()
                if (
                    records is not None
                    and (records.out or records.flushes)
                    and journal is not None
                    and not records.ship_nowait(journal)
                ):
                    await records.ship(journal)
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

    # -- dispatch ----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        core = self.core
        match message:
            case StageSucceeded(token=token, value=value, encoded=encoded):
                node = cast("Node", token)
                if node.state is RUNNING or node.state is QUEUED:
                    node.output = value
                    core.finish(node, SUCCEEDED, core.now(), encoded)
                    if self.mailbox.held:
                        self.mailbox.ended(node, succeeded=True)
            case (
                AddStage()
                | AddEdge()
                | Expand()
                | RemoveStage()
                | ReplacePending()
                | CancelStage()
                | CancelRun()
                | ChangeSet()
            ):  # second: a stage ends once, may change the graph many times
                self._serve(message)
            case SlotTaken(token=token, time=when):
                node = cast("Node", token)
                if node.state is QUEUED:
                    core.run(node, when)
            case StageFailed(token=token, error=error):
                node = cast("Node", token)
                if node.state is RUNNING or node.state is QUEUED:
                    node.error = error
                    self.errors[node.name] = error
                    core.finish(node, FAILED, core.now())
                    if self.mailbox.held:
                        self.mailbox.ended(node, succeeded=False)
                    if self._policy == "cancel":
                        self._stop("failed")
            case StageCancelled(token=token):
                node = cast("Node", token)
                if node.state is RUNNING or node.state is QUEUED:
                    core.finish(node, CANCELLED, core.now())
                    if self.mailbox.held:
                        self.mailbox.ended(node, succeeded=False)
            case StageSkipped(token=token):
                node = cast("Node", token)
                if node.state is RUNNING or node.state is QUEUED:
                    core.finish(node, SKIPPED, core.now())
                    if self.mailbox.held:  # its predicate decided on them
                        self.mailbox.ended(node, succeeded=True)
            case AttemptFailed(token=token, attempt=attempt, error=error):
                node = cast("Node", token)
                if node.state is RUNNING and core.records is not None:
                    core.records.attempt_failed(node, attempt, error, core.now())
            case AttemptStarted(token=token, attempt=attempt):
                node = cast("Node", token)
                if (
                    node.state is RUNNING or node.state is QUEUED
                ) and core.records is not None:
                    core.records.attempt(node, attempt, core.now())
            case SendSignal() | WaitSignal():
                if self._stopping:
                    self._refuse_signal(message)
                elif isinstance(message, SendSignal):
                    self.mailbox.send(message)
                else:
                    self.mailbox.wait(message)
            case WithdrawWait(request=request):
                self.mailbox.withdraw(request)
            case SignalsReturned(token=token):
                self.mailbox.returned(cast("Node", token))
            case StagesEnded():
                pass  # a wake-up: serve() checks that the stages have ended
            case FlushJournal(done=done):
                if core.records is None:
                    done.set()
                else:  # set by the writer, after what is queued before it
                    core.records.flush(done)
            case JournalFailed():
                # Its records can no longer be committed (the writer drops
                # them): the run stops, and the run task reports why.
                self._stop("failed")
            case _:
                assert_never(message)
        if core.ready:
            self._start_ready()

    # -- stage life --------------------------------------------------------------

    def _start_ready(self) -> None:
        """Start the stages the last message made ready, in order."""
        ready = self.core.ready
        self.core.ready = []
        for node in ready:
            if node.state is PENDING and node.waiting == 0:
                self._spawn(node)

    def _spawn(self, node: Node) -> None:
        """Start the actor of a ready stage."""
        if self._stopping:
            return
        inputs = self.core.start(node)
        scope = node.scope = trio.CancelScope()
        ctx = StageContext(
            self._env,
            node,
            node.name,
            MappingProxyType(inputs),
            node.item,
            node.key,
            node.spec.params,
        )
        if self._prior_starts:  # a resumed run: attempts count on from those that ran
            ctx.attempt = self._prior_starts.get(node.name, 0)
        self._start_soon(run_stage, node.spec, ctx, scope, name=node.name)


def _not_started(*args: object, **kwargs: object) -> None:  # pragma: no cover - a bug
    msg = "a stage was started before the run's stage nursery was open"
    raise AssertionError(msg)
