"""The `Runtime` that ``runtime()`` yields: starting, resuming and recovering runs.

Ownership: the runtime's nursery owns every run task (see ``_run``); the
block itself, with the journal writer and the control API around the runs,
is opened by `runtime` (``_open``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

import trio

from dagvisor.actors import (
    InvalidRequestError,
    JsonCodec,
    NotRestorableError,
    Pipeline,
    RunClosedError,
    StreamedPipeline,
    default_registry,
)
from dagvisor.actors._env import RunEnv
from dagvisor.actors._freeze import freeze
from dagvisor.actors._limits import unknown_limits
from dagvisor.actors._messages import Message

from ._asked import pipeline_record
from ._monitor import Monitor
from ._options import FailurePolicy, RuntimeOptions, check_inputs, check_policy
from ._resume import Recovery, Resumption
from ._run import Run
from ._stage_refs import SpecReferences, check_restorable
from ._supervisor import GraphSupervisor

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._control._server import ControlServer
    from ._journal_rows import JournaledRun
    from ._replay import Replayed
    from ._result import RunResult
    from ._writer import JournalWriter

__all__ = ["Runtime"]

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
