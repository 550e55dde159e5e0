"""The journal writer's process: answers the writer's requests until its input ends.

Started by `_writer_process.WriterProcess` as ``python -I -c ...``; it has
standard input and output to itself (anything printed goes to standard
error), ignores Ctrl-C (its parent's to handle: the parent then closes its
input), and runs only the functions `_batch` offers the writer, on a
`Journal` of the parent's settings. A request is acted on only once it is
read whole; once its input ends it closes the file and ends.
"""

from __future__ import annotations

import os
import pickle
import signal
from typing import IO, TYPE_CHECKING, Any

from dagvisor.actors import JournalError

from ._journal import Journal
from ._writer_frames import HEAD, READY, SIZE, SYNC, dumps, journal_here, settings

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["serve"]


def _read_exactly(stream: IO[bytes], size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        read = stream.readinto(view[got:])  # type: ignore[attr-defined]  # IO[bytes] lacks it; a FileIO has it
        if not read:
            raise EOFError
        got += read
    return data


def _allowed() -> set[Callable[..., Any]]:
    from . import _batch

    return {
        _batch.commit_batch,
        _batch.take_run_over,
        _batch.release_lease,
        _batch.index_runs,
        _batch.close_journal,
    }


def serve(answers_fd: int) -> None:
    """The child's loop: answer requests until the input ends, then close the file.

    ``answers_fd`` is the pipe to the parent (standard output, which the
    bootstrap moved there before anything was imported, and pointed at
    standard error: nothing printed can get into an answer).
    """
    # Ctrl-C and SIGTERM are the parent's to handle: it then closes this
    # process's input, and this process commits what it was handed and ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(answers_fd, "wb", buffering=0)
    _write_all(answers, SYNC)  # whatever came before it was not an answer
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    allowed = _allowed()
    journal: Journal | None = None
    while True:
        try:
            size, count = HEAD.unpack(_read_exactly(requests, HEAD.size))
            sizes = [
                SIZE.unpack(_read_exactly(requests, SIZE.size))[0] for _ in range(count)
            ]
            data = _read_exactly(requests, size)
            buffers = [_read_exactly(requests, each) for each in sizes]
        except EOFError:
            break
        try:
            fn, args = pickle.loads(data, buffers=buffers)
            if fn is settings:
                journal = Journal(**args[0])
                journal_here[:] = [journal]
                answer: tuple[bool, Any] = (True, READY)
            elif fn in allowed and journal is not None:
                answer = (True, fn(*args))
            else:  # pragma: no cover - a bug in the parent
                answer = (False, AssertionError(f"not a journal transaction: {fn!r}"))
        except Exception as exc:
            answer = (False, exc)
        try:
            reply = dumps(answer, None, [])
        except Exception as exc:  # an answer that cannot be pickled: say why
            reply = dumps(
                (False, JournalError(f"{type(exc).__name__}: {exc}")), None, []
            )
        _write_all(answers, HEAD.pack(len(reply), 0) + reply)
    if journal is not None:
        journal.close()


def _write_all(stream: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = stream.write(view)
        view = view[written or 0 :]
