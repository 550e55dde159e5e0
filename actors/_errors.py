"""The one error hierarchy of dagvisor: its root, and the refusals of declarations,
requests and runs.

Every error dagvisor raises derives from `DagvisorError`. Where a caller would
reasonably catch a builtin (``ValueError``, ``LookupError``...), the error
subclasses it too. Each error carries the facts as attributes, and its message
says what was wrong and what to do about it. What a stage body runs into is in
``_stage_errors``; what the journal refuses or fails at, in ``_journal_errors``.
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
    "InvalidSignalError",
    "InvalidStageError",
    "MissingExtraError",
    "RunClosedError",
    "RunFailed",
    "RunFailedError",
    "StageStateError",
    "TokenFileError",
    "UnknownLimitError",
    "UnknownStageError",
]


class DagvisorError(Exception):
    """Root of every error raised by dagvisor."""


class InvalidStageError(DagvisorError, ValueError):
    """A stage was declared with an option that cannot work."""


class InvalidRequestError(DagvisorError, ValueError):
    """A request was malformed (for example, a change without a reason)."""


class InvalidSignalError(InvalidRequestError, TypeError):
    """A signal was refused before it was sent: its name or its payload.

    A payload is plain JSON data; the message names the value that is not.
    """


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


class UnknownLimitError(DagvisorError, LookupError):
    """A stage names a concurrency limit its runtime does not define.

    Refused when the run starts, is resumed, or the stage is added; never
    when the stage would run.

    Attributes:
        limit: the name the stage gave (``@stage(limit=...)``).
        stage: the stage.
        known: the limits the runtime defines (``runtime(limits=...)``).
    """

    def __init__(self, limit: str, stage: str, known: Iterable[str] = ()) -> None:
        self.limit = limit
        self.stage = stage
        self.known: tuple[str, ...] = tuple(sorted(known))
        shown = ", ".join(repr(name) for name in self.known[:10])
        if len(self.known) > 10:
            shown += f" and {len(self.known) - 10} more"
        defined = f"it defines {shown}" if shown else "it defines none"
        super().__init__(
            f"stage {stage!r} names limit {limit!r}, which the runtime does not "
            f"define ({defined}); open it with runtime(limits={{{limit!r}: N}}) "
            "or fix the name"
        )

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


class MissingExtraError(DagvisorError, ImportError):
    """An option needs an optional dependency that is not installed.

    Attributes:
        extra: the extra to install (``pip install 'dagvisor[<extra>]'``).
    """

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(
            f"{what} needs the {extra!r} extra: pip install 'dagvisor[{extra}]'"
        )


class TokenFileError(DagvisorError, ValueError):
    """A token file of the control API could not be read or holds a bad line.

    The message names the file and the line, never the line's content (a
    line holding a secret by mistake must not reach a log).

    Attributes:
        path: the file.
        line: the line number (from 1), or None for the file as a whole.
    """

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        where = path if line is None else f"{path}, line {line}"
        super().__init__(
            f"token file {where}: {problem}; each line is NAME ROLE SHA256-OF-SECRET "
            "(role viewer or operator), as `dagvisor token add` writes it"
        )


class InternalError(DagvisorError):
    """A bug in dagvisor itself; please report it with the traceback."""


class NoJsonFormError(DagvisorError, ValueError):
    """A value asked for as JSON has no JSON form (a set, bytes, NaN, a class).

    Attributes:
        where: the part of the value that has none (``"['rows'][3]"``), or
            ``""`` for the value itself.
        what: the kind of that part.
    """

    def __init__(self, where: str, what: str) -> None:
        self.where = where
        self.what = what
        part = "the value" if not where else f"its part {where}"
        super().__init__(
            f"{part} is {what}, which has no JSON form; show it without --json "
            "(or return JSON-ready data: lists, dicts with string keys, finite numbers)"
        )


def message_of(error: BaseException) -> str:
    """An exception's message, or a placeholder when its ``__str__`` raises.

    A stage's exception is the user's: printing it must not raise instead.
    """
    try:
        return str(error)
    except Exception:  # any __str__ of any exception: show that it failed
        return f"(the message of this {type(error).__name__} cannot be shown)"


class RunFailedError(DagvisorError):
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
        journal_error: DagvisorError | None = None,
    ) -> None:
        self.result = result
        self.errors: Mapping[str, BaseException] = dict(errors)
        self.journal_error = journal_error
        if errors:
            shown = ", ".join(
                f"{name!r} ({type(exc).__name__}: {message_of(exc)})"
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


RunFailed = RunFailedError
"""The former name of `RunFailedError` (the others all end in ``Error``)."""
