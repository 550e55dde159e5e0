"""``runtime()``: the block that owns every run, the journal writer and the control API.

A service nursery holds the journal writer, which outlives every run so
that each run's last records are committed; the runtime's nursery holds
every run task and the control API's server. Leaving the block cancels the
runs still going and waits for their cleanup, so no task outlives it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import trio

from dagvisor.actors import InvalidRequestError
from dagvisor.actors._mainguard import refuse_in_bootstrap

from ._control._server import control_server
from ._options import RuntimeOptions
from ._runtime import Runtime
from ._writer import JournalWriter
from ._writer_process import open_worker

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from dagvisor.actors import Codec, Executor, StageRegistry

    from ._journal import Journal
    from ._monitor import Progress
    from ._options import FailurePolicy
    from ._retention import RetainOutputs

__all__ = ["runtime"]


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
    journal_writer: JournalWriter | None = None
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
            worker = await open_worker(journal_object)
            try:
                journal_writer = JournalWriter(journal_object, worker)
            except BaseException:  # its process must not outlive this
                with trio.CancelScope(shield=True):
                    await worker.aclose()
                raise
        except BaseException:
            journal_object._serving = False
            raise
    try:
        async with trio.open_nursery() as services:
            writer: JournalWriter | None = None
            if journal_writer is not None:
                # Started before any run and ended after the last one has ended,
                # so every run's final records are committed.
                writer = await services.start(journal_writer.run)
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
