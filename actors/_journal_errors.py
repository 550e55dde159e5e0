"""Errors of the journal: what it cannot keep, read back, own or write."""

from __future__ import annotations

import datetime

from ._errors import DagvisorError

__all__ = [
    "JournalError",
    "JournalWriteError",
    "LeaseLostError",
    "NotRestorableError",
    "OutputTooLargeError",
    "RecordedError",
    "RunOwnedError",
    "UnknownRunError",
]


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
