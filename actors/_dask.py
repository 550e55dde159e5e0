"""`DaskExecutor`: stage bodies on a ``dask.distributed`` cluster (the ``dask`` extra).

The body gets a `StageView`; the actor awaits the future without blocking
the event loop. The executor holds one slot per worker thread of the
cluster: an attempt takes a slot before its timer starts, so waiting for
room is not part of its timeout, and a task gives its slot back only when
it has really ended on its worker. Dask cannot interrupt a running task: a
cancelled or timed-out attempt ends at once for the run, and its task
finishes on its worker with its result dropped, holding its slot until then
(the future stays referenced here, and its done-callback gives the slot
back), so a retry never queues behind it. A lost worker makes Dask run the
task again elsewhere, then fail it (``KilledWorker``), which fails the stage.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from ._errors import InvalidRequestError, InvalidStageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from types import TracebackType

    from ._executors import StageView
    from ._limits import Held

__all__ = ["DaskExecutor", "DaskStatistics"]

_SAFE = re.compile(r"[^A-Za-z0-9_.\[\]-]")


@final
@attrs.frozen
class DaskStatistics:
    """What a `DaskExecutor` holds (`DaskExecutor.statistics`).

    Attributes:
        slots: how many tasks it runs at once (the cluster's worker threads
            when it connected, or ``slots=``); 0 before it first connects.
        running: tasks submitted that have not ended on their worker yet,
            abandoned ones (cancelled, timed out) included.
    """

    slots: int
    running: int


@final
class DaskExecutor:
    """Run plain-function stages on a ``dask.distributed`` cluster.

    Give it a scheduler address (the executor then owns its client and closes
    it in `aclose`) or a ``distributed.Client`` you own. It runs at most
    ``slots`` tasks at once, by default one per worker thread of the cluster
    when it connects; the count assumes the cluster is used by this executor
    alone.

    Example:
        >>> async with DaskExecutor("tcp://scheduler:8786") as dask:  # doctest: +SKIP
        ...     crunch = stage(executor=dask)(crunch_numbers)
    """

    def __init__(self, cluster: Any = None, *, slots: int | None = None) -> None:
        if slots is not None and (
            isinstance(slots, bool) or not isinstance(slots, int) or slots < 1
        ):
            msg = f"slots must be a whole number >= 1 or None, not {slots!r}"
            raise InvalidRequestError(msg)
        self._target = cluster
        self._client: Any = None
        self._owns_client = False
        self._lock = trio.Lock()
        self._slots_wanted = slots
        self._slots: trio.CapacityLimiter | None = None
        self._running: dict[str, Any] = {}  # key -> future, until it has ended

    async def _get_client(self) -> tuple[Any, trio.CapacityLimiter]:
        async with self._lock:
            if self._client is None:
                try:
                    import distributed  # an optional extra, imported when used
                except ImportError:  # pragma: no cover - depends on the installation
                    msg = "DaskExecutor needs dask.distributed: pip install 'dagvisor[dask]'"
                    raise InvalidStageError(msg) from None
                if isinstance(self._target, distributed.Client):
                    client = self._target
                else:
                    # Connecting blocks: do it off the event loop.
                    client = await trio.to_thread.run_sync(
                        distributed.Client, self._target
                    )
                    self._owns_client = True
                slots = self._slots_wanted
                if slots is None:
                    threads = await trio.to_thread.run_sync(client.nthreads)
                    slots = max(1, sum(threads.values()))
                self._client = client
                self._slots = trio.CapacityLimiter(slots)
            assert self._slots is not None
            return self._client, self._slots

    @contextlib.asynccontextmanager
    async def _slot(
        self, held: Held | None = None
    ) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
        """Wait for a free slot; yield how to submit one task that will use it.

        The slot is given back when the submitted task has ended on its
        worker, even if whoever submitted it was cancelled long before; or
        at once if nothing was submitted. ``held`` (a named limit's token,
        taken before the slot) is handed over with the task and given back
        with the slot.
        """
        client, limiter = await self._get_client()
        borrower = object()
        await limiter.acquire_on_behalf_of(borrower)
        handed_over = False

        async def submit(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            nonlocal handed_over
            # Dask keys travel to the scheduler: plain characters only (a
            # stage name may hold anything, lone surrogates included).
            key = f"{_SAFE.sub('_', name)[:64]}-{uuid.uuid4().hex}"
            # submit only queues a message for the client's own event loop:
            # it returns at once, no thread needed.
            future = client.submit(fn, *args, key=key, pure=False)
            handed_over = True
            limit = None if held is None else held.hand_over()
            self._running[key] = future
            done = trio.Event()
            token = trio.lowlevel.current_trio_token()

            def ended() -> None:
                self._running.pop(key, None)
                limiter.release_on_behalf_of(borrower)
                if limit is not None:
                    limit.release_handed_over()
                done.set()

            def wake(_: object) -> None:  # runs in a Dask thread
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(ended)

            future.add_done_callback(wake)
            await done.wait()
            return await trio.to_thread.run_sync(future.result)

        try:
            yield submit
        finally:
            if not handed_over:
                limiter.release_on_behalf_of(borrower)

    async def run(self, body: Callable[[StageView], Any], view: StageView) -> Any:
        """Submit ``body(view)`` to the cluster and wait for it without blocking."""
        async with self._slot() as submit:
            return await submit(view.name, body, view)

    def statistics(self) -> DaskStatistics:
        """How many slots it has and how many tasks are still running."""
        slots = 0 if self._slots is None else int(self._slots.total_tokens)
        return DaskStatistics(slots=slots, running=len(self._running))

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
