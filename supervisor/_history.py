"""A run's history as its journal tells it: each stage's attempts, each interruption and resume.

The journal records (additive event kinds: a journal written before them
simply lacks them, and reads as before):

* ``stage_started`` and ``attempt_started``: an attempt began (a retry, for
  the second); ``attempt_failed``: an attempt failed and the stage was tried
  again (its error); ``stage_ended``: the stage's last attempt ended.
* ``ended``: a stretch of the run ended: when, its status, and, when it
  stopped before it finished, by what (``by``, ``detail``: a cancel and its
  reason, the run's task cancelled, a failure).
* ``resumed``: the run went on, in this or another process. A ``resumed``
  with no ``ended`` before it means the process died: an interruption by
  ``"crash"``, at the last moment the journal saw the run alive.

A run is a sequence of stretches, from its start or a resume to the end of
the stretch (its ``ended`` event, or the last event it wrote before it
died). Its duration is the sum of its stretches: the time it
was stopped, between a stretch's end and the next resume, is not run time.

Everything here is pure data: `RunHistory` is built by feeding it the run's
events in order (`HistoryBuilder`), `attempts_of` reads one stage's attempts
from its events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

import attrs

from ._records import moment, text

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "HistoryBuilder",
    "Interruption",
    "RunHistory",
    "StageEvent",
    "attempts_of",
    "stage_event",
]

AttemptOutcome: TypeAlias = Literal[
    "succeeded",
    "failed",
    "retried",
    "cancelled",
    "skipped",
    "interrupted",
    "running",
]
"""How an attempt ended: its stage's final state (succeeded, failed,
cancelled, skipped); ``retried`` (it failed and the stage was tried again);
``interrupted`` (the run died while it ran, and was resumed since); or
``running`` (no end recorded yet)."""

_ENDED_STATES: Final = frozenset({"succeeded", "failed", "cancelled", "skipped"})

StageEvent: TypeAlias = tuple[int, str, float, str | None, str | None]
"""One event of a stage, compact: ``(seq, kind, time, state, error)``; kind
``"born"`` marks the change that added the stage (again), with no time."""


@final
@attrs.frozen(kw_only=True)
class Attempt:
    """One attempt of a stage, as the journal recorded it.

    Attributes:
        number: the attempt's ``ctx.attempt``: 0 for the first, counting on
            across retries and resumes.
        started_at: when it started, seconds since the epoch.
        ended_at: when it ended; None if no end was recorded (it was still
            running when the run died, or it runs now).
        outcome: how it ended (see `AttemptOutcome`).
        error: the error it failed with (``"Type: message"``), else None.
    """

    number: int
    started_at: float
    ended_at: float | None
    outcome: AttemptOutcome
    error: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds it ran, when its end is known."""
        return None if self.ended_at is None else self.ended_at - self.started_at


@final
@attrs.frozen(kw_only=True)
class Interruption:
    """A time the run was stopped before it finished.

    Attributes:
        at: when it stopped, seconds since the epoch: when it ended, or, for
            a run that died (``by`` is ``"crash"``), the last moment the
            journal saw it alive.
        by: what stopped it: ``"cancel"`` (``run.cancel``; ``detail`` is its
            reason: ``dagvisor run`` cancels with ``"SIGTERM: ..."`` or
            ``"SIGINT: ..."`` on a signal), ``"closed"`` (the run's task was
            cancelled: the ``runtime()`` block was left while it ran, or the
            caller of ``rt.run`` was cancelled), ``"failure"`` (a stage
            failed and ``on_failure="cancel"`` stopped the run), or
            ``"crash"`` (found at resume: its process stopped without ending
            it, or lost its lease to another runtime).
        detail: what happened, in words.
        resumed_at: when the run went on, or None if it has not (yet).
    """

    at: float
    by: str
    detail: str
    resumed_at: float | None = None

    @property
    def stopped(self) -> float | None:
        """Seconds the run stood still, from the interruption to the resume."""
        return None if self.resumed_at is None else max(0.0, self.resumed_at - self.at)


@final
@attrs.frozen(kw_only=True)
class RunHistory:
    """A run's stretches, interruptions and resumes (wall-clock seconds).

    Attributes:
        stretches: ``(start, end)`` of each stretch (of the last one, the
            moment it was last seen, for a run that has not ended).
        interruptions: each time the run was stopped, in order.
        resumes: when the run was resumed, in order.
        resume_seqs: the journal positions of the resumes (to cut attempts).
    """

    stretches: tuple[tuple[float, float], ...]
    interruptions: tuple[Interruption, ...] = ()
    resumes: tuple[float, ...] = ()
    resume_seqs: tuple[int, ...] = ()

    @property
    def duration(self) -> float:
        """Seconds the run ran: its stretches, not the time it was stopped."""
        return sum(max(0.0, stop - start) for start, stop in self.stretches)

    @property
    def stopped(self) -> float:
        """Seconds the run stood still between its stretches."""
        total = 0.0
        for (_, stop), (start, _) in zip(
            self.stretches, self.stretches[1:], strict=False
        ):
            total += max(0.0, start - stop)
        return total


_CRASH: Final = (
    "the process stopped without ending the run (a crash, SIGKILL, a power "
    "loss, or it lost its lease to another runtime); found when it was resumed"
)


@final
class HistoryBuilder:
    """Builds a `RunHistory` from a run's events, fed in journal order.

    Args:
        created: when the run started.
    """

    __slots__ = (
        "_end",
        "_interrupted",
        "_last",
        "_pending",
        "_resume_seqs",
        "_resumes",
        "_start",
        "_stretches",
    )

    def __init__(self, created: float) -> None:
        self._start = created
        self._last = created  # the last moment the current stretch was seen alive
        self._end: float | None = None  # its recorded end, if any
        self._pending: Interruption | None = None  # how it ended, if it stopped
        self._stretches: list[tuple[float, float]] = []
        self._interrupted: list[Interruption] = []
        self._resumes: list[float] = []
        self._resume_seqs: list[int] = []

    @property
    def last_seen(self) -> float:
        """The last moment the run was seen alive, in its current stretch."""
        return self._last

    def seen(self, time: float) -> None:
        """The run was alive at ``time`` (any event's time)."""
        if time > self._last:
            self._last = time

    def event(self, seq: int, kind: str, payload: dict[str, Any]) -> None:
        """Take note of one history event (``resumed`` or ``ended``).

        Raises:
            BadRecord: a field of the wrong kind.
            KeyError: a field is missing.
        """
        at = moment(payload["time"], "time")
        if kind == "ended":
            status = text(payload["status"], "status")
            by = payload.get("by")
            by = status if by is None else text(by, "interruption cause")
            detail = text(payload.get("detail", ""), "interruption detail")
            self._end = at
            self.seen(at)
            self._pending = None
            if status == "cancelled" or "by" in payload:  # cut short
                self._pending = Interruption(at=at, by=by, detail=detail)
            return
        # resumed: the stretch before ended (or died), the next one begins
        if self._end is None:
            self._interrupted.append(
                Interruption(at=self._last, by="crash", detail=_CRASH, resumed_at=at)
            )
            end = self._last
        else:
            end = self._end
            if self._pending is not None:
                self._interrupted.append(attrs.evolve(self._pending, resumed_at=at))
        self._stretches.append((self._start, max(end, self._start)))
        self._resumes.append(at)
        self._resume_seqs.append(seq)
        self._start = self._last = at
        self._end = None
        self._pending = None

    def build(self, *, ended: float | None) -> RunHistory:
        """The history; ``ended`` ends the last stretch when the run's record
        says it ended, else its ``ended`` event does, else the last moment it
        was seen alive."""
        if self._end is not None:
            ended = self._end
        elif ended is None:
            ended = self._last
        interruptions = list(self._interrupted)
        if self._pending is not None:  # stopped, not resumed (yet)
            interruptions.append(self._pending)
        return RunHistory(
            stretches=(*self._stretches, (self._start, max(ended, self._start))),
            interruptions=tuple(interruptions),
            resumes=tuple(self._resumes),
            resume_seqs=tuple(self._resume_seqs),
        )


def stage_event(seq: int, kind: str, payload: dict[str, Any]) -> StageEvent:
    """The compact form of a stage event (its payload checked).

    Raises:
        BadRecord: a field of the wrong kind.
        KeyError: a field is missing.
    """
    time = moment(payload["time"], "time")
    state = None
    if kind == "stage_ended":
        state = text(payload["state"], "state")
    error = payload.get("error")
    return (seq, kind, time, state, None if error is None else text(error, "error"))


def attempts_of(
    events: Iterable[StageEvent], resume_seqs: Sequence[int]
) -> tuple[Attempt, ...]:
    """A stage's attempts, from its events in order (and the run's resumes).

    Only the attempts since the stage was last added (the last ``"born"``
    marker) are given; they are numbered on from every start before.
    """
    attempts: list[Attempt] = []
    started = 0  # starts so far, of any life of the stage
    current: tuple[int, int, float] | None = None  # (seq, number, started_at)
    resumes = list(resume_seqs)

    def close(
        ended_at: float | None, outcome: AttemptOutcome, error: str | None = None
    ) -> None:
        """The current attempt ends so; none is current after it."""
        nonlocal current
        assert current is not None
        attempts.append(
            Attempt(
                number=current[1],
                started_at=current[2],
                ended_at=ended_at,
                outcome=outcome,
                error=error,
            )
        )
        current = None

    def cut_before(seq: int) -> None:
        if current is not None and any(current[0] < at < seq for at in resumes):
            close(None, "interrupted")

    for seq, kind, time, state, error in events:
        if kind == "born":
            attempts.clear()
            current = None
            continue
        cut_before(seq)
        if kind in ("stage_started", "attempt_started"):
            if current is not None:  # no end recorded before the next start
                close(None, "interrupted")
            current = (seq, started, time)
            started += 1
        elif current is None:
            continue  # ended without starting (skipped before it ran, say)
        elif kind == "attempt_failed":
            close(time, "retried", error)
        elif kind == "stage_ended":
            outcome: AttemptOutcome = state if state in _ENDED_STATES else "cancelled"  # type: ignore[assignment]  # one of them, checked
            close(time, outcome, error)
    if current is not None:
        cut_before(1 << 62)
    if current is not None:
        close(None, "running")
    return tuple(attempts)
