"""Where a stage body runs: the event loop, a thread, a process, or a Dask cluster.

The stage actor always stays in the trio process; only the body moves.

* ``"loop"``: ``async def`` bodies, on the event loop.
* ``"thread"``: plain functions in a worker thread (`trio.to_thread`, bounded
  by ``runtime(thread_limit=...)``). The body gets the live `StageContext`
  (same process), and may change the graph through ``trio.from_thread``.
  Python cannot interrupt a thread: cancellation and timeouts take effect
  when the function returns.
* ``"process"``: plain functions in worker processes (trio-parallel, the
  ``process`` extra). The body gets a picklable `StageView`. Cancellation
  and timeouts kill the worker; a worker that dies fails the stage (retried
  if the stage has retries).
* `DaskExecutor`: plain functions on a ``dask.distributed`` cluster (the
  ``dask`` extra). The body gets a `StageView`; the actor awaits the future
  without blocking the event loop. Cancellation cancels the future: a task
  not yet started never runs, one already running finishes on its worker
  and its result is dropped. A lost worker makes Dask run the task again
  elsewhere, then fail it (``KilledWorker``), which fails the stage.

A body that leaves the process is shipped as a reference to its function
(module and qualified name), resolved on the worker; so it must be defined
at module level, and `@stage` refuses a lambda or a closure at once.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import uuid
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs
import trio

from ._errors import InvalidStageError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

__all__ = [
    "DaskExecutor",
    "Executor",
    "StageView",
    "function_reference",
    "run_process",
]


@final
@attrs.frozen(kw_only=True)
class StageView:
    """What a body running in another process sees: a picklable snapshot.

    Attributes:
        name: the stage's name.
        inputs: upstream stage name to its output.
        run_inputs: the run's inputs.
        item: the mapped value (`expand`), or None.
        key: the mapped stage's key, or None.
        attempt: 0 for the first attempt, 1 for the first retry, ...
        idempotency_key: the same for every attempt of the stage in its run
            (see `StageContext.idempotency_key`).
    """

    name: str
    inputs: Mapping[str, Any]
    run_inputs: Mapping[str, Any]
    item: Any
    key: str | None
    attempt: int
    idempotency_key: str = ""


@runtime_checkable
class Executor(Protocol):
    """Runs a stage body elsewhere; `DaskExecutor` is one. Plug in your own."""

    async def run(self, body: Callable[[StageView], Any], view: StageView) -> Any:
        """Run ``body(view)`` and return its result (raise what it raised)."""
        ...


@final
@attrs.frozen
class _FunctionReference:
    """A picklable way to call a module-level stage function on a worker."""

    module: str
    qualname: str

    def resolve(self) -> Callable[..., Any]:
        """The function, looked up on this side (a worker imports its module)."""
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        fn: Callable[..., Any] = getattr(
            target, "fn", target
        )  # @stage left its spec there
        return fn

    def call(self, *args: Any) -> Any:
        """Call the function with ``args``."""
        return self.resolve()(*args)

    def __call__(self, view: StageView) -> Any:
        return self.resolve()(view)


def function_reference(fn: Callable[..., Any], stage_name: str) -> _FunctionReference:
    """A picklable reference to ``fn``, or `InvalidStageError` saying how to fix it."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<locals>" in qualname or "<lambda>" in qualname:
        msg = (
            f"stage {stage_name!r} runs in another process, so its function "
            f"{qualname or fn!r} must be defined at module level (not a lambda, "
            "a closure or a nested function)"
        )
        raise InvalidStageError(msg)
    reference = _FunctionReference(module, qualname)
    pickle.dumps(reference)
    return reference


async def run_process(body: Callable[[StageView], Any], view: StageView) -> Any:
    """Run ``body(view)`` in a worker process; cancelling kills the worker."""
    try:
        import trio_parallel  # an optional extra, imported when used
    except ImportError:  # pragma: no cover - depends on the installation
        msg = "executor='process' needs trio-parallel: pip install 'dagvisor[process]'"
        raise InvalidStageError(msg) from None
    return await trio_parallel.run_sync(body, view, kill_on_cancel=True)


@final
class DaskExecutor:
    """Run plain-function stages on a ``dask.distributed`` cluster.

    Give it a scheduler address (the executor then owns its client and closes
    it in `aclose`) or a ``distributed.Client`` you own.

    Example:
        >>> async with DaskExecutor("tcp://scheduler:8786") as dask:  # doctest: +SKIP
        ...     crunch = stage(executor=dask)(crunch_numbers)
    """

    def __init__(self, cluster: Any = None) -> None:
        self._target = cluster
        self._client: Any = None
        self._owns_client = False
        self._lock = trio.Lock()

    async def _get_client(self) -> Any:
        async with self._lock:
            if self._client is None:
                try:
                    import distributed  # an optional extra, imported when used
                except ImportError:  # pragma: no cover - depends on the installation
                    msg = "DaskExecutor needs dask.distributed: pip install 'dagvisor[dask]'"
                    raise InvalidStageError(msg) from None
                if isinstance(self._target, distributed.Client):
                    self._client = self._target
                else:
                    # Connecting blocks: do it off the event loop.
                    self._client = await trio.to_thread.run_sync(
                        distributed.Client, self._target
                    )
                    self._owns_client = True
            return self._client

    async def run(self, body: Callable[[StageView], Any], view: StageView) -> Any:
        """Submit ``body(view)`` to the cluster and wait for it without blocking."""
        client = await self._get_client()
        key = f"{view.name}-{uuid.uuid4().hex}"
        # submit only queues a message for the client's own event loop: it
        # returns at once, no thread needed.
        future = client.submit(body, view, key=key, pure=False)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: object) -> None:  # runs in a Dask thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await trio.to_thread.run_sync(future.cancel)
            raise
        return await trio.to_thread.run_sync(future.result)

    async def aclose(self) -> None:
        """Close the client if this executor opened it."""
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(client.close)

    async def __aenter__(self) -> DaskExecutor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"DaskExecutor({self._target!r})"
