"""`runtime()`, the `Runtime` it yields, and the `Run` handle of one run.

Ownership: the runtime's nursery owns every run task; a run task owns its
supervisor and the nursery its stage actors run in. Leaving the ``runtime()``
block cancels the runs still going and waits for their cleanup, so no task
outlives the block.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from dagvisor.actors import (
    CancelRun,
    ChangeRequests,
    Codec,
    DagvisorError,
    Executor,
    Hooks,
    InternalError,
    InvalidRequestError,
    JournalError,
    JournalWriteError,
    JsonCodec,
    Message,
    NotRestorableError,
    Pipeline,
    ReplySlot,
    RunClosedError,
    RunEnv,
    RunFailed,
    RunOwnedError,
    StageRegistry,
    StageSpec,
    StreamedPipeline,
    UnknownRunError,
    ask,
    check_reason,
    default_registry,
    freeze,
    refuse_in_bootstrap,
)

from ._export import to_dot, to_mermaid
from ._journal import Journal
from ._monitor import Monitor, Progress
from ._recover import load_for_resume, orphans
from ._replay import replay
from ._result import (
    Lineage,
    RunResult,
    RunStats,
    StageLatency,
    _Dependencies,
    _Origins,
    _States,
    lineage_of,
)
from ._stage_refs import SpecReferences, check_restorable, spec_ref
from ._supervisor import FailurePolicy, GraphSupervisor
from ._writer import JournalWriter

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from dagvisor.actors import StageRef

    from ._audit import AuditLog
    from ._events import EventStream
    from ._replay import Replayed
    from ._retention import RetainOutputs
    from ._snapshot import GraphSnapshot

__all__ = ["Recovery", "Run", "Runtime", "runtime"]

logger = logging.getLogger("dagvisor")

EXTERNAL = "external"
_POLICIES = ("cancel", "continue")
# Room in a run's inbox. What can be queued there is bounded by the run
# itself: each running stage sends one outcome, and each requester has at
# most one request in flight (it waits for the answer). So this bound only
# decides when a sender must park. When a fan-out of 100,000 stages ends in
# one scheduler pass, a bound of 4,096 made most actors park and be woken
# again. Senders past it still wait (backpressure); the supervisor never does.
_INBOX_SIZE = 1 << 18
# A resume reads a run, then takes it over if it has not changed meanwhile;
# this many times, then it gives up (another process keeps going on with it).
_RESUME_ATTEMPTS = 3


def _check_policy(policy: str) -> FailurePolicy:
    if policy not in _POLICIES:
        msg = f"on_failure must be one of {_POLICIES}, not {policy!r}"
        raise InvalidRequestError(msg)
    return policy  # type: ignore[return-value]  # checked against _POLICIES


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

    def snapshot(self) -> GraphSnapshot:
        """The live graph as it is now: version, every stage's state, its dependencies."""
        return self._supervisor.snapshot()

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self._done.is_set()

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
            raise RunFailed(
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
            raise RunFailed(result, result.errors) from group
        return result

    def to_mermaid(self) -> str:
        """The graph as it is now, as a Mermaid flowchart (see `RunResult.to_mermaid`)."""
        return to_mermaid(self.name, *self._views())

    def to_dot(self) -> str:
        """The graph as it is now, as Graphviz DOT (see `RunResult.to_dot`)."""
        return to_dot(self.name, *self._views())

    def _views(self) -> tuple[Any, Any, Any]:
        nodes = self._supervisor.graph.nodes
        audit = self._supervisor.audit.snapshot()
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
            gone=supervisor.gone,
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
                supervisor.journal_memory(monitor.samples)
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
        writer = self._supervisor._journal
        if writer is None:
            return
        with trio.CancelScope(shield=True):
            await self._supervisor.ship_journal()
            self._journal_error = await writer.flush(self.id)
        writer.forget(self.id)

    def _build_result(self, monitor: Monitor | None) -> RunResult:
        supervisor = self._supervisor
        nodes = supervisor.graph.nodes
        counts = dict(supervisor.evicted)  # stages of a streamed run already dropped
        for node in nodes.values():
            counts[node.state] += 1
        ended = (
            supervisor.ended_at
            if supervisor.ended_at is not None
            else trio.current_time()
        )
        status = supervisor.status
        if status == "running" or self._journal_error is not None:
            status = "failed"  # crashed before it could settle, or not recorded
        stats = RunStats(
            stages=sum(counts.values()),
            counts=MappingProxyType(counts),
            started_at=supervisor.started_wall,
            duration=ended - supervisor.started_at,
            changes=len(supervisor.audit),
            added=supervisor.added,
            latency=StageLatency(nodes),
            peak_rss=None if monitor is None else monitor.peak_rss,
            memory=() if monitor is None else tuple(monitor.samples),
        )
        return RunResult._from_nodes(
            nodes,
            run_id=self.id,
            name=self.name,
            status=status,
            errors=MappingProxyType(supervisor.errors),
            audit=supervisor.audit.snapshot(),
            stats=stats,
            wall_offset=supervisor.wall_offset,
            gone=supervisor.gone,
            audit_log=[supervisor.audit],
        )


_LOGGED_FAILURES = 20


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
                error,
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


@final
@attrs.frozen(kw_only=True)
class Recovery:
    """What `Runtime.recover` took over.

    Attributes:
        runs: a `Run` handle for each run it resumed, oldest first; wait for
            each with ``await run.wait()``.
        skipped: the runs whose owner is gone but that this process cannot
            resume, by run id, with why (`NotRestorableError` when a stage
            function is not registered here, `JournalError` when the run's
            record or its owner's lease is damaged). They are left as they
            were, for a process that has their code.
    """

    runs: tuple[Run, ...]
    skipped: Mapping[str, DagvisorError]


@final
class Runtime:
    """Runs pipelines; yielded by `runtime()`. Not constructed by users."""

    __slots__ = (
        "_active",
        "_cleanup_timeout",
        "_closed",
        "_codec",
        "_executor",
        "_hooks",
        "_journal",
        "_limiter",
        "_monitor_interval",
        "_nursery",
        "_on_progress",
        "_policy",
        "_registry",
        "_retain_outputs",
    )

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        on_failure: FailurePolicy,
        thread_limiter: trio.CapacityLimiter,
        cleanup_timeout: float,
        hooks: Hooks,
        monitor_interval: float | None = None,
        on_progress: Callable[[Progress], object] | None = None,
        retain_outputs: RetainOutputs = "all",
        executor: Any = "thread",
        journal: JournalWriter | None = None,
        codec: Codec | None = None,
        registry: StageRegistry | None = None,
    ) -> None:
        self._nursery = nursery
        self._journal = journal
        self._registry = registry
        self._codec = codec
        self._executor = executor
        self._retain_outputs = retain_outputs
        self._monitor_interval = monitor_interval
        self._on_progress = on_progress
        self._policy = on_failure
        self._limiter = thread_limiter
        self._cleanup_timeout = cleanup_timeout
        self._hooks = hooks
        self._closed = False
        self._active: set[str] = set()

    async def start(
        self,
        pipeline: Pipeline | StreamedPipeline,
        *,
        inputs: Mapping[str, Any] | None = None,
        on_failure: FailurePolicy | None = None,
    ) -> Run:
        """Start running ``pipeline`` and return its `Run` handle at once.

        Args:
            pipeline: what to run.
            inputs: values every stage can read as ``ctx.run_inputs``.
            on_failure: ``"cancel"`` (fail fast) or ``"continue"``; defaults to
                the runtime's policy.

        Raises:
            RunClosedError: the ``runtime()`` block has been left.
        """
        if not isinstance(pipeline, Pipeline | StreamedPipeline):
            msg = f"run needs a Pipeline or a streamed pipeline, not {pipeline!r}"
            raise TypeError(msg)
        if inputs is not None and not isinstance(inputs, Mapping):
            msg = f"inputs must be a mapping of names to values, not {inputs!r}"
            raise TypeError(msg)
        policy = self._policy if on_failure is None else _check_policy(on_failure)
        if self._closed:
            raise RunClosedError(pipeline.name)
        encoded_inputs = ""
        if self._journal is not None:
            if isinstance(pipeline, StreamedPipeline):
                msg = (
                    f"streamed pipeline {pipeline.name!r} cannot be journaled yet; "
                    "run it without a journal"
                )
                raise NotRestorableError(msg)
            self._check_restorable(pipeline)
            assert self._codec is not None
            encoded_inputs = self._codec.encode(dict(inputs or {}))
            self._journal.journal.check_value(encoded_inputs, "the run's inputs")
        run_id = uuid.uuid4().hex
        run, supervisor = self._make_run(
            run_id, pipeline.name, inputs, policy, pipeline
        )
        if self._journal is not None:
            supervisor.journal_start(
                pipeline.name, self._journaled(pipeline), encoded_inputs
            )
        return await self._launch(run)

    def _make_run(
        self,
        run_id: str,
        name: str,
        inputs: Mapping[str, Any] | None,
        policy: FailurePolicy,
        pipeline: Pipeline | StreamedPipeline,
        restored: Replayed | None = None,
    ) -> tuple[Run, GraphSupervisor]:
        send, receive = trio.open_memory_channel[Message](_INBOX_SIZE)
        journal = self._journal
        env = RunEnv(
            run_id=run_id,
            outbox=send,
            run_inputs=MappingProxyType(
                {name: freeze(value) for name, value in (inputs or {}).items()}
            ),
            thread_limiter=self._limiter,
            cleanup_timeout=self._cleanup_timeout,
            hooks=self._hooks,
            default_executor=self._executor,
            codec=self._codec,
            prepare_spec=None
            if self._registry is None
            else SpecReferences(self._registry),
            check_output=None if journal is None else journal.journal.check_value,
        )
        if journal is not None and restored is None:
            journal.register(run_id, send)
        supervisor = GraphSupervisor(
            run_id=run_id,
            pipeline=pipeline,
            env=env,
            inbox=receive,
            policy=policy,
            retain_outputs=self._retain_outputs,
            journal=self._journal,
            restored=restored,
        )
        return Run(run_id, name, env, supervisor, send), supervisor

    async def _launch(self, run: Run) -> Run:
        monitor = None
        if self._monitor_interval is not None:
            monitor = Monitor(
                run._supervisor, self._monitor_interval, self._on_progress
            )
        self._active.add(run.id)
        try:
            started: Run = await self._nursery.start(run._main, monitor, self._active)
        except BaseException:
            self._active.discard(run.id)
            raise
        return started

    async def resume(
        self, run_id: str, *, on_failure: FailurePolicy | None = None
    ) -> RunResult:
        """Resume a run from the journal and run it to its end; see `start_resumed`.

        Raises:
            RunFailed: a stage failed or the run was cancelled.
        """
        run = await self.start_resumed(run_id, on_failure=on_failure)
        return await run._wait_or_cancel("rt.resume")

    async def start_resumed(
        self, run_id: str, *, on_failure: FailurePolicy | None = None
    ) -> Run:
        """Go on with a run the journal holds (crashed, cancelled or failed).

        The graph is rebuilt from the journal, with every stage and edge added
        while the run ran and every removal and swap. Succeeded stages keep
        their outputs and are not run again; so do skipped stages and stages
        cancelled on purpose. Every other stage (running at the crash, failed,
        cancelled with the run, not started) runs: ``ctx.attempt`` counts on
        from before and ``ctx.idempotency_key`` is unchanged. The run keeps
        its id and its audit trail, and goes on writing to the journal.

        The run must have no live owner: this runtime takes it over in one
        transaction, which of several processes resuming the same run only
        one can win. Everything is checked before anything is written: a
        refused resume leaves the journal as it was, and a missing journal
        is not created.

        Raises:
            InvalidRequestError: the runtime has no journal, or the run is
                still going in this runtime.
            RunOwnedError: another runtime owns the run and its lease is
                live (it names the owner's host and pid, and when the lease
                ends); nothing ran.
            UnknownRunError: the journal holds no such run.
            JournalError: the journal is missing, damaged, not whole, or
                stayed locked by another process.
            NotRestorableError: a stage function is not registered in this
                process, or an output cannot be decoded.
        """
        if not isinstance(run_id, str):
            msg = f"run_id must be a run id (str), not {run_id!r}"
            raise TypeError(msg)
        policy = self._policy if on_failure is None else _check_policy(on_failure)
        run = await self._resume(run_id, policy, recovering=False)
        assert run is not None
        return run

    async def recover(self, *, on_failure: FailurePolicy | None = None) -> Recovery:
        """Resume every run of the journal that did not end and whose owner is gone.

        A run's owner is gone when its lease expired, or when its process is
        provably no longer running on this host (a crash). Each such run is
        taken over atomically, so when several processes recover the same
        journal at once, each run is resumed by exactly one of them; runs
        another process took first are left to it. Runs whose stage
        functions this process has not registered are left as they were and
        listed in ``skipped``.

        Example:
            >>> async with runtime(journal="runs.db") as rt:  # doctest: +SKIP
            ...     recovery = await rt.recover()
            ...     for run in recovery.runs:
            ...         await run.wait()

        Returns:
            The `Run` handle of every run taken over (started, like
            `start_resumed`), and the runs skipped with why.

        Raises:
            InvalidRequestError: the runtime has no journal.
            JournalError: the journal is missing, damaged or not whole.
        """
        policy = self._policy if on_failure is None else _check_policy(on_failure)
        writer = self._writer_for("recover")
        found, damaged = await trio.to_thread.run_sync(
            orphans, writer.journal.path, writer.owner
        )
        runs: list[Run] = []
        skipped: dict[str, DagvisorError] = dict(damaged)
        for run_id in found:
            if run_id in self._active:
                continue
            try:
                run = await self._resume(run_id, policy, recovering=True)
            except RunOwnedError:
                continue  # another process took it first: it is that one's
            except InvalidRequestError:
                continue  # another recover of this runtime took it meanwhile
            except (NotRestorableError, JournalError, UnknownRunError) as exc:
                skipped[run_id] = exc
                continue
            if run is not None:
                runs.append(run)
        return Recovery(runs=tuple(runs), skipped=MappingProxyType(skipped))

    def _writer_for(self, what: str) -> JournalWriter:
        if self._journal is None:
            msg = (
                f"{what} needs the journal the run was written to: "
                "open the runtime with runtime(journal=...)"
            )
            raise InvalidRequestError(msg)
        return self._journal

    async def _resume(
        self, run_id: str, policy: FailurePolicy, *, recovering: bool
    ) -> Run | None:
        """Read, check and take over a run, then start it (None: nothing to recover)."""
        writer = self._writer_for("resume")
        if self._closed:
            raise RunClosedError(run_id)
        assert self._codec is not None
        for _ in range(_RESUME_ATTEMPTS):
            if run_id in self._active:
                msg = f"run {run_id!r} is still going in this runtime; wait for it or cancel it first"
                raise InvalidRequestError(msg)
            # Read-only first: a run with a live owner is refused before its
            # journal is even replayed, and a bad journal before anything is written.
            journaled, _ = await trio.to_thread.run_sync(
                load_for_resume, writer.journal.path, run_id, writer.owner
            )
            if recovering and journaled.status != "running":
                return None  # another process finished it meanwhile
            restored = await trio.to_thread.run_sync(
                partial(
                    replay,
                    journaled,
                    registry=self._registry,
                    codec=self._codec,
                )
            )
            if run_id in self._active:  # started meanwhile, by another resume
                msg = f"run {run_id!r} is still going in this runtime; wait for it or cancel it first"
                raise InvalidRequestError(msg)
            run, supervisor = self._make_run(
                run_id,
                journaled.name,
                restored.inputs,
                policy,
                Pipeline(journaled.name),
                restored,
            )
            writer.register(run_id, run._inbox, restored.next_seq)
            self._active.add(run_id)  # no other resume of it here meanwhile
            try:
                # Shielded (the writer's work is bounded): a takeover that
                # happened must be known, so that its lease is given up if the
                # run does not start after all.
                with trio.CancelScope(shield=True):
                    taken = await writer.take_over(run_id)
                if taken == "taken":
                    supervisor.journal_resume()
                    return await self._launch(run)
            except BaseException:
                self._active.discard(run_id)
                writer.forget(run_id)  # gives the lease up if it was taken
                raise
            self._active.discard(run_id)
            writer.forget(run_id)  # it went on elsewhere since it was read: again
        msg = (
            f"run {run_id!r} kept changing while it was being resumed: another "
            "process is going on with it; try again once it has ended"
        )
        raise JournalError(msg)

    def _check_restorable(self, pipeline: Pipeline) -> None:
        registry = self._registry
        assert registry is not None
        checked: set[int] = set()
        for spec, _ in pipeline.entries():
            if id(spec.fn) not in checked or spec.when is not None:
                check_restorable(registry, spec)
                checked.add(id(spec.fn))

    def _journaled(self, pipeline: Pipeline | StreamedPipeline) -> dict[str, Any]:
        """The pipeline for the journal: each distinct spec once, then the stages.

        Stages are ``[name, spec index, [after...]]``: a million copies of one
        function cost a million short rows, not a million spec records.
        """
        assert isinstance(pipeline, Pipeline)
        index: dict[tuple[Any, ...], int] = {}
        specs: list[dict[str, Any]] = []
        stages: list[list[Any]] = []
        for spec, deps in pipeline.entries():
            template = (
                spec.fn,
                spec.when,
                spec.retries,
                spec.backoff,
                spec.timeout,
                spec.trigger,
                spec.executor,
            )
            position = index.get(template)
            if position is None:
                position = index[template] = len(specs)
                ref = spec_ref(spec, self._registry)
                del ref["name"]
                specs.append(ref)
            stages.append([spec.name, position, list(deps)])
        return {"specs": specs, "stages": stages}

    async def run(
        self,
        pipeline: Pipeline | StreamedPipeline,
        *,
        inputs: Mapping[str, Any] | None = None,
        on_failure: FailurePolicy | None = None,
    ) -> RunResult:
        """Run ``pipeline`` to its end and return the result.

        If the caller is cancelled, the run is cancelled too.

        Example:
            >>> async with runtime() as rt:  # doctest: +SKIP
            ...     result = await rt.run(pipeline, inputs={"x": 1})

        Raises:
            RunFailed: a stage failed or the run was cancelled (the result is
                attached as ``exc.result``).
        """
        run = await self.start(pipeline, inputs=inputs, on_failure=on_failure)
        return await run._wait_or_cancel("rt.run")


@asynccontextmanager
async def runtime(
    *,
    on_failure: FailurePolicy = "cancel",
    thread_limit: int = 40,
    cleanup_timeout: float = 10.0,
    interceptors: Iterable[Any] = (),
    monitor_interval: float | None = None,
    on_progress: Callable[[Progress], object] | None = None,
    retain_outputs: RetainOutputs = "all",
    executor: Literal["thread", "process"] | Executor = "thread",
    journal: str | os.PathLike[str] | Journal | None = None,
    codec: Codec | None = None,
    registry: StageRegistry | None = None,
) -> AsyncIterator[Runtime]:
    """Open a runtime: the scope that runs pipelines and owns their tasks.

    Example:
        >>> async with runtime() as rt:  # doctest: +SKIP
        ...     result = await rt.run(pipeline)
        >>> result.outputs["total"]  # doctest: +SKIP

    Args:
        on_failure: what a failing stage does to its run: ``"cancel"``
            (default, fail fast: every running stage is cancelled, pending
            ones never start) or ``"continue"`` (independent branches finish;
            stages after a failure become ``upstream_failed``).
        thread_limit: how many plain-function stages run in threads at once.
        cleanup_timeout: seconds a stage's resources get to close when it ends.
        interceptors: objects whose async ``before_stage(ctx)``,
            ``after_stage(ctx, value)`` and ``on_error(ctx, exc)`` methods (each
            optional) are called around every stage attempt.
        monitor_interval: seconds between samples of the process's RSS and
            progress reports; None (the default) turns the monitor off, and
            with it its cost. Sampled runs report ``stats.peak_rss`` and
            ``stats.memory``.
        journal: a path or a `Journal`: every run is recorded there durably
            (see `dagvisor.supervisor._journal` for the promise). With a
            journal, every stage must be restorable (registered, see
            `StageRegistry`) and every output encodable by the codec.
        codec: how outputs are written to the journal; `JsonCodec` by default,
            `PickleCodec` only if you opt in.
        registry: where stage functions are found by name; the registry
            `@stage` fills by default.
        executor: where plain-function stages without an executor of their
            own run: ``"thread"`` (default), ``"process"``, or an `Executor`
            such as `DaskExecutor`.
        retain_outputs: ``"all"`` (default) keeps every output until the run
            ends; ``"final"`` releases an output as soon as every stage that
            consumes it has started (or ended without running), keeping only
            the outputs no stage consumes. A change that would make a stage
            read a released output is refused with `StageStateError`.
            ``"journal"`` (needs a journal) does that and also drops each
            finished stage from memory once its dependents have all ended,
            so memory follows the stages in flight, not the stages run; the
            run's result then holds the stages still in memory (every stage
            without dependents among them), and ``Journal.result(run_id)``
            holds them all. A change naming a dropped stage is refused with
            `StageStateError`.
        on_progress: called with a `Progress` at most once per
            ``monitor_interval`` (0.5 s if not given), never once per stage.

    Leaving the block cancels the runs still going and waits for their cleanup.

    Raises:
        MissingMainGuardError: this process is a worker process importing
            the main script again, which opens a runtime at its top level.
    """
    refuse_in_bootstrap()
    policy = _check_policy(on_failure)
    named = isinstance(executor, str)  # an Executor's own __eq__ is never called
    if not (named and executor in ("thread", "process")) and (
        named or not isinstance(executor, Executor)
    ):
        msg = (
            "executor must be 'thread', 'process' or an Executor such as DaskExecutor, "
            f"not {executor!r}"
        )
        raise InvalidRequestError(msg)
    if retain_outputs not in ("all", "final", "journal"):
        msg = f"retain_outputs must be 'all', 'final' or 'journal', not {retain_outputs!r}"
        raise InvalidRequestError(msg)
    if retain_outputs == "journal" and journal is None:
        msg = (
            "retain_outputs='journal' drops finished stages from memory and keeps "
            "them in the journal: give runtime(journal=...) too"
        )
        raise InvalidRequestError(msg)
    if (
        isinstance(thread_limit, bool)
        or not isinstance(thread_limit, int)
        or thread_limit < 1
    ):
        msg = f"thread_limit must be a whole number >= 1, not {thread_limit!r}"
        raise InvalidRequestError(msg)
    if (
        not isinstance(cleanup_timeout, int | float)
        or not cleanup_timeout > 0
        or math.isnan(cleanup_timeout)
    ):
        msg = (
            f"cleanup_timeout must be a number of seconds > 0, not {cleanup_timeout!r}"
        )
        raise InvalidRequestError(msg)
    hooks = Hooks.from_interceptors(interceptors)
    if on_progress is not None and not callable(on_progress):
        msg = f"on_progress must be a callable taking a Progress, not {on_progress!r}"
        raise InvalidRequestError(msg)
    if monitor_interval is None and on_progress is not None:
        monitor_interval = 0.5
    if monitor_interval is not None and (
        isinstance(monitor_interval, bool)
        or not isinstance(monitor_interval, int | float)
        or not monitor_interval > 0
    ):
        msg = f"monitor_interval must be a number of seconds > 0, not {monitor_interval!r}"
        raise InvalidRequestError(msg)
    body_error: Exception | None = None
    journal_object = None
    if journal is not None:
        journal_object = journal if isinstance(journal, Journal) else Journal(journal)
        if journal_object.readonly:
            msg = (
                "runtime(journal=...) writes runs: give a Journal that is not readonly"
            )
            raise InvalidRequestError(msg)
        if journal_object._serving:
            msg = (
                f"{journal_object!r} already serves another runtime; give each "
                "runtime its own Journal object (the same path is fine)"
            )
            raise InvalidRequestError(msg)
        journal_object._serving = True
        try:
            # Checked here, outside any nursery, so that a bad file reaches
            # the caller as a plain JournalError. Nothing is written, and a
            # missing file is created only when a run is first written to it.
            await trio.to_thread.run_sync(journal_object.check)
        except BaseException:
            journal_object._serving = False
            raise
    try:
        async with trio.open_nursery() as services:
            writer: JournalWriter | None = None
            if journal_object is not None:
                # Started before any run and ended after the last one has ended,
                # so every run's final records are committed.
                writer = await services.start(JournalWriter(journal_object).run)
            try:
                async with trio.open_nursery() as nursery:
                    rt = Runtime(
                        nursery,
                        on_failure=policy,
                        thread_limiter=trio.CapacityLimiter(thread_limit),
                        cleanup_timeout=float(cleanup_timeout),
                        hooks=hooks,
                        monitor_interval=monitor_interval,
                        on_progress=on_progress,
                        retain_outputs=retain_outputs,
                        executor=executor,
                        journal=writer,
                        codec=(codec or JsonCodec()) if writer is not None else None,
                        registry=(registry or default_registry)
                        if writer is not None
                        else None,
                    )
                    try:
                        yield rt
                    except Exception as exc:
                        # Re-raised below, after the runs are cleaned up, so the caller
                        # sees its own error rather than a group wrapping it.
                        body_error = exc
                    finally:
                        rt._closed = True
                        nursery.cancel_scope.cancel()
            finally:
                if writer is not None:
                    writer.close()  # it commits what is queued, then ends
    finally:
        if journal_object is not None:
            journal_object._serving = False
    if body_error is not None:
        raise body_error
