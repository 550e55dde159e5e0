"""`runtime()` and the `Runtime` it yields: starting, resuming and recovering runs.

Ownership: the runtime's nursery owns every run task (see ``_run``), and a
service nursery the journal writer, which outlives every run so that each
run's last records are committed. Leaving the ``runtime()`` block cancels
the runs still going and waits for their cleanup, so no task outlives it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from dagvisor.actors import (
    Codec,
    DagvisorError,
    Executor,
    InvalidRequestError,
    JournalError,
    JsonCodec,
    Message,
    NotRestorableError,
    Pipeline,
    RunClosedError,
    RunEnv,
    RunOwnedError,
    StageRegistry,
    StreamedPipeline,
    UnknownRunError,
    default_registry,
    freeze,
    refuse_in_bootstrap,
)

from ._monitor import Monitor, Progress
from ._options import FailurePolicy, RuntimeOptions, check_inputs, check_policy
from ._recover import load_for_resume, orphans
from ._replay import replay
from ._run import Run
from ._run_records import pipeline_record
from ._stage_refs import SpecReferences, check_restorable
from ._supervisor import GraphSupervisor
from ._writer import JournalWriter

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from ._journal import Journal
    from ._replay import Replayed
    from ._result import RunResult
    from ._retention import RetainOutputs

__all__ = ["Recovery", "Runtime", "runtime"]

logger = logging.getLogger("dagvisor")

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
        "_closed",
        "_codec",
        "_journal",
        "_limiter",
        "_nursery",
        "_options",
        "_registry",
    )

    def __init__(
        self,
        nursery: trio.Nursery,
        options: RuntimeOptions,
        journal: JournalWriter | None,
    ) -> None:
        self._nursery = nursery
        self._options = options
        self._journal = journal
        # With a journal, outputs are encoded and functions found by name.
        self._codec = None if journal is None else options.codec or JsonCodec()
        self._registry = (
            None if journal is None else options.registry or default_registry
        )
        self._limiter = trio.CapacityLimiter(options.thread_limit)
        self._closed = False
        self._active: set[str] = set()

    @property
    def _policy(self) -> FailurePolicy:
        return self._options.on_failure

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
        inputs = check_inputs(inputs)
        policy = self._policy if on_failure is None else check_policy(on_failure)
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
        records = supervisor.core.records
        if records is not None:
            assert isinstance(pipeline, Pipeline)  # streamed ones were refused above
            assert self._codec is not None
            records.start(
                pipeline.name,
                supervisor.started_wall,
                pipeline_record(pipeline, self._registry),
                encoded_inputs,
                self._codec.name,
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
            cleanup_timeout=float(self._options.cleanup_timeout),
            hooks=self._options.hooks,
            default_executor=self._options.executor,
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
            retain_outputs=self._options.retain_outputs,
            journal=self._journal,
            restored=restored,
        )
        return Run(run_id, name, env, supervisor, send), supervisor

    async def _launch(self, run: Run) -> Run:
        monitor = None
        interval = self._options.monitor_interval
        if interval is not None:
            supervisor = run._supervisor
            monitor = Monitor(
                supervisor.core,
                supervisor.started_at,
                interval,
                self._options.on_progress,
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
        policy = self._policy if on_failure is None else check_policy(on_failure)
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
        policy = self._policy if on_failure is None else check_policy(on_failure)
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
                    core = supervisor.core
                    assert core.records is not None
                    core.records.resumed(
                        supervisor.started_wall, core.done, core.unfinished
                    )
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
    options = RuntimeOptions.of(
        on_failure=on_failure,
        thread_limit=thread_limit,
        cleanup_timeout=cleanup_timeout,
        interceptors=interceptors,
        monitor_interval=monitor_interval,
        on_progress=on_progress,
        retain_outputs=retain_outputs,
        executor=executor,
        journal=journal,
        codec=codec,
        registry=registry,
    )
    body_error: Exception | None = None
    journal_object = options.the_journal()
    if journal_object is not None:
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
                    rt = Runtime(nursery, options, writer)
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
