"""The one error hierarchy of dagvisor.

Every error dagvisor raises derives from `DagvisorError`. Where a caller would
reasonably catch a builtin (``ValueError``, ``LookupError``...), the error
subclasses it too. Each error carries the facts as attributes, and its message
says what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CycleError",
    "DagvisorError",
    "DuplicateStageError",
    "InternalError",
    "InvalidRequestError",
    "InvalidStageError",
    "NotPicklableError",
    "NotRestorableError",
    "RecordedError",
    "RunClosedError",
    "RunFailed",
    "StageStateError",
    "StageTimeoutError",
    "UnknownRunError",
    "UnknownStageError",
]


class DagvisorError(Exception):
    """Root of every error raised by dagvisor."""


class InvalidStageError(DagvisorError, ValueError):
    """A stage was declared with an option that cannot work."""


class InvalidRequestError(DagvisorError, ValueError):
    """A request was malformed (for example, a change without a reason)."""


class CycleError(DagvisorError, ValueError):
    """Adding an edge or a stage would close a cycle.

    Attributes:
        path: the stages of the cycle, first and last the same, in edge order.
    """

    def __init__(self, path: Iterable[str], *, where: str = "") -> None:
        self.path: tuple[str, ...] = tuple(path)
        shown = " -> ".join(repr(name) for name in self.path)
        place = f" in {where}" if where else ""
        super().__init__(
            f"this change would close a cycle{place}: {shown}; "
            "remove one of these dependencies"
        )


class UnknownStageError(DagvisorError, LookupError):
    """A request named a stage that does not exist.

    Attributes:
        name: the unknown stage.
        referrer: the stage whose dependency named it, if any.
    """

    def __init__(
        self, name: str, *, referrer: str | None = None, where: str = ""
    ) -> None:
        self.name = name
        self.referrer = referrer
        place = f" in {where}" if where else ""
        if referrer is None:
            message = f"there is no stage {name!r}{place}; check the name"
        else:
            message = (
                f"stage {referrer!r} depends on {name!r}, which is not{place}; "
                f"add {name!r} first or fix the name"
            )
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class DuplicateStageError(DagvisorError, ValueError):
    """A stage name is already taken.

    Attributes:
        name: the name that clashed.
    """

    def __init__(self, name: str, *, where: str = "") -> None:
        self.name = name
        place = f" in {where}" if where else ""
        super().__init__(
            f"a stage named {name!r} already exists{place}; "
            "give the new stage another name (@stage(name=...) or spec.named(...))"
        )


class StageStateError(DagvisorError, RuntimeError):
    """A change needs a stage in one state, and it is in another.

    Attributes:
        name: the stage.
        state: its state when the change was refused (a `StageState` value).
    """

    def __init__(self, name: str, state: str, action: str) -> None:
        self.name = name
        self.state = state
        super().__init__(
            f"cannot {action} stage {name!r}: it is {state}; "
            "only stages that have not started can be changed"
        )


class RunClosedError(DagvisorError, RuntimeError):
    """A request reached a run that has already ended.

    Attributes:
        run_id: the run.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} has ended (or is ending after a failure or a cancel) "
            "and accepts no more changes; start a new run to continue"
        )


class NotPicklableError(DagvisorError, TypeError):
    """Something a stage must send to another process cannot be pickled.

    Attributes:
        stage: the stage.
        what: what could not be pickled (an input's name, ``item``, ...).
    """

    def __init__(self, stage: str, what: str, error: BaseException) -> None:
        self.stage = stage
        self.what = what
        super().__init__(
            f"stage {stage!r} runs in another process, but {what} cannot be pickled "
            f"({type(error).__name__}: {error}); send plain data, or run {stage!r} "
            "in a thread (executor='thread')"
        )


class NotRestorableError(DagvisorError, TypeError):
    """A stage could not be restored from a journal after a crash."""


class JournalError(DagvisorError, OSError):
    """A journal file cannot be used: not a journal, too new, damaged, unreadable."""


class UnknownRunError(DagvisorError, LookupError):
    """A run id that the journal does not hold.

    Attributes:
        run_id: the id asked for.
    """

    def __init__(self, run_id: str, where: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"there is no run {run_id!r} in {where}; "
            "list the runs it holds with `dagvisor runs --journal ...`"
        )

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class RecordedError(DagvisorError):
    """A stage's failure as a journal recorded it (its type name and message).

    Attributes:
        recorded: the text the journal holds, ``"TypeName: message"``.
        traceback: the formatted traceback the journal holds, if any.
    """

    def __init__(self, recorded: str, traceback: str | None = None) -> None:
        self.recorded = recorded
        self.traceback = traceback
        super().__init__(recorded)


class StageTimeoutError(DagvisorError, TimeoutError):
    """A stage attempt ran past its timeout.

    Attributes:
        name: the stage.
        timeout: the limit in seconds.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(
            f"stage {name!r} did not finish within its timeout of {timeout:g} s; "
            "raise @stage(timeout=...) or make the stage faster"
        )


class InternalError(DagvisorError):
    """A bug in dagvisor itself; please report it with the traceback."""


class RunFailed(DagvisorError):
    """A run ended with failed stages, or was cancelled.

    Attributes:
        result: the run's `RunResult`, with every stage's final state.
        errors: the exception of each failed stage, by stage name.
    """

    def __init__(self, result: Any, errors: Mapping[str, BaseException]) -> None:
        self.result = result
        self.errors: Mapping[str, BaseException] = dict(errors)
        if errors:
            shown = ", ".join(
                f"{name!r} ({type(exc).__name__}: {exc})"
                for name, exc in list(errors.items())[:3]
            )
            more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
            message = f"run {result.run_id!r} failed: {shown}{more}"
        else:
            message = f"run {result.run_id!r} was cancelled before it finished"
        super().__init__(message)
