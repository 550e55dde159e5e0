"""The journal writer's process under attack: killed or stopped at bad moments,
its parent killed mid-frame, bad settings, what it imports, what crosses to it,
two of them on one file. Each run concerned fails typed or finishes; nothing
hangs, nothing is left running, and what the file keeps resumes.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
import trio.testing
from writer_children import parent, writers

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import (
    InvalidRequestError,
    JournalError,
    JournalWriteError,
    RunFailedError,
)
from dagvisor.supervisor import _batch, _writer_frames, _writer_process

CHAIN = 40
KILL: dict[str, Any] = {}


def _only_writer() -> psutil.Process:
    (writer,) = writers()
    return writer


@stage
async def step(ctx: Any) -> int:
    index: int = ctx.params["i"]
    if KILL.get("at") == index:  # once: a resume runs it again
        KILL.pop("at")
        reached, killed = KILL.pop("reached"), KILL.pop("killed")
        reached.set()
        await killed.wait()
    return index * 3


def _chain(name: str = "chain") -> Pipeline:
    pipeline = Pipeline(name)
    for index in range(CHAIN):
        pipeline = pipeline.add(
            step.named(f"s{index:02}", params={"i": index}),
            after=[] if index == 0 else [f"s{index - 1:02}"],
        )
    return pipeline


EXPECTED = {f"s{index:02}": index * 3 for index in range(CHAIN)}


def _whole(path: Path) -> None:
    """The file passes SQLite's integrity check."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


async def _resumes_to_the_end(path: Path, run_id: str) -> None:
    """A new runtime resumes the run to the uninterrupted run's outputs, and the
    journal reads it back the same."""
    _whole(path)
    async with runtime(journal=path) as rt:
        result = await rt.resume(run_id)
    assert result.ok
    assert dict(result.outputs) == EXPECTED
    with Journal(path, readonly=True) as journal:
        back = journal.result(run_id)
    assert back.status == "succeeded"
    assert dict(back.outputs) == EXPECTED
    assert writers() == []


# -- 1. the child killed at bad moments --------------------------------------------


async def _kill_at(rt: Any, index: int) -> Any:
    """Start the chain; once its stages before ``index`` are committed, kill the
    writer's process, and let the run go on."""
    reached, killed = trio.Event(), trio.Event()
    KILL.update(at=index, reached=reached, killed=killed)
    run = await rt.start(_chain())
    await reached.wait()
    await run.wait_committed()
    _only_writer().kill()
    killed.set()
    return run


async def test_a_writer_killed_mid_run_fails_the_run_typed_and_the_prefix_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await _kill_at(rt, CHAIN // 2)
        with pytest.raises(RunFailedError) as info:
            await run.wait()
        assert isinstance(info.value.journal_error, JournalWriteError)
        assert "journal writer's process ended" in str(info.value.journal_error)
    assert writers() == []
    await _resumes_to_the_end(path, run.id)


async def test_a_writer_killed_holding_a_commit_leaves_a_prefix_that_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once its first batch is sent: inside the transaction, or just
    after it answered, whichever the child reached."""
    path = tmp_path / "runs.db"
    call = _writer_process.WriterProcess.call
    receive = _writer_process._receive_frame

    async def killing(stream: trio.abc.ReceiveStream) -> bytes:
        os.kill(_only_writer().pid, signal.SIGKILL)
        return await receive(stream)

    async def call_killing(
        self: _writer_process.WriterProcess, fn: Any, *args: Any
    ) -> Any:
        if fn is not _batch.commit_batch:
            return await call(self, fn, *args)
        monkeypatch.setattr(_writer_process, "_receive_frame", killing)
        try:
            return await call(self, fn, *args)
        finally:
            monkeypatch.setattr(_writer_process, "_receive_frame", receive)
            monkeypatch.setattr(_writer_process.WriterProcess, "call", call)

    async with runtime(journal=path) as rt:
        monkeypatch.setattr(_writer_process.WriterProcess, "call", call_killing)
        run = await rt.start(_chain())
        failed: RunFailedError | None = None
        try:
            result = await run.wait()
        except RunFailedError as exc:
            failed = exc
        if failed is None:  # it answered before it was killed
            assert dict(result.outputs) == EXPECTED
        else:
            assert isinstance(failed.journal_error, JournalWriteError)
    assert writers() == []
    db = sqlite3.connect(path)
    try:
        tables = db.execute("SELECT name FROM sqlite_master").fetchall()
    finally:
        db.close()
    if not tables:  # killed before the file's tables were committed
        async with runtime(journal=path) as rt:  # it is written as a new one
            assert dict((await rt.run(_chain())).outputs) == EXPECTED
        return
    _whole(path)
    await _resumes_to_the_end(path, run.id)


async def _crashed_run(path: Path) -> str:
    """A run that a killed writer left unfinished in the journal."""
    async with runtime(journal=path) as rt:
        run = await _kill_at(rt, 3)
        with pytest.raises(RunFailedError):
            await run.wait()
    return run.id


async def test_a_writer_killed_during_a_takeover_fails_the_resume_typed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    run_id = await _crashed_run(path)
    async with runtime(journal=path) as rt:
        writer = _only_writer()
        writer.suspend()  # the take-over's request waits in its pipe
        failed: list[BaseException] = []

        async def resume() -> None:
            try:
                await rt.resume(run_id)
            except BaseException as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            writer.kill()
        (error,) = failed
        assert isinstance(error, JournalError)
        assert "journal writer's process" in str(error)
    assert writers() == []
    await _resumes_to_the_end(path, run_id)


async def test_a_writer_killed_between_a_runs_end_and_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    call = _writer_process.WriterProcess.call

    async def killing_at_index(
        self: _writer_process.WriterProcess, fn: Any, *args: Any
    ) -> Any:
        if fn is _batch.index_runs:
            self._process.kill()
            await self._process.wait()
        return await call(self, fn, *args)

    monkeypatch.setattr(_writer_process.WriterProcess, "call", killing_at_index)
    async with runtime(journal=path) as rt:
        result = await rt.run(_chain())  # its end is committed: it is kept
        assert result.ok
        with pytest.raises(RunFailedError) as info:  # later runs fail typed
            await rt.run(_chain("later"))
        assert isinstance(info.value.journal_error, JournalWriteError)
    assert writers() == []
    with Journal(path, readonly=True) as journal:
        back = journal.result(result.run_id)
    assert back.status == "succeeded"
    assert dict(back.outputs) == EXPECTED == dict(result.outputs)


# -- 2. the parent killed while it sends a large frame -----------------------------

_PARENT = textwrap.dedent(
    """
    import os, signal, sys, trio
    from dagvisor import Pipeline, runtime, stage
    from dagvisor.supervisor import _writer_process

    @stage
    async def small(ctx):
        return "small"

    @stage
    async def large(ctx):
        return "x" * 8_000_000

    send = _writer_process.WriterProcess.call
    big = []

    async def call(self, fn, *args):
        if fn.__name__ == "commit_batch" and any(
            type(r[4]) is bytearray and len(r[4]) > 1_000_000 for r in args[1]
        ):
            # The frame's head and pickle are sent, then the parent dies in
            # the middle of the output's bytes.
            stdin = self._process.stdin
            orig = stdin.send_all

            async def half(data):
                if len(data) > 1_000_000:
                    await orig(bytes(data[: len(data) // 2]))
                    print("sending", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                await orig(data)

            stdin.send_all = half
        return await send(self, fn, *args)

    _writer_process.WriterProcess.call = call

    async def main():
        async with runtime(journal=sys.argv[1]) as rt:
            run = await rt.start(Pipeline("killed").add(small).add(large, after=[small]))
            await run.wait()

    if __name__ == "__main__":
        trio.run(main)
    """
)


def test_a_parent_killed_mid_frame_leaves_nothing_half_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    with parent(_PARENT, tmp_path, str(path)) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "sending"
        assert process.wait(timeout=60) == -signal.SIGKILL
    # Its writer ends with its input (a bound on a hang, not a measure).
    deadline = time.monotonic() + 60
    while any(
        "_writer_child" in " ".join(p.info["cmdline"] or ())
        and str(path) in " ".join(p.info["cmdline"] or ())
        for p in psutil.process_iter(["cmdline"])
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _whole(path)
    with Journal(path, readonly=True) as journal:
        (row,) = journal.runs()
        assert row["status"] == "running"
        back = journal.result(row["run_id"])
    assert "large" not in back.outputs  # not half of it, nor all of it
    assert dict(back.outputs) in ({}, {"small": "small"})


# -- 3. bad settings ----------------------------------------------------------------


@pytest.mark.parametrize("writer", ["Process", "", None, 1, b"process", "process "])
def test_a_wrong_writer_setting_is_refused_saying_what_to_use(writer: Any) -> None:
    with pytest.raises(InvalidRequestError, match="'process' or 'thread'"):
        Journal("runs.db", writer=writer)


@pytest.mark.parametrize(
    "executable", ["/nonexistent/python", "/bin/true", "/bin/false", ""]
)
async def test_an_unusable_python_is_a_typed_error_at_open_and_the_journal_serves_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    journal = Journal(tmp_path / "runs.db")
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", executable)
        with pytest.raises(JournalError, match="writer='thread'"):
            async with runtime(journal=journal):
                pytest.fail("the runtime opened")  # pragma: no cover
    assert writers() == []
    async with runtime(journal=journal) as rt:  # usable again
        assert (await rt.run(_chain())).ok


# -- 4. what the child imports ------------------------------------------------------


async def test_the_child_imports_nothing_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for name in ("json", "pickle", "dagvisor"):
        (shadow / f"{name}.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(shadow)
    monkeypatch.setattr(sys, "path", [*sys.path, Path(shadow), b"/nowhere"])
    async with runtime(journal=tmp_path / "runs.db") as rt:
        assert dict((await rt.run(_chain())).outputs) == EXPECTED
    assert writers() == []


# -- 5. values that cross -----------------------------------------------------------


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("no pickle")
        self.call = lambda: None  # a lambda does not pickle


def test_an_answer_that_does_not_pickle_comes_back_as_a_typed_error() -> None:
    with pytest.raises(Exception, match="pickle") as info:
        _writer_frames.dumps((False, _Unpicklable()), None, [])
    assert not isinstance(info.value, JournalError)  # the child answers it typed


@stage
async def makes(ctx: Any) -> Any:
    size: int = ctx.params["n"]
    text = ("\udcff" + "é" * (size // 2))[:size] if size else ""
    return {"t": text, "b": bytes(range(256)) * (size // 256)}


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        _writer_frames.OUT_OF_BAND - 1,
        _writer_frames.OUT_OF_BAND,
        _writer_frames.OUT_OF_BAND + 1,
        3 * 2**20,
    ],
)
async def test_large_outputs_around_the_out_of_band_size_read_back_exact(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        live = await rt.run(Pipeline("big").add(makes.named("m", params={"n": size})))
    assert len(live.outputs["m"]["b"]) == size // 256 * 256
    with Journal(path, readonly=True) as journal:
        back = journal.result(live.run_id)
    assert dict(back.outputs) == dict(live.outputs)


# -- 6. two runtimes, two writer processes, one file --------------------------------


async def test_two_runtimes_on_one_file_each_write_their_own_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as one, runtime(journal=path) as two:
        assert len(writers()) == 2
        first = await one.start(_chain("one"))
        second = await two.start(_chain("two"))
        assert dict((await first.wait()).outputs) == EXPECTED
        assert dict((await second.wait()).outputs) == EXPECTED
    assert writers() == []
    with Journal(path, readonly=True) as journal:
        assert sorted(row["name"] for row in journal.runs()) == ["one", "two"]
        for run in (first, second):
            assert dict(journal.result(run.id).outputs) == EXPECTED


# -- 7. the child stopped for a while ----------------------------------------------


async def test_a_stopped_writer_delays_its_runs_which_then_finish(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        writer = _only_writer()
        writer.suspend()
        run = await rt.start(_chain())
        committed = False

        async def waits() -> None:
            nonlocal committed
            await run.wait_committed()
            committed = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waits)
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            assert not committed  # nothing is committed while it is stopped
            writer.resume()
        result = await run.wait()
    assert dict(result.outputs) == EXPECTED
    with Journal(path, readonly=True) as journal:
        assert dict(journal.result(run.id).outputs) == EXPECTED


# -- a record that cannot cross, an executable that is not a writer ----------------


async def test_a_record_that_cannot_cross_fails_its_run_only(tmp_path: Path) -> None:
    from dagvisor.supervisor._lease import Owner
    from dagvisor.supervisor._ledger import RunLedger

    journal = Journal(tmp_path / "runs.db")
    worker = await _writer_process.WriterProcess.start(journal)
    try:
        owner = Owner.of_this_runtime()
        records = []
        for run_id in ("good", "bad"):
            records += [
                (run_id, None, "run", run_id, 1.0, {"stages": []}),
                (run_id, 0, "memory", '{"samples":[]}', None),
            ]
        # A record pickle refuses (never made so by the supervisor): as the
        # thread writer cannot write it either, it fails its own run only.
        records.append(("bad", 1, "memory", {"samples": [lambda: 0]}, None))
        ledgers = {run_id: RunLedger(run_id, None) for run_id in ("good", "bad")}
        done = await worker.call(
            _batch.commit_batch, journal, records, ledgers, owner, []
        )
    finally:
        await worker.aclose()
    assert list(done.failed) == ["bad"]
    assert "could not be handed to the journal writer's process" in str(
        done.failed["bad"]
    )
    assert done.owned == ["good"]
    assert done.next_seq == {"good": 1}
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT run_id FROM runs").fetchall() == [("good",)]


async def test_an_executable_that_only_echoes_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = tmp_path / "echo"
    echo.write_text("#!/bin/sh\nexec cat\n")
    echo.chmod(0o755)
    journal = Journal(tmp_path / "runs.db")
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(echo))
        # It never says it is ready: killed once the (real-time) bound is up.
        patch.setattr(_writer_process, "START_WITHIN", 1.0)
        with pytest.raises(JournalError, match=r"before it was ready.*writer='thread'"):
            async with runtime(journal=journal):
                pytest.fail("the runtime opened")  # pragma: no cover
    assert writers() == []


# -- found by a review of the finished work -----------------------------------------


@stage
async def gated(ctx: Any) -> str:
    await GATE["open"].wait()
    return "through"


GATE: dict[str, trio.Event] = {}


async def test_a_run_whose_records_failed_gets_none_committed_after(
    tmp_path: Path,
) -> None:
    # Its ledger's error did not cross to the child, which then committed
    # what came after (the thread writer never did).
    GATE["open"] = trio.Event()
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        run = await rt.start(Pipeline("p").add(gated))
        await run.wait_committed()
        ledger = rt._journal._ledgers[run.id]  # type: ignore[union-attr]
        ledger.error = JournalWriteError(run.id, "told to stop")  # as `_apply` does
        GATE["open"].set()
        with pytest.raises(RunFailedError) as info:
            await run.wait()
        assert info.value.journal_error is ledger.error
    with sqlite3.connect(path) as db:
        kinds = [kind for (kind,) in db.execute("SELECT kind FROM events")]
        (status,) = db.execute("SELECT status FROM runs").fetchone()
    assert "stage_ended" not in kinds  # nothing after the error
    assert status == "running"  # its end was not written either


def test_an_os_error_crosses_with_its_errno_and_file() -> None:
    error = PermissionError(13, "Permission denied", "/x/runs.db")
    back = pickle.loads(_writer_frames.dumps(error, None, []))
    assert type(back) is PermissionError
    assert (back.errno, back.strerror, back.filename) == (
        13,
        "Permission denied",
        "/x/runs.db",
    )
    assert str(back) == str(error)


async def test_a_banner_printed_before_the_child_speaks_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wrapper (or a .pth file) that prints to standard output while Python
    # starts: not part of any answer.
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\necho "a banner on standard output"\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(wrapper))
        async with runtime(journal=tmp_path / "runs.db") as rt:
            assert (await rt.run(_chain())).ok
    assert writers() == []


async def test_a_request_interrupted_midway_stops_the_child_and_fails_later_ones(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "runs.db")
    worker = await _writer_process.WriterProcess.start(journal)
    try:
        (child,) = writers()
        child.suspend()  # it will not answer
        with trio.move_on_after(0.5):  # cancelled waiting for the answer
            await worker.call(_batch.index_runs, journal, [])
        assert worker._stopped is not None
        assert "interrupted" in worker._stopped
        with pytest.raises(JournalError, match="interrupted"):
            await worker.call(_batch.index_runs, journal, [])
    finally:
        await worker.aclose()
    assert writers() == []


async def test_a_journal_that_cannot_be_closed_ends_the_runtime_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    call = _writer_process.WriterProcess.call

    async def failing_close(
        self: _writer_process.WriterProcess, fn: Any, *args: Any
    ) -> Any:
        if fn is _batch.close_journal:
            raise sqlite3.OperationalError("disk I/O error")
        return await call(self, fn, *args)

    monkeypatch.setattr(_writer_process.WriterProcess, "call", failing_close)
    async with runtime(journal=tmp_path / "runs.db") as rt:
        assert (await rt.run(_chain())).ok
    assert writers() == []  # reaped all the same
    assert "the journal could not be closed" in caplog.text
