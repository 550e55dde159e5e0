"""The one error hierarchy of dagvisor.

Every error dagvisor raises derives from `DagvisorError`. Where a caller would
reasonably catch a builtin (``ValueError``, ``LookupError``...), the error
subclasses it too. Each error carries the facts as attributes, and its message
says what was wrong and what to do about it.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CycleError",
    "DagvisorError",
    "DuplicateStageError",
    "InternalError",
    "InvalidOutputError",
    "InvalidRequestError",
    "InvalidStageError",
    "JournalError",
    "JournalWriteError",
    "LeaseLostError",
    "MissingMainGuardError",
    "NotPicklableError",
    "NotRestorableError",
    "OutputTooLargeError",
    "ReadOnlyInputError",
    "RecordedError",
    "RemoteError",
    "ResourceCloseError",
    "RunClosedError",
    "RunFailed",
    "RunOwnedError",
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

    def __init__(self, stage: str, what: str, error: BaseException | str) -> None:
        self.stage = stage
        self.what = what
        detail = error if isinstance(error, str) else _describe(error)
        super().__init__(
            f"stage {stage!r} runs in another process, but {what} cannot be pickled "
            f"({detail}); send plain data, or run {stage!r} "
            "in a thread (executor='thread')"
        )
        self._detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in worker processes too: it must cross back whole.
        return (type(self), (self.stage, self.what, self._detail))


class InvalidOutputError(DagvisorError, TypeError):
    """A stage returned a value that cannot be frozen to be shared with its consumers.

    Attributes:
        stage: the stage.
        type_name: the type of the value it returned.
    """

    def __init__(self, stage: str, value: object, error: BaseException) -> None:
        self.stage = stage
        self.type_name = f"{type(value).__module__}.{type(value).__qualname__}"
        super().__init__(
            f"stage {stage!r} returned a {self.type_name} that cannot be frozen to be "
            f"shared with its consumers ({type(error).__name__}: {error}); return "
            "plain data, or objects whose __hash__ and __eq__ do not raise"
        )


class ReadOnlyInputError(DagvisorError, TypeError):
    """A stage tried to change a value it shares with other stages.

    Outputs, mapped items and run inputs are frozen once and shared by every
    stage that reads them; make a private copy to change one
    (``copy.deepcopy(value)``, ``list(value)``, ``dict(value)``).
    """


class NotRestorableError(DagvisorError, TypeError):
    """A stage could not be restored from a journal after a crash."""


class OutputTooLargeError(NotRestorableError):
    """A value is larger than the journal can store, so the run could not be resumed.

    Attributes:
        what: what was too large (``"the output"``, ``"the run's inputs"``,
            the items of an ``expand``).
        size: its size in the journal, in bytes.
        limit: the largest value the journal stores, in bytes.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} would take {size:,} bytes in the journal, over the "
            f"{limit:,} bytes it can store in one value; keep large data outside "
            "the run (a file, an object store) and pass its path, or raise the "
            "limit with Journal(max_value_bytes=...)"
        )


class JournalError(DagvisorError, OSError):
    """A journal file cannot be used: not a journal, damaged, too new or too old."""


class JournalWriteError(JournalError):
    """A run's records could not be committed to its journal; the run was stopped.

    What was committed before stays in the journal (a prefix of the run, never
    a record without the ones before it), and the run can be resumed from it.

    Attributes:
        run_id: the run.
        reason: why the records could not be committed.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        return (
            f"the journal could not commit the records of run {self.run_id!r} "
            f"({self.reason}), so the run was stopped; what was committed before "
            "is kept: resume the run once the journal can be written again"
        )


class LeaseLostError(JournalWriteError):
    """Another runtime took the run over; this one stopped it and wrote no more.

    Attributes:
        run_id: the run.
        reason: how the lease was lost (taken over, or not renewed in time).
    """

    def _message(self) -> str:
        return (
            f"run {self.run_id!r} is no longer owned by this runtime ({self.reason}); "
            "it was stopped and nothing more of it was written; its new owner "
            "goes on with it"
        )


class RunOwnedError(JournalError):
    """A run is owned by another runtime whose lease is live: it cannot be resumed here.

    Attributes:
        run_id: the run.
        host: the host name of the owner's process.
        pid: the owner's process id.
        expires: when the owner's lease ends unless renewed (seconds since the epoch).
    """

    def __init__(self, run_id: str, *, host: str, pid: int, expires: float) -> None:
        self.run_id = run_id
        self.host = host
        self.pid = pid
        self.expires = expires
        moment = datetime.datetime.fromtimestamp(expires, tz=datetime.UTC)
        super().__init__(
            f"run {run_id!r} is owned by process {pid} on host {host!r}, whose "
            f"lease runs until {moment:%Y-%m-%d %H:%M:%S} UTC and is renewed while "
            "the run goes; wait for that run to end, or stop that process (a run "
            "whose owner is gone can be resumed, or taken by `recover`)"
        )


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


class ResourceCloseError(DagvisorError, RuntimeError):
    """A resource a stage entered with ``ctx.enter`` did not close.

    Its ``__aexit__`` raised (the cause is chained), or did not return within
    the runtime's ``cleanup_timeout`` and was abandoned. An attempt whose
    resource did not close is not a success: closing may be what commits or
    flushes its work.

    Attributes:
        stage: the stage.
        resource: the resource, as its ``repr``.
        timeout: the cleanup timeout it ran past, or None when it raised.
    """

    def __init__(
        self,
        stage: str,
        resource: str,
        *,
        error: BaseException | None = None,
        timeout: float | None = None,
    ) -> None:
        self.stage = stage
        self.resource = resource
        self.timeout = timeout
        if error is not None:
            message = (
                f"stage {stage!r}: resource {resource} failed to close "
                f"({_describe(error)}); the attempt does not count as a success, as "
                "what closing does (a commit, a flush) may not have happened; fix its "
                "__aexit__ or handle the failure inside it"
            )
        else:
            message = (
                f"stage {stage!r}: resource {resource} did not close within the "
                f"cleanup timeout of {timeout:g} s and was abandoned; the attempt does "
                "not count as a success; make its __aexit__ faster or raise "
                "runtime(cleanup_timeout=...)"
            )
        super().__init__(message)


class RemoteError(DagvisorError):
    """A stage body failed in another process with an exception that cannot come back.

    The exception could not be pickled there, or not be rebuilt here (an
    attribute holding a lock, a constructor that takes other arguments than
    its message): it arrives as its type name, message and traceback text.

    Attributes:
        stage: the stage.
        type_name: the exception's qualified type name (``module.Class``).
        message: its message, ``str(exc)``.
        remote_traceback: its traceback, formatted in the process it was raised in.
    """

    def __init__(
        self, stage: str, type_name: str, message: str, remote_traceback: str
    ) -> None:
        self.stage = stage
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(
            f"stage {stage!r} raised {type_name}: {message} in another process (the "
            "exception itself could not be sent back; its traceback there:)\n"
            f"{remote_traceback}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.stage, self.type_name, self.message, self.remote_traceback),
        )


class MissingMainGuardError(DagvisorError, RuntimeError):
    """Worker processes would run the main script's pipeline again.

    Worker processes (``executor="process"``, a local Dask cluster) start by
    importing the main script again; code at its top level that starts a
    run must be under ``if __name__ == "__main__":``.

    Attributes:
        path: the main script.
        line: the line that starts the run, when known.
    """

    def __init__(self, path: str, line: int | None, *, in_worker: bool) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line is not None else path
        if in_worker:
            first = (
                f"this process is a worker started with multiprocessing and is "
                f"importing the main script again ({where}), which starts a run at "
                "its top level"
            )
        else:
            first = (
                f"a worker process imports the main script again ({where}), and the "
                "code that starts this run is at its top level"
            )
        super().__init__(
            f"{first}: every worker would run the pipeline again. Put that code "
            'under `if __name__ == "__main__":` (see "Where stage bodies run" in '
            "the README)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_main_guard_error, (self.path, self.line, str(self)))


def _main_guard_error(path: str, line: int | None, message: str) -> Exception:
    error = MissingMainGuardError(path, line, in_worker=False)
    error.args = (message,)
    return error


def _describe(error: BaseException) -> str:
    """``TypeName: message``, even for an exception whose ``__str__`` raises."""
    try:
        text = str(error)
    except Exception:  # a hostile __str__: the type name still says what happened
        text = "<its message could not be read>"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class InternalError(DagvisorError):
    """A bug in dagvisor itself; please report it with the traceback."""


class RunFailed(DagvisorError):
    """A run ended with failed stages, was cancelled, or its journal failed.

    Attributes:
        result: the run's `RunResult`, with every stage's final state.
        errors: the exception of each failed stage, by stage name.
        journal_error: why the run's journal could not record it (a
            `JournalWriteError`, or `LeaseLostError` when another runtime took
            the run over), else None. The run was then stopped, and its
            status is ``"failed"`` whatever its stages did.
    """

    def __init__(
        self,
        result: Any,
        errors: Mapping[str, BaseException],
        *,
        journal_error: JournalError | None = None,
    ) -> None:
        self.result = result
        self.errors: Mapping[str, BaseException] = dict(errors)
        self.journal_error = journal_error
        if errors:
            shown = ", ".join(
                f"{name!r} ({type(exc).__name__}: {exc})"
                for name, exc in list(errors.items())[:3]
            )
            more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
            message = f"run {result.run_id!r} failed: {shown}{more}"
        elif journal_error is None:
            message = f"run {result.run_id!r} was cancelled before it finished"
        else:
            message = f"run {result.run_id!r} failed"
        if journal_error is not None:
            message += f"; {journal_error}"
        super().__init__(message)
