"""Damaged and edited journal files: typed errors only, and no reader changes the file.

A real journal (runs with changes, mapped stages, a failure, a cancelled run,
values of every tagged kind, text with lone surrogates) is built once. Each
example mutates a copy (flipped and truncated bytes, deleted and duplicated
rows, columns set to values of the wrong type, NULL, huge, deeply nested,
invalid UTF-8, edited JSON, dropped tables, a bad format version) and
checks that every reading path reads it or raises `JournalError` /
`UnknownRunError`, that the file is unchanged by reading, and that a resume
gives a result, `RunFailed`, or one of those typed errors.

``DAGVISOR_JOURNAL_FUZZ_EXAMPLES=2000`` runs more than the default.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagvisor import Journal, Pipeline, Undecoded, runtime, stage
from dagvisor.errors import (
    JournalError,
    NotRestorableError,
    RunFailed,
    UnknownLimitError,
    UnknownRunError,
    UnknownStageError,
)

EXAMPLES = int(os.environ.get("DAGVISOR_JOURNAL_FUZZ_EXAMPLES", "30"))
LIMITS = {"fuzz": 1}


@attrs.frozen
class Order:
    id: int
    note: str


@stage
async def source(ctx: Any) -> dict[Any, Any]:
    odd = ctx.run_inputs["odd"]
    return {"t": (1, f"é{odd}"), "b": b"\x00\xff", 3: frozenset({1, 2}), "n": None}


@stage
async def typed(ctx: Any) -> Order:
    return Order(7, f"a{ctx.run_inputs['odd']}")


@stage
async def square(ctx: Any) -> int:
    return int(ctx.item) ** 2


@stage
async def total(ctx: Any) -> int:
    return sum(ctx.inputs.values())


@stage(limit="fuzz")  # queued for its limit first: the journal holds stage_queued
async def tail(ctx: Any) -> str:
    return "done"


@stage(codec="data")
async def array(ctx: Any) -> Any:
    return np.arange(6, dtype="<i8").reshape(2, 3)


@stage(codec="data")
async def table(ctx: Any) -> Any:
    return pd.DataFrame({"a": [1.5, 2.5], "b": ["x", None]})


@stage
async def plan(ctx: Any) -> None:
    names = await ctx.expand(square, [1, 2, 3], reason="one per item")
    await ctx.add_stage(total, after=names, reason="sum them")
    await ctx.add_edge("total", "tail", reason="tail waits for the sum")


@stage
async def batched(ctx: Any) -> None:
    async with ctx.changes(reason="two squares and their sum, as one change") as batch:
        names = batch.expand(square.named("sq"), [4, 5])
        batch.add_stage(total.named("sq_total"), after=names)


@stage(retries=1)
async def flaky(ctx: Any) -> int:
    if ctx.attempt == 0:
        raise RuntimeError("first attempt fails; the retry succeeds")
    return ctx.attempt


@stage
async def boom(ctx: Any) -> None:
    raise ValueError(f"bad\nvalue {ctx.run_inputs['odd']}")


@stage
async def waits(ctx: Any) -> str:
    if ctx.attempt == 0:  # held until the run is cancelled; a resume finishes it
        await trio.sleep_forever()
    return "resumed"


FINISHED = (
    Pipeline("fuzzed")
    .add(source)
    .add(typed)
    .add(plan, after=["source"])
    .add(tail, after=["plan"])
    .add(boom, after=["typed"])
    .add(batched)
    .add(flaky)
    .add(array)
    .add(table)
)
CANCELLED = Pipeline("held").add(source).add(waits, after=["source"])


async def _build(path: Path, odd: str) -> list[str]:
    async with runtime(journal=path, on_failure="continue", limits=LIMITS) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(FINISHED, inputs={"odd": odd})
        run = await rt.start(CANCELLED, inputs={"odd": odd})
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel(reason="held for the fuzz test")
    return [info.value.result.run_id, run.id]


def _original(odd: str = "\ud800") -> tuple[bytes, tuple[str, ...]]:
    return _built(odd)


@functools.cache
def _built(odd: str) -> tuple[bytes, tuple[str, ...]]:
    """The journal's bytes (checkpointed: no -wal) and its run ids; built once.

    ``odd`` is put in outputs and an error: a lone surrogate by default. (The
    command line's tests use plain text: printing text a terminal cannot
    encode is another concern than reading the file.)
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runs.db"
        with ThreadPoolExecutor(1) as pool:  # callable from inside a trio test
            ids = pool.submit(trio.run, _build, path, odd).result()
        assert not path.with_name("runs.db-wal").exists()
        return path.read_bytes(), tuple(ids)


# -- mutations ----------------------------------------------------------------------

TABLES = ("meta", "runs", "events", "stage_index", "stage_rows")
COLUMNS = {
    "stage_index": ("run", "run_id", "last", "first", "rows"),
    "stage_rows": ("n", "run", "stage", "seq"),
    "meta": ("key", "value"),
    "runs": ("run_id", "name", "created", "status", "ended", "pipeline"),
    "events": ("run_id", "seq", "kind", "payload", "output", "data"),
}


class Raw(bytes):
    """Bytes stored as TEXT (CAST), so the text is not valid UTF-8."""


DEEP = "[" * 5000 + "]" * 5000


def _npy(header: bytes, body: bytes) -> bytes:
    header += b" " * (64 - (11 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


def _arrow(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


CRAFTED_BLOBS = [  # binary outputs an attacker would write (see test_hostile_data_outputs)
    _npy(b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x03N."),
    _npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (10**12,), }", b"\0" * 8),
    _npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", b"\0" * 8),
    _arrow(pd.DataFrame({"p": pd.period_range("2026-01", periods=2, freq="M")})),
    _arrow(pd.DataFrame({"a": [1, 2]}))[:40],
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
]
cell_values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.binary(max_size=12),
    st.sampled_from(
        [
            "",
            "[]",
            "{}",
            "null",
            "abc",
            "NaN",
            DEEP,
            '{"a":' * 3000 + "1" + "}" * 3000,
            "x" * 100_000,
            '{"__dagvisor__": "attrs", "type": "os:system", "fields": {"command": "id"}}',
            '{"__dagvisor__": "set", "items": [[1]]}',
            '{"__dagvisor__": "bytes", "data": "%%%"}',
            "1" * 6000,
            json.dumps({"stage": "ghost", "state": "succeeded", "time": 1e300}),
        ]
    ),
    st.builds(Raw, st.sampled_from([b"\xed\xa0\x80", b"\xff\xfe", b'{"a": "\xc3"}'])),
    st.sampled_from(CRAFTED_BLOBS),
)
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(st.characters(exclude_categories=()), max_size=8),
    st.sampled_from([[], {}, [[[]]], {"__dagvisor__": "tuple"}, "ghost", "\ud800"]),
)


@st.composite
def sql_edit(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["delete", "duplicate", "set", "json", "drop", "meta"]))
    table = draw(st.sampled_from(TABLES))
    row = draw(st.integers(0, 200))
    if kind == "delete":
        return (kind, table, row)
    if kind == "duplicate":
        return (kind, row, draw(st.sampled_from([1, -1, 7, 10_000])))
    if kind == "set":
        return (
            kind,
            table,
            draw(st.sampled_from(COLUMNS[table])),
            row,
            draw(cell_values),
        )
    if kind == "json":
        column = draw(st.sampled_from(["payload", "output", "pipeline"]))
        table = "runs" if column == "pipeline" else "events"
        path = draw(st.lists(st.integers(0, 20), min_size=1, max_size=5))
        return (kind, table, column, row, path, draw(json_values))
    if kind == "drop":
        return (kind, table)
    return (kind, draw(cell_values))


byte_edit = st.one_of(
    st.tuples(
        st.just("flip"),
        st.lists(
            st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=8
        ),
    ),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
)


def _rowid(db: sqlite3.Connection, table: str, row: int) -> int | None:
    count = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    if not count:
        return None
    found = db.execute(
        f"SELECT rowid FROM {table} ORDER BY rowid LIMIT 1 OFFSET ?", (row % count,)
    ).fetchone()
    return found[0]


def _stored(value: Any) -> tuple[str, Any]:
    """The SQL expression and parameter that store ``value`` in a cell."""
    if isinstance(value, Raw):
        return "CAST(? AS TEXT)", bytes(value)
    return "?", value


def _replace_in(value: Any, path: list[int], new: Any) -> Any:
    """``value`` with the element ``path`` picks (indices into lists and dicts) replaced."""
    if not path or not isinstance(value, list | dict) or not value:
        return new
    keys = list(range(len(value))) if isinstance(value, list) else list(value)
    key = keys[path[0] % len(keys)]
    value[key] = _replace_in(value[key], path[1:], new)
    return value


def _apply_sql(path: Path, edit: tuple[Any, ...]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        match edit:
            case ("delete", table, row):
                rowid = _rowid(db, table, row)
                db.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
            case ("duplicate", row, shift):
                rowid = _rowid(db, "events", row)
                db.execute(
                    "INSERT OR IGNORE INTO events "
                    "(run_id, seq, kind, payload, output, data) "
                    "SELECT run_id, seq + ?, kind, payload, output, data FROM events "
                    "WHERE rowid = ?",
                    (shift, rowid),
                )
            case ("set", table, column, row, value):
                rowid = _rowid(db, table, row)
                expression, parameter = _stored(value)
                db.execute(
                    f"UPDATE {table} SET {column} = {expression} WHERE rowid = ?",
                    (parameter, rowid),
                )
            case ("json", table, column, row, where, value):
                rowid = _rowid(db, table, row)
                found = db.execute(
                    f"SELECT {column} FROM {table} WHERE rowid = ?", (rowid,)
                ).fetchone()
                if found is None or not isinstance(found[0], str):
                    return
                try:
                    document = json.loads(found[0])
                except ValueError:
                    return
                edited = json.dumps(_replace_in(document, where, value))
                db.execute(
                    f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (edited, rowid)
                )
            case ("drop", table):
                db.execute(f"DROP TABLE {table}")
            case ("meta", value):
                expression, parameter = _stored(value)
                db.execute(
                    f"UPDATE meta SET value = {expression} WHERE key = 'format_version'",
                    (parameter,),
                )
    except (sqlite3.IntegrityError, sqlite3.OperationalError):
        pass  # a constraint, or a table dropped by an earlier edit: not applied
    finally:
        db.close()


def _apply_bytes(path: Path, edit: tuple[Any, ...]) -> None:
    data = bytearray(path.read_bytes())
    match edit:
        case ("flip", flips):
            for where, mask in flips if data else ():
                offset = min(int(where * len(data)), len(data) - 1)
                data[offset] ^= mask
        case ("truncate", fraction):
            del data[int(fraction * len(data)) :]
    path.write_bytes(bytes(data))


# -- the readers --------------------------------------------------------------------


def _plain(value: Any) -> None:
    """Read values are plain data or Undecoded: no class the file named."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, np.ndarray):
            assert not item.dtype.hasobject
        else:
            assert item is None or isinstance(
                item,
                bool | int | float | str | bytes | Undecoded | pd.DataFrame | pa.Table,
            ), type(item)


def _read_everything(path: Path, run_ids: tuple[str, ...]) -> None:
    failure = None
    try:
        _read_all(path, run_ids)
    except JournalError as exc:
        failure = exc
    assert failure is None or "\n" not in str(failure)


def _read_all(path: Path, run_ids: tuple[str, ...]) -> None:
    """Every reading path, on every run (those listed, and those built)."""
    with Journal(path, readonly=True) as journal:
        listed = [row["run_id"] for row in journal.runs()]
        for run_id in dict.fromkeys([*run_ids, *listed[:4]]):
            try:
                result = journal.result(run_id)
            except UnknownRunError:
                continue
            for name in [*list(result.states)[:40], "ghost"]:
                try:
                    expected = result.lineage(name)
                except UnknownStageError:
                    expected = None
                # Read by index (or, where the index is off, by replay): the
                # same answer, or a typed error, never another answer.
                try:
                    indexed = journal.lineage(run_id, name)
                except UnknownStageError:
                    indexed = None
                assert indexed == expected, name
                output = journal.stage_output(run_id, name)
                assert output.state == result.states.get(name)
                if output.stored:
                    expected_value = result.outputs[name]
                    assert type(output.value) is type(expected_value)
                    assert repr(output.value) == repr(expected_value)
                    _plain(output.value)
                _plain(result.outputs.get(name))
            result.to_mermaid()
            result.to_dot()
            result.to_html()


async def _resume(path: Path, run_id: str) -> None:
    try:
        async with runtime(journal=path, on_failure="continue", limits=LIMITS) as rt:
            await rt.resume(run_id)
    except (
        JournalError,
        NotRestorableError,
        UnknownRunError,
        UnknownLimitError,  # the limit's name was edited
        RunFailed,
    ):
        pass


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    sql=st.lists(sql_edit(), max_size=3),
    raw=st.lists(byte_edit, max_size=2),
)
def test_a_mutated_journal_gives_typed_errors_and_readers_leave_it_alone(sql, raw):
    original, run_ids = _original()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runs.db"
        path.write_bytes(original)
        for edit in sql:
            _apply_sql(path, edit)
        for edit in raw:
            _apply_bytes(path, edit)
        before = path.read_bytes()
        _read_everything(path, run_ids)
        assert path.read_bytes() == before
        for run_id in run_ids:
            trio.run(_resume, path, run_id)


# -- the damage the issue names, one by one -----------------------------------------

NAMED = {
    "flipped bytes": ("page", "events"),
    "file cut in half": ("bytes", ("truncate", 0.5)),
    "format_version abc": ("sql", ("meta", "abc")),
    "format_version huge": ("sql", ("meta", "9" * 40)),
    "pipeline []": ("sql", ("set", "runs", "pipeline", 0, "[]")),
    "pipeline null": ("sql", ("set", "runs", "pipeline", 0, "null")),
    "output not JSON": ("output", "{not json"),
    "output nested deeply": ("output", DEEP),
    "payload not UTF-8": ("sql", ("set", "events", "payload", 3, Raw(b"\xff\xfe"))),
    "events dropped": ("sql", ("drop", "events")),
    "created a string": ("sql", ("set", "runs", "created", 0, "yesterday")),
}


def _set_first_output(path: Path, text: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(
            "UPDATE events SET output = ? WHERE rowid = (SELECT MIN(rowid) FROM events "
            "WHERE output IS NOT NULL)",
            (text,),
        )
    finally:
        db.close()


def _flip_page_type(path: Path, table: str) -> None:
    """Flip the bits of the byte that says what a table's first page is."""
    db = sqlite3.connect(path)
    try:
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page_size] ^= 0xFF
    path.write_bytes(bytes(data))


def _damaged(folder: Path, name: str, odd: str = "\ud800") -> Path:
    original, _ = _original(odd)
    path = folder / "runs.db"
    path.write_bytes(original)
    how, edit = NAMED[name]
    if how == "bytes":
        _apply_bytes(path, edit)
    elif how == "page":
        _flip_page_type(path, edit)
    elif how == "sql":
        _apply_sql(path, edit)
    else:
        _set_first_output(path, edit)
    return path


@pytest.mark.parametrize("name", sorted(NAMED))
async def test_each_named_damage_is_a_journal_error(tmp_path, name):
    path = _damaged(tmp_path, name)
    _, run_ids = _original()
    before = path.read_bytes()
    with pytest.raises(JournalError) as info:
        _read_all(path, run_ids)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    with pytest.raises(JournalError):
        await _resume_strictly(path, run_ids[0])


async def _resume_strictly(path: Path, run_id: str) -> None:
    async with runtime(journal=path, on_failure="continue", limits=LIMITS) as rt:
        await rt.resume(run_id)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_the_reading_commands_exit_2_with_one_line_for_damage(tmp_path, name):
    path = _damaged(tmp_path, name, odd="?")
    _, run_ids = _original("?")
    for command in (["runs"], ["show", run_ids[0]], ["audit", run_ids[0]]):
        done = subprocess.run(
            [sys.executable, "-m", "dagvisor", *command, "--journal", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode == 0:
            continue  # this command does not read what was damaged
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("dagvisor: error: ")
        assert done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr


def _edit_order(path: Path, change: Any) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        (rowid, text) = db.execute(
            "SELECT rowid, output FROM events WHERE output LIKE '%Order%'"
        ).fetchone()
        stored = json.loads(text)
        change(stored)
        db.execute(
            "UPDATE events SET output = ? WHERE rowid = ?", (json.dumps(stored), rowid)
        )
    finally:
        db.close()


@pytest.mark.parametrize("change", ["renamed", "new required field"])
async def test_a_class_changed_since_the_run_is_undecoded_when_read_and_refused_on_resume(
    tmp_path, change
):
    original, run_ids = _original()
    path = tmp_path / "runs.db"
    path.write_bytes(original)
    if change == "renamed":
        _edit_order(path, lambda stored: stored.update(type=f"{__name__}:OrderV1"))
    else:
        _edit_order(path, lambda stored: stored["fields"].pop("note"))
    with Journal(path, readonly=True) as journal:
        value = journal.result(run_ids[0]).outputs["typed"]
    assert isinstance(value, Undecoded)
    assert value.type.endswith(("Order", "OrderV1"))
    with pytest.raises(NotRestorableError, match=r"no longer fit|does not allow"):
        await _resume_strictly(path, run_ids[0])


async def test_the_unchanged_journal_reads_and_resumes(tmp_path):
    """The fuzz test's starting point is healthy: every value comes back."""
    original, run_ids = _original()
    path = tmp_path / "runs.db"
    path.write_bytes(original)
    with sqlite3.connect(path) as db:  # what the fuzz test mutates holds a wait
        kinds = {kind for (kind,) in db.execute("SELECT kind FROM events")}
    db.close()
    assert "stage_queued" in kinds
    with Journal(path, readonly=True) as journal:
        result = journal.result(run_ids[0])
    assert result.outputs["source"] == {
        "t": (1, "é\ud800"),
        "b": b"\x00\xff",
        3: frozenset({1, 2}),
        "n": None,
    }
    assert result.outputs["typed"] == Undecoded(
        result.outputs["typed"].text, f"{__name__}:Order"
    )
    assert result.errors["boom"].recorded == "ValueError: bad\nvalue \ud800"
    np.testing.assert_array_equal(result.outputs["array"], np.arange(6).reshape(2, 3))
    assert result.outputs["table"]["b"].tolist()[0] == "x"
    assert result.outputs["table"]["b"].isna().tolist() == [False, True]
    with pytest.raises(RunFailed) as info:
        await _resume_strictly(path, run_ids[0])
    assert info.value.result.outputs["typed"] == Order(7, "a\ud800")
    shutil.copy(path, tmp_path / "copy.db")


def test_an_index_that_hides_events_is_damage_not_a_shorter_run(tmp_path):
    """A damaged index can make a run look as if it simply stopped early (a
    prefix of its events, in order): the table itself is counted too."""
    original, run_ids = _original()
    path = tmp_path / "runs.db"
    path.write_bytes(original)
    db = sqlite3.connect(path)
    (root,) = db.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_events_1'"
    ).fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    data = bytearray(path.read_bytes())
    page = (root - 1) * page_size
    assert data[page] == 0x0A  # a leaf page of an index: its cells are all there is
    data[page + 3 : page + 5] = b"\x00\x00"  # it now holds no cell
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="index of events hides"):
        _read_all(path, run_ids)
