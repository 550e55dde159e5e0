"""The `Run` handle of one run, and the run task that owns its supervisor.

Ownership: the runtime's nursery owns the run task; the run task owns the
run's supervisor and the nursery its stage actors run in (and the monitor,
when on). The run task ends the run: it makes its records durable (or
learns that they cannot be), builds its result, and only then tells the
waiters it has ended.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import TYPE_CHECKING, Any, final

import trio

from dagvisor.actors import (
    InternalError,
    InvalidRequestError,
    RunClosedError,
    RunFailedError,
    StageSpec,
)
from dagvisor.actors._errors import message_of
from dagvisor.actors._messages import CancelRun, FlushJournal, ReplySlot
from dagvisor.actors._requests import ChangeRequests, ask, check_reason

from ._export import to_dot, to_mermaid
from ._result import RunResult, _Dependencies, _Origins, _States, lineage_of

if TYPE_CHECKING:
    from dagvisor.actors import JournalWriteError, StageRef
    from dagvisor.actors._env import RunEnv
    from dagvisor.actors._messages import Message

    from ._audit import AuditLog
    from ._events import EventStream
    from ._monitor import Monitor
    from ._result import Lineage, RunStatus
    from ._snapshot import GraphSnapshot
    from ._supervisor import GraphSupervisor

__all__ = ["EXTERNAL", "Run"]

logger = logging.getLogger("dagvisor")

EXTERNAL = "external"
"""Who asks for a change made through a `Run` handle, in the audit trail."""

_LOGGED_FAILURES = 20


@final
class Run(ChangeRequests):
    """A handle on one run, returned by `Runtime.start`. Not constructed by users.

    Everything that changes the run is a request to its supervisor, applied in
    order with the requests of its stages, and audited with the requester
    ``"external"``. The change methods are the stages' own (`ChangeRequests`):
    ``add_stage``, ``add_edge``, ``expand``, ``remove_stage``,
    ``replace_pending``, ``cancel_stage`` and ``changes``.
    """

    __slots__ = (
        "_done",
        "_env",
        "_failure",
        "_inbox",
        "_journal_error",
        "_result",
        "_supervisor",
        "id",
        "name",
    )

    def __init__(
        self,
        run_id: str,
        name: str,
        env: RunEnv,
        supervisor: GraphSupervisor,
        inbox: trio.MemorySendChannel[Message],
    ) -> None:
        self.id = run_id
        self.name = name
        self._env = env
        self._supervisor = supervisor
        self._inbox = inbox
        self._done = trio.Event()
        self._result: RunResult | None = None
        self._failure: BaseException | None = None
        self._journal_error: JournalWriteError | None = None

    def __repr__(self) -> str:
        state = "done" if self._done.is_set() else "running"
        return f"<Run {self.name!r} {self.id} {state}>"

    @property
    def _requester(self) -> str:
        return EXTERNAL

    @property
    def run_id(self) -> str:
        """The run's id (the same as ``id``, and as `RunResult.run_id`)."""
        return self.id

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self._done.is_set()

    def snapshot(self) -> GraphSnapshot:
        """The live graph as it is now: version, every stage's state, its dependencies."""
        return self._supervisor.snapshot()

    async def wait(self) -> RunResult:
        """Wait for the run to end and return its result.

        A result is returned only once every record of the run is committed
        to the journal, if it has one.

        Raises:
            RunFailed: a stage failed or the run was cancelled; the result is
                ``exc.result`` and each stage's exception is in ``exc.errors``.
                Also when the journal could not record the run, or another
                runtime took it over: ``exc.journal_error`` says why (a
                `JournalWriteError` or `LeaseLostError`).
            InternalError: the run crashed on a bug in dagvisor.
        """
        await self._done.wait()
        if self._failure is not None:
            msg = f"run {self.id!r} crashed on an internal error; please report it"
            raise InternalError(msg) from self._failure
        result = self._result
        assert result is not None
        if self._journal_error is not None:
            raise RunFailedError(
                result, result.errors, journal_error=self._journal_error
            ) from self._journal_error
        if not result.ok:
            group = None
            if result.errors:
                group = ExceptionGroup(
                    f"errors of the failed stages of run {self.id!r}",
                    [
                        e if isinstance(e, Exception) else RuntimeError(repr(e))
                        for e in result.errors.values()
                    ],
                )
            raise RunFailedError(result, result.errors) from group
        return result

    def to_mermaid(self) -> str:
        """The graph as it is now, as a Mermaid flowchart (see `RunResult.to_mermaid`)."""
        return to_mermaid(self.name, *self._views())

    def to_dot(self) -> str:
        """The graph as it is now, as Graphviz DOT (see `RunResult.to_dot`)."""
        return to_dot(self.name, *self._views())

    def _views(self) -> tuple[Any, Any, Any]:
        nodes = self._supervisor.graph.nodes
        audit = self._supervisor.audit
        return _States(nodes), _Dependencies(nodes), _Origins(nodes, audit)

    def lineage(self, stage: StageRef) -> Lineage:
        """Where a stage came from, what it read and what became of it (see `Lineage`).

        Answers for a stage removed by a change or dropped from memory too.

        Raises:
            UnknownStageError: the run never had such a stage.
        """
        name = stage.name if isinstance(stage, StageSpec) else stage
        supervisor = self._supervisor
        return lineage_of(
            name,
            nodes=supervisor.graph.nodes,
            audit=supervisor.audit,
            gone=supervisor.core.retention.gone,
            wall_offset=supervisor.wall_offset,
            where=f"run {self.id!r}",
        )

    def audit(self) -> AuditLog:
        """The run's audit trail so far (a live, read-only sequence of records)."""
        return self._supervisor.audit

    def events(self, *, buffer: int = 10_000) -> EventStream:
        """This run's events from now on: ``async for event in run.events()``.

        Stage-started, stage-finished and graph-changed events arrive in the
        order they happen; the stream ends when the run has ended. The run
        never waits for a reader: a reader more than ``buffer`` events behind
        loses the oldest ones and is told how many by an `EventsLost` event.
        A reader that stops (``break``, or dropping the stream) costs the run
        nothing; ``stream.close()`` stops it explicitly.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            msg = f"buffer must be a whole number >= 1, not {buffer!r}"
            raise InvalidRequestError(msg)
        return self._supervisor.events.subscribe(buffer)

    async def cancel(self, *, reason: str = "cancelled by the caller") -> None:
        """Cancel the whole run and wait until it has ended.

        Running stages are cancelled (their resources closed), pending ones
        never start. Does nothing if the run has already ended.
        """
        reason = check_reason(reason)
        with suppress(RunClosedError):
            await ask(
                self._env,
                CancelRun(reason=reason, requester=EXTERNAL, reply=ReplySlot()),
            )
        await self._done.wait()

    async def wait_committed(self) -> None:
        """Wait until everything the run has recorded so far is committed to its journal.

        Raises:
            InvalidRequestError: the run has no journal.
            JournalWriteError: some of its records could not be committed (see
                `wait`: the run fails with it).
        """
        writer = self._supervisor.journal
        if writer is None:
            msg = f"run {self.id!r} has no journal: open the runtime with runtime(journal=...)"
            raise InvalidRequestError(msg)
        done = trio.Event()
        try:
            await self._env.outbox.send(FlushJournal(done))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._done.wait()  # ended: its run task flushed it
        else:
            await done.wait()
        error = writer.error_of(self.id) or self._journal_error
        if error is not None:
            raise error

    async def _wait_or_cancel(self, caller: str) -> RunResult:
        """`wait`, cancelling the run if the caller (``rt.run``, ...) is cancelled."""
        try:
            return await self.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self.cancel(reason=f"the caller of {caller} was cancelled")
            raise

    # -- the run task -------------------------------------------------------------

    async def _main(
        self,
        monitor: Monitor | None,
        active: set[str],
        *,
        task_status: trio.TaskStatus[Run],
    ) -> None:
        supervisor = self._supervisor
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "run %s of %r started: %d stages",
                self.id,
                self.name,
                len(supervisor.graph),
                extra={"run_id": self.id, "pipeline": self.name},
            )
        try:
            async with trio.open_nursery() as nursery:
                stage_nursery: trio.Nursery = await nursery.start(
                    supervisor.host_stages
                )
                if monitor is not None:
                    nursery.start_soon(monitor.run)
                task_status.started(self)
                await supervisor.serve(stage_nursery)
                nursery.cancel_scope.cancel()  # the monitor, if any
            if monitor is not None:
                monitor.sample()  # the state at the end
                if supervisor.core.records is not None:
                    supervisor.core.records.memory(monitor.samples)
        except Exception as exc:  # a bug: report it to whoever waits on the run
            self._failure = exc
        finally:
            # Also when the run task is cancelled (the runtime closing on
            # Ctrl-C): the end of the run must reach the journal.
            await self._flush_journal()
            self._inbox.close()
            active.discard(self.id)
            self._result = self._build_result(monitor)
            self._done.set()
            _log_end(self._result, self._failure, self._journal_error)

    async def _flush_journal(self) -> None:
        """Make the run durable before anyone is told it ended (or say it is not).

        Not bounded by a timeout of its own: the writer's work is bounded
        (`Journal.busy_timeout`), and the run may only be reported once its
        records are known to be committed or known not to be.
        """
        writer = self._supervisor.journal
        if writer is None:
            return
        with trio.CancelScope(shield=True):
            await self._supervisor.ship_journal()
            self._journal_error = await writer.flush(self.id)
        writer.forget(self.id)

    def _build_result(self, monitor: Monitor | None) -> RunResult:
        supervisor = self._supervisor
        ended = supervisor.ended_at
        if ended is None:
            ended = trio.current_time()
        status: RunStatus = "failed"  # crashed before it could settle, or not recorded
        if supervisor.status != "running" and self._journal_error is None:
            status = supervisor.status
        return RunResult.build(
            supervisor.graph.nodes,
            supervisor.audit,
            run_id=self.id,
            name=self.name,
            status=status,
            errors=supervisor.errors,
            started_at=supervisor.started_wall,
            duration=ended - supervisor.started_at,
            added=supervisor.core.added,
            left_memory=supervisor.core.retention.evicted,
            memory=() if monitor is None else monitor.samples,
            peak_rss=None if monitor is None else monitor.peak_rss,
            wall_offset=supervisor.wall_offset,
            gone=supervisor.core.retention.gone,
        )


def _log_end(
    result: RunResult,
    failure: BaseException | None,
    journal_error: JournalWriteError | None = None,
) -> None:
    """Log how a run ended: once per run, plus a warning per failed stage (capped)."""
    extra = {"run_id": result.run_id, "pipeline": result.name, "status": result.status}
    if failure is not None:
        logger.error("run %s crashed", result.run_id, exc_info=failure, extra=extra)
        return
    if journal_error is not None:
        logger.error("run %s: %s", result.run_id, journal_error, extra=extra)
    if logger.isEnabledFor(logging.WARNING):
        for name, error in list(result.errors.items())[:_LOGGED_FAILURES]:
            logger.warning(
                "run %s: stage %r failed: %s: %s",
                result.run_id,
                name,
                type(error).__name__,
                message_of(error),
                exc_info=error,
                extra={**extra, "stage": name},
            )
        if len(result.errors) > _LOGGED_FAILURES:
            logger.warning(
                "run %s: %d more stages failed",
                result.run_id,
                len(result.errors) - _LOGGED_FAILURES,
                extra=extra,
            )
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "run %s of %r %s: %d stages, %d changes, %.3f s",
            result.run_id,
            result.name,
            result.status,
            result.stats.stages,
            result.stats.changes,
            result.stats.duration,
            extra=extra,
        )
