"""One stage read by the journal's index answers what the replay of the whole run answers."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from conftest import copy_as_crashed
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor._cli_output import output_text
from dagvisor.actors import StageState
from dagvisor.errors import DagvisorError, RunFailedError, UnknownStageError
from dagvisor.supervisor._format import FORMAT_VERSION
from dagvisor.supervisor._stage_index import INDEX_TABLES
from dagvisor.supervisor._stage_read import StageOutput, read_lineage, read_output

SCRIPT: list[tuple[Any, ...]] = []
HOLD: dict[str, trio.Event] = {}
TRIES: dict[str, int] = {}


@stage
async def work(ctx: Any) -> dict[str, Any]:
    return {"name": ctx.name, "params": dict(ctx.params), "key": ctx.key}


@stage(retries=1, backoff=0)
async def flaky(ctx: Any) -> int:
    TRIES[ctx.name] = TRIES.get(ctx.name, 0) + 1
    if ctx.attempt == 0:
        raise ValueError("first attempt fails")
    return ctx.attempt


@stage
async def broken(ctx: Any) -> None:
    raise RuntimeError("always fails")


@stage(persist=False)
async def hidden(ctx: Any) -> list[int]:
    return [1, 2, 3]


SPECS = {"work": work, "flaky": flaky, "broken": broken, "hidden": hidden}


@stage
async def conductor(ctx: Any) -> str:
    for op in SCRIPT:
        if op[0] == "crash" and "crash" in HOLD:
            HOLD["reached"].set()
            await HOLD["crash"].wait()
        with contextlib.suppress(DagvisorError):  # refused: the audit trail keeps it
            await _apply(ctx, op)
    return "done"


async def _apply(ctx: Any, op: tuple[Any, ...]) -> None:
    match op:
        case ("add", kind, name, after, before):
            await ctx.add_stage(
                SPECS[kind].named(name), after=after, before=before, reason="add"
            )
        case ("expand", kind, count, with_params, after):
            params = [{"n": i} for i in range(count)] if with_params else None
            await ctx.expand(
                SPECS[kind],
                range(count),
                key=lambda item: f"k{item}",
                params=params,
                after=after,
                reason="map",
            )
        case ("edge", up, down):
            await ctx.add_edge(up, down, reason="wire")
        case ("remove", name):
            await ctx.remove_stage(name, reason="drop")
        case ("cancel", name):
            await ctx.cancel_stage(name, reason="stop")


NAMES = st.sampled_from(["a", "b", "c", "d", "s0", "s1", "conductor", "zz"])
OPS = st.one_of(
    st.tuples(
        st.just("add"),
        st.sampled_from(sorted(SPECS)),
        NAMES,
        st.lists(NAMES, max_size=2),
        st.lists(NAMES, max_size=1),
    ),
    st.tuples(
        st.just("expand"),
        st.sampled_from(sorted(SPECS)),
        st.integers(0, 3),
        st.booleans(),
        st.lists(NAMES, max_size=1),
    ),
    st.tuples(st.just("edge"), NAMES, NAMES),
    st.tuples(st.just("remove"), NAMES),
    st.tuples(st.just("cancel"), NAMES.filter(lambda name: name != "conductor")),
    st.just(("crash",)),
)


def _pipeline(static: list[tuple[str, str]]) -> Pipeline:
    pipeline = Pipeline("indexed").add(conductor)
    for at, (name, kind) in enumerate(static):
        after = ["conductor"] if at == 0 else [static[at - 1][0], "conductor"]
        pipeline = pipeline.add(SPECS[kind].named(name), after=after)
    return pipeline


async def _write(path: Any, crashed: Any, pipeline: Pipeline, crash: bool) -> str:
    if crash:
        HOLD["crash"], HOLD["reached"] = trio.Event(), trio.Event()
    async with runtime(journal=path, on_failure="continue") as rt:
        run = await rt.start(pipeline)
        if crash:
            with trio.fail_after(60):  # a hang is a failure, not a stuck suite
                await HOLD["reached"].wait()
            await trio.testing.wait_all_tasks_blocked()
            await run.wait_committed()
            copy_as_crashed(path, crashed)
            HOLD["crash"].set()
        with contextlib.suppress(RunFailedError):  # a stage failed on purpose
            await run.wait()
    HOLD.clear()
    if crash:  # the crashed copy, resumed to its end
        async with runtime(journal=crashed, on_failure="continue") as rt:
            with contextlib.suppress(RunFailedError):
                await rt.resume(run.id)
    return run.id


def _compare(path: Any, run_id: str, extra: set[str]) -> int:
    """Compare every stage's indexed reading with the replay's; how many stages."""
    with Journal(path, readonly=True) as journal:
        result = journal.result(run_id)
        names = set(result.states) | extra
        for record in result.audit:
            names |= record.stages
        for name in sorted(names):
            try:
                replayed = result.lineage(name)
            except UnknownStageError:
                try:
                    found = read_lineage(journal._rows(), run_id, name)
                except UnknownStageError:
                    pass
                else:  # "" names the run's resumptions in the index: the replay reads it
                    assert found is None, name
                    assert name == "", name
                    with pytest.raises(UnknownStageError):
                        journal.lineage(run_id, name)
                assert name not in result.states
                continue
            indexed = read_lineage(journal._rows(), run_id, name)
            assert indexed is not None, name  # no fallback on a sound journal
            assert indexed == replayed, name
            assert str(indexed) == str(replayed)
            assert journal.lineage(run_id, name) == replayed
            output = read_output(journal._rows(), run_id, name)
            assert output is not None
            assert output.state == result.states.get(name)
            assert output.stored == (name in result.outputs)
            if output.stored:
                assert output.value == result.outputs[name]
        return len(names)


@settings(max_examples=25)  # each example writes and resumes a run
@given(
    static=st.lists(
        st.tuples(st.sampled_from(["a", "b", "s0"]), st.sampled_from(sorted(SPECS))),
        max_size=3,
        unique_by=lambda entry: entry[0],
    ),
    script=st.lists(OPS, max_size=8),
)
def test_a_stage_read_by_index_is_what_the_replay_reads(
    tmp_path_factory: Any, static: list[tuple[str, str]], script: list[Any]
) -> None:
    tmp = tmp_path_factory.mktemp("index")
    path, crashed = tmp / "runs.db", tmp / "crashed.db"
    SCRIPT[:] = script
    TRIES.clear()
    crash = ("crash",) in script
    run_id = trio.run(_write, path, crashed, _pipeline(static), crash)
    unknown = {"nope", "conductor[0]", "work[k9]", ""}
    assert _compare(path, run_id, unknown) > 0
    if crash:
        assert _compare(crashed, run_id, unknown) > 0


async def _small(path: Any) -> str:
    SCRIPT[:] = [("expand", "work", 2, True, []), ("add", "flaky", "a", [], [])]
    async with runtime(journal=path) as rt:
        result = await rt.run(_pipeline([("s0", "work")]))
    return result.run_id


def _as_format_3(path: Any) -> None:
    """The journal as this dagvisor wrote it before the index (format 3)."""
    db = sqlite3.connect(path)
    for name in sorted(INDEX_TABLES):
        db.execute(f"DROP TABLE {name}")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    db.commit()
    db.close()


def _objects(path: Any) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()


def test_a_format_3_journal_reads_by_replay_and_is_upgraded_when_written(tmp_path):
    path = tmp_path / "runs.db"
    old = trio.run(_small, path)
    _as_format_3(path)
    names = ("a", "s0", "conductor", "work[k0]", "work[k1]")
    with Journal(path, readonly=True) as journal:
        expected = journal.result(old)
        assert read_lineage(journal._rows(), old, "a") is None  # no index
        assert journal.lineage(old, "a") == expected.lineage("a")
        assert journal.stage_output(old, "s0").value == expected.outputs["s0"]
    assert not INDEX_TABLES & _objects(path)
    new = trio.run(_small, path)  # written to: upgraded; the new run is indexed
    assert _objects(path) >= INDEX_TABLES
    with Journal(path, readonly=True) as journal:
        assert journal._format == FORMAT_VERSION == 4
        again = journal.result(new)
        for name in names:
            # The run written before has no index: read by the replay, the same.
            assert read_lineage(journal._rows(), old, name) is None
            assert journal.lineage(old, name) == expected.lineage(name)
            indexed = read_lineage(journal._rows(), new, name)
            assert indexed is not None
            assert indexed == again.lineage(name)


BIG = 5 * 2**20  # bytes: written in pieces (more than the journal's 1 MiB piece)


@stage(codec="data")
async def big(ctx: Any) -> Any:
    return np.frombuffer(bytes(range(256)) * (BIG // 256), dtype=np.uint8)


async def _big(path: Any) -> str:
    async with runtime(journal=path) as rt:
        result = await rt.run(Pipeline("big").add(big).add(work, after=["big"]))
    return result.run_id


def test_a_large_binary_output_is_read_by_index_as_the_replay_reads_it(tmp_path):
    path = tmp_path / "runs.db"
    run_id = trio.run(_big, path)
    with Journal(path, readonly=True) as journal:
        replayed = journal.result(run_id).outputs["big"]
        indexed = read_output(journal._rows(), run_id, "big")
        assert indexed is not None  # by index, not by the replay
        assert indexed.stored
        assert indexed.value.dtype == replayed.dtype == np.uint8
        assert np.array_equal(indexed.value, replayed)
        assert indexed.value.nbytes == BIG
        expected = output_text(
            run_id,
            "big",
            StageOutput(StageState.SUCCEEDED, stored=True, value=replayed),
            as_json=False,
        )
    command = ["show", run_id, "--journal", str(path), "--output", "big"]
    done = subprocess.run(
        [sys.executable, "-m", "dagvisor", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"
    assert "5,242,880" in done.stdout or "5242880" in done.stdout, done.stdout
