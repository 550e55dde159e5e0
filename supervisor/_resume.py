"""Resuming a run from the journal, and recovering every run whose owner is gone.

A resume reads the run on a read-only connection (refusing a run whose
owner is live, and a bad journal, before anything is written), replays it,
makes the run, and then takes it over in one transaction of the writer
that checks again what was read: if the run went on meanwhile (another
process), it is read again, a few times, then given up. A run taken over
whose start fails gives its lease up at once.
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, final

import attrs
import trio

from dagvisor.actors import (
    DagvisorError,
    InvalidRequestError,
    JournalError,
    NotRestorableError,
    RunClosedError,
    RunOwnedError,
    StageState,
    UnknownLimitError,
    UnknownRunError,
)
from dagvisor.actors._limits import unknown_limits

from ._recover import load_for_resume, orphans
from ._replay import replay

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from dagvisor.actors import Codec, StageRegistry

    from ._journal_rows import JournaledRun
    from ._options import FailurePolicy
    from ._replay import Replayed
    from ._run import Run
    from ._supervisor import GraphSupervisor
    from ._writer import JournalWriter

__all__ = ["Recovery", "Resumption"]

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
            function is not registered here, `UnknownLimitError` when a stage
            names a limit this runtime does not define, `JournalError` when
            the run's record or its owner's lease is damaged). They are left as they
            were, for a process that has their code.
    """

    runs: tuple[Run, ...]
    skipped: Mapping[str, DagvisorError]


@final
class Resumption:
    """Resumes and recovers the runs of one runtime's journal.

    Args:
        writer: the runtime's journal writer (whose owner identity takes runs over).
        registry: where the runs' stage functions are found.
        codec: how the runs' values were encoded.
        active: the ids of the runs going in this runtime (shared with it).
        make_run: makes a run (and its supervisor) from a replay.
        launch: starts a run made by ``make_run``.
        limits: the runtime's named limits: a run whose stages to run name
            another is refused (`UnknownLimitError`) before it is taken over.
    """

    __slots__ = (
        "_active",
        "_codec",
        "_launch",
        "_limits",
        "_make_run",
        "_registry",
        "_writer",
    )

    def __init__(
        self,
        writer: JournalWriter,
        registry: StageRegistry,
        codec: Codec,
        active: set[str],
        make_run: Callable[
            [JournaledRun, Replayed, FailurePolicy], tuple[Run, GraphSupervisor]
        ],
        launch: Callable[[Run], Awaitable[Run]],
        limits: Mapping[str, trio.CapacityLimiter],
    ) -> None:
        self._limits = limits
        self._writer = writer
        self._registry = registry
        self._codec = codec
        self._active = active
        self._make_run = make_run
        self._launch = launch

    async def recover(self, policy: FailurePolicy) -> Recovery:
        """Resume every run that did not end and whose owner is gone (see `Runtime.recover`)."""
        writer = self._writer
        found, damaged = await trio.to_thread.run_sync(
            orphans, writer.journal.path, writer.owner
        )
        runs: list[Run] = []
        skipped: dict[str, DagvisorError] = dict(damaged)
        for run_id in found:
            if run_id in self._active:
                continue
            try:
                run = await self.resume(run_id, policy, recovering=True)
            except RunOwnedError:
                continue  # another process took it first: it is that one's
            except InvalidRequestError:
                continue  # another recover of this runtime took it meanwhile
            except (
                NotRestorableError,
                JournalError,
                UnknownRunError,
                UnknownLimitError,
            ) as exc:
                skipped[run_id] = exc
                continue
            if run is not None:
                runs.append(run)
        return Recovery(runs=tuple(runs), skipped=MappingProxyType(skipped))

    async def resume(
        self,
        run_id: str,
        policy: FailurePolicy,
        *,
        recovering: bool,
        closed: bool = False,
    ) -> Run | None:
        """Read, check and take over a run, then start it (None: nothing to recover)."""
        if closed:
            raise RunClosedError(run_id)
        writer = self._writer
        for _ in range(_RESUME_ATTEMPTS):
            self._refuse_if_active(run_id)
            # Read-only first: a run with a live owner is refused before its
            # journal is even replayed, and a bad journal before anything is written.
            journaled, _ = await trio.to_thread.run_sync(
                load_for_resume, writer.journal.path, run_id, writer.owner
            )
            if recovering and journaled.status != "running":
                return None  # another process finished it meanwhile
            restored = await trio.to_thread.run_sync(
                partial(replay, journaled, registry=self._registry, codec=self._codec)
            )
            _refuse_unknown_limits(restored, self._limits)
            self._refuse_if_active(run_id)  # started meanwhile, by another resume
            run, supervisor = self._make_run(journaled, restored, policy)
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

    def _refuse_if_active(self, run_id: str) -> None:
        if run_id in self._active:
            msg = f"run {run_id!r} is still going in this runtime; wait for it or cancel it first"
            raise InvalidRequestError(msg)


def _refuse_unknown_limits(
    restored: Replayed, limits: Mapping[str, trio.CapacityLimiter]
) -> None:
    """Refuse a run whose stages still to run name a limit ``limits`` lacks.

    Raises:
        UnknownLimitError: naming the stage and the limit.
    """
    kept = restored.kept_cancelled
    unknown_limits(
        (
            node.spec
            for node in restored.graph
            if node.state is not StageState.SUCCEEDED
            and node.state is not StageState.SKIPPED
            and node.name not in kept
        ),
        limits,
    )
