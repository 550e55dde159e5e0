"""Where the journal writer's transactions run: a process of their own, or a thread.

The writer (`_writer`) hands each transaction (a function of `_batch` and
its arguments) to a worker and waits for its answer, one at a time. Two
workers do the same work:

* `WriterProcess`, the default (``Journal(writer="process")``): a child
  Python process that holds the runtime's writable connection to the file.
  A thread committing beside the event loop shares the interpreter lock
  with it: each time the thread takes the lock back after an SQLite call,
  the loop waits, which made a journaled chain that grows as it runs about
  twice as slow as an unjournaled one (see bench/README.md). A process
  commits on the machine's other core and costs the loop only the pickling
  of each batch (about 0.4 µs a record). It costs a Python process started
  when the runtime opens (about 0.4 s, which the runtime waits for).
* `WriterThread` (``Journal(writer="thread")``): a worker thread of this
  process, for where a process cannot be started or its start would cost
  more than the run.

What the process keeps (its invariants):

* One request at a time, answered in order: the writer awaits each answer
  before it sends the next, as it awaited its thread.
* A request is one frame, acted on only once whole: a parent that dies in
  the middle of sending one leaves nothing half-done, and the child ends
  once its input ends (after answering what it was doing).
* The same functions run in both workers, on a `Journal` of the same
  settings; what they raise comes back as the same type with the same
  message and attributes (`_writer_frames.rebuilt`; an answer that cannot
  be pickled comes back as a `JournalError` saying why). A child that dies
  fails the request
  it was given and every later one with `JournalError`: the writer fails
  the runs whose records they carried, as for a broken file, and the
  runtime goes on.
* Large binary values (a large output's bytes) cross as raw bytes after the
  frame's pickle (pickle's out-of-band buffers), not copied into it.

The child's side is `_writer_child`; what crosses, and how, `_writer_frames`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import pickle
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Final

import trio

from dagvisor.actors import JournalError, JournalWriteError
from dagvisor.actors._errors import message_of

from ._batch import commit_batch
from ._writer_frames import HEAD, OUT_OF_BAND, READY, SIZE, SYNC, dumps, settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._journal import Journal
    from ._lease import Owner
    from ._ledger import Committed, RunLedger

__all__ = ["WriterProcess", "WriterThread", "open_worker"]

# A frame: the pickle's length and the number of out-of-band buffers, each
# buffer's length, the pickle, then the buffers.
_PIPE_BYTES: Final = 2**20
_CLOSE_WAIT: Final = 10.0  # seconds the child has to end once told to
_CHILD: Final = (
    # Standard output moved aside first: nothing imported can print into it.
    "import os; answers = os.dup(1); os.dup2(2, 1); "
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from dagvisor.supervisor._writer_child import serve; serve(answers)"
)
_SYNC_WITHIN: Final = 2**20  # bytes the child may print before it speaks
START_WITHIN = 60.0
"""Seconds (real time) the child has to say it is ready, from its start."""


class WriterThread:
    """Runs each transaction in a worker thread of this process."""

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, which blocks on the file, off the event loop."""
        return await trio.to_thread.run_sync(fn, *args)

    async def aclose(self) -> None:
        """Nothing to end."""
        await trio.lowlevel.checkpoint()


class WriterProcess:
    """Runs each transaction in a child process (see the module docstring)."""

    def __init__(self, journal: Journal, process: trio.Process) -> None:
        self._journal = journal
        self._process = process
        self._stopped: str | None = None  # why the child can take no more requests

    @classmethod
    async def start(cls, journal: Journal) -> WriterProcess:
        """Start the child and wait until it is ready.

        Raises:
            JournalError: the child could not be started or did not get ready.
        """
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-I", "-c", _CHILD, json.dumps(_import_path())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # Out of the terminal's process group: a Ctrl-C is the parent's
                # to handle (it then closes the child's input, and the child
                # commits what it was handed and ends), never the child's.
                start_new_session=True,
            )
        except OSError as exc:
            msg = (
                f"cannot start the journal writer's process ({exc}); "
                "use Journal(..., writer='thread') where processes cannot be started"
            )
            raise JournalError(msg) from exc
        assert isinstance(process.stdin, trio.lowlevel.FdStream)
        _widen(process.stdin.fileno())
        worker = cls(journal, process)
        try:
            assert process.stdout is not None
            # Bounded on the real clock (trio's may be a test's mock clock): a
            # child that never says it is ready is killed, and so ends.
            watchdog = threading.Timer(START_WITHIN, _kill, (process,))
            watchdog.daemon = True
            watchdog.start()
            try:
                await _synchronise(process.stdout)
                ready = await worker.call(settings, _settings_of(journal))
            except EOFError:
                with trio.move_on_after(1):
                    await process.wait()
                msg = f"it ended (exit code {process.returncode}) before it was ready"
                raise JournalError(msg) from None
            finally:
                watchdog.cancel()
            if ready != READY:
                msg = f"it answered {ready!r} where a journal writer says it is ready"
                raise JournalError(msg)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await worker.aclose()
            if not isinstance(exc, JournalError):
                raise
            msg = (
                f"the journal writer's process did not start ({exc}); "
                f"sys.executable ({sys.executable!r}) must be a Python that imports "
                "this dagvisor, or use Journal(..., writer='thread')"
            )
            raise JournalError(msg) from exc
        return worker

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the child, on its journal; its value, or what it raised.

        Raises:
            JournalError: the child has stopped (or stops before answering).
        """
        if self._stopped is not None:
            await trio.lowlevel.checkpoint()
            raise JournalError(self._stopped)
        buffers: list[pickle.PickleBuffer] = []
        if fn is commit_batch:  # its records may hold large outputs
            args = (args[0], _banded(args[1]), *args[2:])
        try:
            data = dumps((fn, args), self._journal, buffers)
        except Exception as exc:
            if fn is not commit_batch:
                raise
            return await self._commit_apart(exc, *args)
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        try:
            sizes = [memoryview(buffer).nbytes for buffer in buffers]
            await self._process.stdin.send_all(
                HEAD.pack(len(data), len(sizes))
                + b"".join(SIZE.pack(size) for size in sizes)
                + data
            )
            for buffer in buffers:
                raw = buffer.raw()
                # A piece at a time, each send a checkpoint: while the child
                # keeps up, one send of it all would hold the loop throughout.
                for start in range(0, len(raw), _PIPE_BYTES):
                    await self._process.stdin.send_all(raw[start : start + _PIPE_BYTES])
            answer = await _receive_frame(self._process.stdout)
            ok, value = pickle.loads(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
            self._stopped = await self._why_stopped()
            raise JournalError(self._stopped) from exc
        except Exception as exc:  # not our child's answer: trust it no further
            self._stopped = (
                "the journal writer's process answered with something that is not "
                "an answer; it was stopped"
            )
            self._process.kill()
            raise JournalError(self._stopped) from exc
        except BaseException:
            # Interrupted mid-request (a KeyboardInterrupt, say): the pipe is
            # out of step, so the child takes no more requests.
            self._stopped = "the journal writer's process was interrupted mid-request"
            self._process.kill()
            raise
        if ok:
            return value
        raise value

    async def _commit_apart(
        self,
        exc: Exception,
        journal: Journal,
        records: list[Any],
        ledgers: dict[str, RunLedger],
        owner: Owner,
        renewing: list[RunLedger],
    ) -> Committed:
        """A batch with a record that cannot cross to the child: that record's run
        fails, and the other runs' records are committed (as the thread writer
        does with a record it cannot write: one run never fails another)."""
        groups: dict[str, list[Any]] = {}
        for record in records:
            groups.setdefault(record[0], []).append(record)
        failed: dict[str, JournalWriteError] = {}
        for run_id, group in groups.items():
            try:
                dumps(group, None, [])
            except Exception as error:
                reason = (
                    "a record could not be handed to the journal writer's process "
                    f"({type(error).__name__}: {message_of(error)})"
                )
                failed[run_id] = JournalWriteError(run_id, reason)
        if not failed:  # pragma: no cover - each run's records cross, not all: a bug
            raise exc
        done: Committed = await self.call(
            commit_batch,
            journal,
            [record for record in records if record[0] not in failed],
            {run_id: ledgers[run_id] for run_id in ledgers if run_id not in failed},
            owner,
            [ledger for ledger in renewing if ledger.run_id not in failed],
        )
        done.failed.update(failed)
        return done

    async def _why_stopped(self) -> str:
        with trio.move_on_after(1):
            await self._process.wait()
        code = self._process.returncode
        how = "is not answering" if code is None else f"ended (exit code {code})"
        return (
            f"the journal writer's process {how}; the runs it wrote for were "
            "stopped (the batch it was committing may or may not be in the file)"
        )

    async def aclose(self) -> None:
        """Let the child close the file and end; killed if it does not in time."""
        self._stopped = self._stopped or "the journal writer's process was closed"
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            assert self._process.stdin is not None
            await self._process.stdin.aclose()
        with trio.move_on_after(_CLOSE_WAIT):
            await self._process.wait()
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            assert self._process.stdout is not None
            await self._process.stdout.aclose()


async def open_worker(journal: Journal) -> WriterThread | WriterProcess:
    """The worker the journal's ``writer`` setting names, started.

    Raises:
        JournalError: its process could not be started.
    """
    if journal.writer == "thread":
        return WriterThread()
    return await WriterProcess.start(journal)


# -- what crosses between the processes ---------------------------------------------


def _import_path() -> list[str]:
    """Where the child imports from: where this process does.

    The child starts isolated (``-I``: no current directory, no ``PYTHON*``
    variables) and is given this process's ``sys.path``, so it imports this
    very dagvisor, from where this process imports: the current directory
    only if this process's path holds it (``''``, as ``python -c`` and a REPL
    do), as it does for this process itself.
    """
    return [entry for entry in sys.path if isinstance(entry, str)]


def _banded(records: list[Any]) -> list[Any]:
    """``records``, their large texts' UTF-8 (bytearrays) made ready to cross
    out of band: pickle copies a bytearray into the pickle itself (a 100 MB
    output: about 0.1 s of the event loop), a `PickleBuffer` it leaves apart."""
    banded = records
    for index, record in enumerate(records):
        output = record[4] if len(record) == 5 else None
        if type(output) is bytearray and len(output) >= OUT_OF_BAND:
            if banded is records:
                banded = list(records)
            banded[index] = (*record[:4], pickle.PickleBuffer(output))
    return banded


def _widen(fd: int) -> None:
    """Let the pipe to the child hold more (Linux: 1 MiB, from 64 KiB), so a
    large output crosses in fewer writes; best effort."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _settings_of(journal: Journal) -> dict[str, Any]:
    return {
        "path": str(journal.path),
        "synchronous": journal.synchronous,
        "busy_timeout": journal.busy_timeout,
        "lease": journal.lease,
        "max_value_bytes": journal.max_value_bytes,
    }


def _kill(process: trio.Process) -> None:
    """Kill a child that did not get ready in time (from the watchdog's thread)."""
    with contextlib.suppress(OSError):
        process.kill()


async def _synchronise(stream: trio.abc.ReceiveStream) -> None:
    """Read up to the child's `SYNC`, skipping what was printed before it.

    Raises:
        JournalError: the child said nothing like it (`_SYNC_WITHIN` bytes).
        EOFError: the child ended first.
    """
    seen = bytearray()
    while SYNC not in seen:
        if len(seen) > _SYNC_WITHIN:
            msg = f"it wrote {len(seen):,} bytes that are not a journal writer's"
            raise JournalError(msg)
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError
        seen += chunk
    if not seen.endswith(SYNC):  # the child waits for a request after it
        msg = "it wrote more than a journal writer says before its first request"
        raise JournalError(msg)


async def _receive_frame(stream: trio.abc.ReceiveStream) -> bytes:
    """One answer's pickle (an answer carries no out-of-band buffers)."""
    data = bytearray()
    size = None
    while size is None or len(data) < HEAD.size + size:
        chunk = await stream.receive_some()  # mostly the whole answer at once
        if not chunk:
            raise EOFError
        data += chunk
        if size is None and len(data) >= HEAD.size:
            size, count = HEAD.unpack_from(data)
            if count:
                msg = "an answer with out-of-band buffers"
                raise ValueError(msg)
    if len(data) != HEAD.size + size:
        msg = "an answer followed by more than was asked"
        raise ValueError(msg)
    return bytes(data[HEAD.size :])
