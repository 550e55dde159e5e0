"""Errors of a stage's body: what it returned, where it ran, how it ended."""

from __future__ import annotations

from typing import Any

from ._errors import DagvisorError

__all__ = [
    "InvalidOutputError",
    "MissingMainGuardError",
    "NotPicklableError",
    "ReadOnlyInputError",
    "RemoteError",
    "ResourceCloseError",
    "StageTimeoutError",
]


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
