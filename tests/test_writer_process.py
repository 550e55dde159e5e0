"""The journal writer's own process: what crosses to it comes back exact, and bad
luck (the process killed, the parent killed) loses nothing that was reported kept.
"""

from __future__ import annotations

import os
import pickle
import signal
import textwrap
import time
from typing import Any

import psutil
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from strategies import any_text
from writer_children import parent, writers

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import (
    InvalidRequestError,
    JournalWriteError,
    LeaseLostError,
    RunFailedError,
    RunOwnedError,
)
from dagvisor.supervisor import _writer_frames
from dagvisor.supervisor._ledger import RunLedger
from dagvisor.supervisor._writer_frames import dumps

GATE: dict[str, trio.Event] = {}


@stage
async def waits(ctx: Any) -> str:
    await GATE["open"].wait()
    return "through"


@stage
async def one(ctx: Any) -> int:
    return 1


# -- what crosses ------------------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    any_text,  # lone surrogates included
    st.binary(max_size=300).map(memoryview),
    st.binary(min_size=70_000, max_size=70_100).map(bytearray),  # out of band
    st.binary(max_size=300).map(bytearray),
)


@given(
    records=st.lists(
        st.tuples(any_text, st.integers(0, 2**40), any_text, any_text, _values),
        max_size=5,
    )
)
def test_a_request_crosses_whole(records: list[tuple[Any, ...]]) -> None:
    journal = Journal("unused.db")
    ledger = RunLedger("r", outbox=None, next_seq=3, owned=True, expires=1.5)
    ledger.error = JournalWriteError("r", "not sent")
    buffers: list[Any] = []
    data = dumps((records, journal, ledger), journal, buffers)
    other = Journal("other.db")
    raw = [bytearray(buffer.raw()) for buffer in buffers]
    _writer_frames.journal_here[:] = [other]  # as in the child
    try:
        back, journal_back, ledger_back = pickle.loads(data, buffers=raw)
    finally:
        _writer_frames.journal_here.clear()
    assert journal_back is other  # by reference: the child's own journal
    assert (ledger_back.run_id, ledger_back.next_seq, ledger_back.owned) == (
        "r",
        3,
        True,
    )
    assert ledger_back.outbox is None
    assert ledger_back.error is None
    assert len(back) == len(records)
    for sent, got in zip(records, back, strict=True):
        assert got[:4] == sent[:4]
        if isinstance(sent[4], memoryview | bytearray):
            # A memoryview is a binary codec's (the data column), a bytearray a
            # large text's UTF-8 (the output column): the type says which.
            assert type(got[4]) is type(sent[4])
            assert bytes(got[4]) == bytes(sent[4])
        else:
            assert got[4] == sent[4]


def test_an_error_crosses_with_its_type_and_attributes() -> None:
    error = RunOwnedError("r", host="h", pid=7, expires=2.5)
    (back,) = pickle.loads(dumps((error,), None, []))
    assert type(back) is RunOwnedError
    assert (back.run_id, back.host, back.pid, back.expires) == ("r", "h", 7, 2.5)
    assert str(back) == str(error)
    lost = LeaseLostError("r", "taken over")
    (back,) = pickle.loads(dumps((lost,), None, []))
    assert type(back) is LeaseLostError
    assert back.reason == "taken over"
    assert str(back) == str(lost)


def test_an_unknown_writer_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="'process' or 'thread'"):
        Journal("runs.db", writer="threads")  # type: ignore[arg-type]


# -- bad luck ----------------------------------------------------------------------


async def test_a_killed_writer_process_fails_its_runs_typed_and_the_runtime_ends(
    tmp_path: Any,
) -> None:
    GATE["open"] = trio.Event()
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        (writer,) = writers()
        run = await rt.start(Pipeline("p").add(waits))
        await run.wait_committed()  # the run is on disk
        writer.kill()
        writer.wait(timeout=30)
        GATE["open"].set()
        with pytest.raises(RunFailedError) as info:
            await run.wait()
        assert isinstance(info.value.journal_error, JournalWriteError)
        assert "journal writer's process ended" in str(info.value.journal_error)
        with pytest.raises(RunFailedError):  # no later run is reported kept either
            await rt.run(Pipeline("q").add(one))
    assert writers() == []
    # What was committed before stays: the run, resumable.
    with Journal(path, readonly=True) as journal:
        assert [row["name"] for row in journal.runs()] == ["p"]


async def test_the_writer_process_ends_with_its_runtime(tmp_path: Any) -> None:
    async with runtime(journal=tmp_path / "runs.db") as rt:
        assert len(writers()) == 1
        assert (await rt.run(Pipeline("p").add(one))).ok
    assert writers() == []


_PARENT = textwrap.dedent(
    """
    import os, sys, trio
    from dagvisor import Pipeline, runtime, stage

    @stage
    async def forever(ctx):
        await trio.sleep_forever()

    async def main():
        async with runtime(journal=sys.argv[1]) as rt:
            run = await rt.start(Pipeline("killed").add(forever))
            await run.wait_committed()
            print("committed", flush=True)
            await trio.sleep_forever()

    if __name__ == "__main__":
        trio.run(main)
    """
)


def test_the_writer_process_ends_when_its_parent_is_killed(tmp_path: Any) -> None:
    path = tmp_path / "runs.db"
    with parent(_PARENT, tmp_path, str(path)) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "committed"
        (writer,) = writers(of=process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        # Its input ends with its parent: it closes the file and ends. (A
        # bound on a hang, not a measure of speed.)
        deadline = time.monotonic() + 60
        while writer.is_running() and writer.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the writer process outlived its parent"
            time.sleep(0.05)
    with Journal(path, readonly=True) as journal:
        (row,) = journal.runs()
        assert (row["name"], row["status"]) == ("killed", "running")  # resumable
