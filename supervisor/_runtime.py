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
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, final

import trio

from dagvisor.actors import (
    Codec,
    Executor,
    InvalidRequestError,
    JsonCodec,
    NotRestorableError,
    Pipeline,
    RunClosedError,
    StageRegistry,
    StreamedPipeline,
    default_registry,
)
from dagvisor.actors._env import RunEnv
from dagvisor.actors._freeze import freeze
from dagvisor.actors._limits import unknown_limits
from dagvisor.actors._mainguard import refuse_in_bootstrap
from dagvisor.actors._messages import Message

from ._control._server import control_server
from ._monitor import Monitor, Progress
from ._options import FailurePolicy, RuntimeOptions, check_inputs, check_policy
from ._resume import Recovery, Resumption
from ._run import Run
from ._run_records import pipeline_record
from ._stage_refs import SpecReferences, check_restorable
from ._supervisor import GraphSupervisor
from ._writer import JournalWriter

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from ._control._server import ControlServer
    from ._journal import Journal
    from ._journal_rows import JournaledRun
    from ._replay import Replayed
    from ._result import RunResult
    from ._retention import RetainOutputs

__all__ = ["Runtime", "runtime"]

logger = logging.getLogger("dagvisor")

# Room in a run's inbox. What can be queued there is bounded by the run
# itself: each running stage sends one outcome, and each requester has at
# most one request in flight (it waits for the answer). So this bound only
# decides when a sender must park. When a fan-out of 100,000 stages ends in
# one scheduler pass, a bound of 4,096 made most actors park and be woken
# again. Senders past it still wait (backpressure); the supervisor never does.
_INBOX_SIZE = 1 << 18


@final
class Runtime:
    """Runs pipelines; yielded by `runtime()`. Not constructed by users."""

    __slots__ = (
        "_active",
        "_closed",
        "_codec",
        "_journal",
        "_limiter",
        "_limits",
        "_nursery",
        "_options",
        "_processes",
        "_registry",
        "_server",
    )

    def __init__(
        self,
        nursery: trio.Nursery,
        options: RuntimeOptions,
        journal: JournalWriter | None,
        server: ControlServer | None = None,
    ) -> None:
        self._nursery = nursery
        self._server = server
        self._options = options
        self._journal = journal
        # With a journal, outputs are encoded and functions found by name.
        self._codec = None if journal is None else options.codec or JsonCodec()
        self._registry = (
            None if journal is None else options.registry or default_registry
        )
        self._limiter = trio.CapacityLimiter(options.thread_limit)
        # Shared by every run of this runtime.
        self._limits = MappingProxyType(
            {name: trio.CapacityLimiter(n) for name, n in options.limits.items()}
        )
        workers = options.process_workers
        self._processes = None if workers is None else trio.CapacityLimiter(workers)
        self._closed = False
        self._active: set[str] = set()

    @property
    def url(self) -> str | None:
        """Where the control API listens (``runtime(serve=...)``), as
        ``http://HOST:PORT`` (``https://`` with TLS); None when not serving."""
        return None if self._server is None else self._server.url

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
            UnknownLimitError: a stage names a limit the runtime does not
                define (``runtime(limits=...)``); nothing ran.
        """
        if not isinstance(pipeline, Pipeline | StreamedPipeline):
            msg = f"run needs a Pipeline or a streamed pipeline, not {pipeline!r}"
            raise TypeError(msg)
        inputs = check_inputs(inputs)
        policy = self._policy if on_failure is None else check_policy(on_failure)
        if self._closed:
            raise RunClosedError(pipeline.name)
        if isinstance(pipeline, Pipeline):
            unknown_limits(pipeline._specs(), self._limits)
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
            encoded = self._codec.encode(dict(inputs or {}))
            if type(encoded) is not str:
                msg = (
                    f"the run's inputs are journaled as text, and codec "
                    f"{self._codec.name!r} wrote {type(encoded).__name__}: pass "
                    "plain data as inputs (paths, parameters), and arrays or frames "
                    "as stage outputs"
                )
                raise NotRestorableError(msg)
            encoded_inputs = encoded
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
            limits=self._limits,
            process_limiter=self._processes,
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
        if self._server is not None:
            self._server.runs.add(started)
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
            UnknownLimitError: a stage still to run names a limit this
                runtime does not define; nothing ran.
        """
        if not isinstance(run_id, str):
            msg = f"run_id must be a run id (str), not {run_id!r}"
            raise TypeError(msg)
        policy = self._policy if on_failure is None else check_policy(on_failure)
        run = await self._resumption("resume").resume(
            run_id, policy, recovering=False, closed=self._closed
        )
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
        return await self._resumption("recover").recover(policy)

    def _resumption(self, what: str) -> Resumption:
        if self._journal is None:
            msg = (
                f"{what} needs the journal the run was written to: "
                "open the runtime with runtime(journal=...)"
            )
            raise InvalidRequestError(msg)
        assert self._registry is not None
        assert self._codec is not None
        return Resumption(
            self._journal,
            self._registry,
            self._codec,
            self._active,
            self._make_resumed,
            self._launch,
            self._limits,
        )

    def _make_resumed(
        self, journaled: JournaledRun, restored: Replayed, policy: FailurePolicy
    ) -> tuple[Run, GraphSupervisor]:
        return self._make_run(
            journaled.run_id,
            journaled.name,
            restored.inputs,
            policy,
            Pipeline(journaled.name),
            restored,
        )

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
    process_workers: int | None = None,
    limits: Mapping[str, int] | None = None,
    cleanup_timeout: float = 10.0,
    interceptors: Iterable[Any] = (),
    monitor_interval: float | None = None,
    on_progress: Callable[[Progress], object] | None = None,
    retain_outputs: RetainOutputs = "all",
    executor: Literal["thread", "process"] | Executor = "thread",
    journal: str | os.PathLike[str] | Journal | None = None,
    codec: Codec | str | None = None,
    registry: StageRegistry | None = None,
    serve: str | None = None,
    tokens: str | os.PathLike[str] | None = None,
    serve_cert: str | os.PathLike[str] | None = None,
    serve_key: str | os.PathLike[str] | None = None,
    serve_insecure_non_loopback: bool = False,
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
        thread_limit: how many plain-function stages (and ``ctx.run_in``
            calls) of this runtime run in threads at once.
        process_workers: how many process stages (``executor="process"``,
            and ``ctx.run_in("process", ...)`` calls) of this runtime run at
            once, each in a worker process; None (the default) shares
            trio-parallel's default limit, one per CPU. A `DaskExecutor`
            has its own count (``DaskExecutor(slots=...)``, by default the
            cluster's worker threads).
        limits: named concurrency limits, ``{"db": 4}``: at most 4 stages
            declared ``@stage(limit="db")`` run at once, across every run of
            this runtime (Airflow's pools, Prefect's concurrency limits). A
            stage waiting for its limit (or for its executor's slot) is
            ``queued``: that wait is not part of its timeout nor of its run
            time. A run naming a limit not given here is refused when it
            starts (`UnknownLimitError`), a stage added at run time when it
            is added.
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
        codec: how outputs are written to the journal: a codec, or a built-in
            one by name: ``"json"`` (`JsonCodec`, the default), ``"data"``
            (`DataCodec`: numpy arrays as ``.npy``, pandas and Arrow tables
            as Arrow IPC, the rest as JSON), ``"pickle"`` (`PickleCodec`,
            only if you opt in). ``@stage(codec=...)`` overrides it for one
            stage's output.
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
        serve: ``"HOST:PORT"``: serve the control API there while the
            runtime is open (port 0 picks a free one; ``rt.url`` says where).
            Needs the ``serve`` extra and ``tokens``. See the README's
            "Operating a live run".
        tokens: the token file (``NAME ROLE SHA256-OF-SECRET`` lines, as
            ``dagvisor token add`` writes them), read once when the runtime
            opens.
        serve_cert: the TLS certificate (PEM) to serve with, with ``serve_key``.
            A non-loopback address needs TLS.
        serve_key: the TLS certificate's private key (PEM).
        serve_insecure_non_loopback: serve a non-loopback address without
            TLS anyway (tokens then cross the network in clear text); logged
            as a warning.

    Leaving the block cancels the runs still going and waits for their cleanup.

    Raises:
        MissingMainGuardError: this process is a worker process importing
            the main script again, which opens a runtime at its top level.
    """
    refuse_in_bootstrap()
    options = RuntimeOptions.of(
        on_failure=on_failure,
        thread_limit=thread_limit,
        process_workers=process_workers,
        limits=limits,
        cleanup_timeout=cleanup_timeout,
        interceptors=interceptors,
        monitor_interval=monitor_interval,
        on_progress=on_progress,
        retain_outputs=retain_outputs,
        executor=executor,
        journal=journal,
        codec=codec,
        registry=registry,
        serve=serve,
        tokens=tokens,
        serve_cert=serve_cert,
        serve_key=serve_key,
        serve_insecure_non_loopback=serve_insecure_non_loopback,
    )
    server = None if options.serve is None else await control_server(options)
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
                    rt = Runtime(nursery, options, writer, server)
                    try:
                        if server is not None:
                            await server.start(nursery)
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
