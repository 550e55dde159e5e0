"""Crafted binary outputs in a journal: typed errors or `Undecoded`, never code, never a crash.

A real journal holds a run whose outputs went through `DataCodec` (an
array as ``.npy``, a DataFrame as Arrow IPC) beside JSON ones. Each test
edits a copy as an attacker with write access to the file would: a
``.npy`` of Python objects whose pickle would create a file, a header
declaring a terabyte, a header that is code, data cut short; Arrow streams
with an extension type, a length past the end, a wrong schema, pandas
metadata naming no dtype; a BLOB where text belongs and the reverse; a
codec tag naming pickle. Every reading path and a resume must answer with
a typed error or an `Undecoded`, and the marker file no payload may create
must never appear.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import DataCodec, Journal, Pipeline, Undecoded, runtime, stage
from dagvisor.errors import JournalError, NotRestorableError, RunFailed

if TYPE_CHECKING:
    from pathlib import Path

HELD: dict[str, trio.Event] = {}


@stage(codec="data")
async def matrix(ctx: Any) -> np.ndarray:
    return np.arange(6.0).reshape(2, 3)


@stage(codec="data")
async def frame(ctx: Any) -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


@stage
async def plain(ctx: Any) -> dict[str, int]:
    return {"n": 3}


@stage
async def held(ctx: Any) -> str:
    if ctx.attempt == 0:
        HELD["reached"].set()
        await trio.sleep_forever()
    return "resumed"


PIPELINE = (
    Pipeline("hostile")
    .add(matrix)
    .add(frame)
    .add(plain)
    .add(held, after=["matrix", "frame", "plain"])
)


class _Touch:
    """Unpickling this creates ``path``: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def journal(tmp_path: Path) -> tuple[Path, str]:
    """A journal whose run was cancelled while ``held`` ran (so it can be resumed)."""
    path = tmp_path / "runs.db"

    async def build() -> str:
        HELD["reached"] = trio.Event()
        async with runtime(journal=path) as rt:
            run = await rt.start(PIPELINE)
            await HELD["reached"].wait()
            await run.cancel(reason="held")
        return run.id

    return path, trio.run(build)


def _marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


def _set(path: Path, stage_name: str, **columns: Any) -> None:
    """Set columns of a stage's ``stage_ended`` row (``payload`` edits as a function)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        rowid, payload = db.execute(
            "SELECT rowid, payload FROM events WHERE kind = 'stage_ended' "
            "AND json_extract(payload, '$.stage') = ?",
            (stage_name,),
        ).fetchone()
        for column, value in columns.items():
            if column == "payload":
                edited = json.loads(payload)
                value(edited)
                value = json.dumps(edited)
            db.execute(
                f"UPDATE events SET {column} = ? WHERE rowid = ?", (value, rowid)
            )
    finally:
        db.close()


def _read(path: Path, run_id: str) -> Any:
    with Journal(path, readonly=True) as journal:
        return journal.result(run_id)


async def _resume(path: Path, run_id: str) -> Any:
    async with runtime(journal=path) as rt:
        return await rt.resume(run_id)


def _npy(header: str, body: bytes = b"") -> bytes:
    """``.npy`` bytes with a header written by hand (version 1.0)."""
    text = header.encode("latin-1")
    padding = 64 - (10 + len(text) + 1) % 64
    text += b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


def _object_npy(marker: Path) -> bytes:
    """An object array as numpy writes it: its data is a pickle that runs code."""
    body = pickle.dumps(np.array([_Touch(marker)], dtype=object).tolist(), protocol=3)
    return _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", body)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _good_ipc() -> bytes:
    return bytes(
        DataCodec().encode(pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}))
    )


def _with_kind(table: pa.Table, kind: bytes) -> bytes:
    return _ipc(table.replace_schema_metadata({b"dagvisor.kind": kind}))


CRAFTED_NPY = {
    "object dtype whose pickle runs code": lambda marker: _object_npy(marker),
    "structured dtype with an object field": lambda marker: _npy(
        "{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }",
        b"\x00" * 12,
    ),
    "a terabyte declared over 16 bytes": lambda marker: _npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (10**12,), }", b"\x00" * 16
    ),
    "a terabyte declared as a literal": lambda marker: _npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (125000000000,), }",
        b"\x00" * 16,
    ),
    "data cut short": lambda marker: _npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (100,), }", b"\x00" * 80
    ),
    "data past the shape": lambda marker: _npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 80
    ),
    "a header that is code": lambda marker: _npy(
        f"{{'descr': __import__('os').system('touch {marker}'), 'fortran_order': False, "
        "'shape': (1,), }",
        b"\x00" * 8,
    ),
    "a negative shape": lambda marker: _npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", b""
    ),
    "a header longer than allowed": lambda marker: (
        b"\x93NUMPY\x02\x00" + (10**6).to_bytes(4, "little") + b"{" * 64
    ),
    "an unknown format version": lambda marker: b"\x93NUMPY\x09\x00" + b"\x00" * 64,
    "a dtype of no size": lambda marker: _npy(
        "{'descr': '|V0', 'fortran_order': False, 'shape': (4,), }", b""
    ),
    "a dtype that is not one": lambda marker: _npy(
        "{'descr': 'os.system', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 8
    ),
}

CRAFTED_ARROW = {
    "an extension type": lambda marker: _ipc(
        pa.Table.from_pandas(
            pd.DataFrame({"p": pd.period_range("2026-01", periods=2, freq="M")})
        )
    ),
    "a stream cut in half": lambda marker: _good_ipc()[: len(_good_ipc()) // 2],
    "a schema length past the end": lambda marker: (
        b"\xff\xff\xff\xff" + (2**31 - 1).to_bytes(4, "little") + _good_ipc()[8:]
    ),
    "a series of two columns": lambda marker: _with_kind(
        pa.table({"a": [1], "b": [2]}), b"Series"
    ),
    "an unknown kind": lambda marker: _with_kind(pa.table({"a": [1]}), b"os.system"),
    "pandas metadata naming no dtype": lambda marker: _ipc(
        pa.table({"a": [1]}).replace_schema_metadata(
            {
                b"dagvisor.kind": b"DataFrame",
                b"pandas": json.dumps(
                    {
                        "index_columns": [],
                        "column_indexes": [],
                        "columns": [
                            {
                                "name": "a",
                                "field_name": "a",
                                "pandas_type": "int64",
                                "numpy_type": f"__import__('os').system('touch {marker}')",
                                "metadata": None,
                            }
                        ],
                    }
                ).encode(),
            }
        )
    ),
    "pandas metadata that is not JSON": lambda marker: _ipc(
        pa.table({"a": [1]}).replace_schema_metadata(
            {b"dagvisor.kind": b"DataFrame", b"pandas": b"{not json"}
        )
    ),
    "neither npy nor arrow": lambda marker: b"PK\x03\x04 a zip, say",
}


@pytest.mark.parametrize("name", sorted(CRAFTED_NPY) + sorted(CRAFTED_ARROW))
async def test_a_crafted_binary_output_is_a_journal_error_and_runs_nothing(
    journal, tmp_path, name
):
    path, run_id = journal
    marker = _marker(tmp_path)
    crafted = {**CRAFTED_NPY, **CRAFTED_ARROW}[name](marker)
    _set(path, "matrix", data=crafted)
    before = path.read_bytes()
    with pytest.raises(JournalError) as info:
        _read(path, run_id)
    assert "\n" not in str(info.value)
    assert "output of 'matrix'" in str(info.value)
    assert path.read_bytes() == before
    with pytest.raises(JournalError):
        await _resume(path, run_id)
    assert not marker.exists()


def test_the_reading_command_exits_2_with_one_line(journal, tmp_path):
    path, run_id = journal
    _set(
        path,
        "frame",
        data=CRAFTED_NPY["object dtype whose pickle runs code"](_marker(tmp_path)),
    )
    # One stage's output is read by the journal's index, alone: another
    # stage's damaged output is not read for it.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagvisor",
            "show",
            run_id,
            "--journal",
            str(path),
            "--output",
            "plain",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "{'n': 3}\n", "")
    for extra in ([], ["--output", "frame"], ["--output", "frame", "--json"]):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dagvisor",
                "show",
                run_id,
                "--journal",
                str(path),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith("dagvisor: error: ")
        assert done.stderr.count("\n") == 1
        assert "Python objects" in done.stderr
    assert not _marker(tmp_path).exists()


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"output": b"\x93NUMPY binary in the text column"}, "output that is not text"),
        ({"data": "text in the binary column"}, "binary data that is not bytes"),
        ({"data": b"\x00\x01"}, "beside a text output"),  # plain keeps its text
    ],
)
def test_a_blob_where_text_belongs_and_the_reverse_are_journal_errors(
    journal, edit, says
):
    path, run_id = journal
    _set(path, "plain", **edit)
    with pytest.raises(JournalError, match=says):
        _read(path, run_id)


async def test_json_output_moved_to_the_binary_column_is_refused(journal):
    path, run_id = journal
    _set(path, "plain", output=None, data=b'{"n":3}')
    with pytest.raises(JournalError, match="JsonCodec writes text"):
        _read(path, run_id)
    with pytest.raises(JournalError, match="cannot be decoded"):
        await _resume(path, run_id)


async def test_a_codec_tag_naming_pickle_is_never_unpickled(journal, tmp_path):
    path, run_id = journal
    marker = _marker(tmp_path)
    payload = base64.b64encode(pickle.dumps(_Touch(marker))).decode()

    def tag(stored: dict[str, Any]) -> None:
        stored["codec"] = "pickle"

    _set(path, "plain", output=payload, payload=tag)
    value = _read(path, run_id).outputs["plain"]
    assert value == Undecoded(payload, codec="pickle")
    with pytest.raises(JournalError, match="which no stage of the run declares"):
        await _resume(path, run_id)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value"), [("codec", 5), ("codec", ["data"]), ("persisted", "no")]
)
async def test_malformed_codec_tags_and_flags_are_journal_errors(journal, field, value):
    path, run_id = journal

    def edit(stored: dict[str, Any]) -> None:
        stored[field] = value

    _set(path, "matrix", payload=edit)
    with pytest.raises(JournalError, match="malformed"):
        _read(path, run_id)
    with pytest.raises(JournalError):
        await _resume(path, run_id)


async def test_a_stage_record_naming_an_unknown_codec_is_read_but_not_resumed(journal):
    path, run_id = journal
    db = sqlite3.connect(path, isolation_level=None)
    try:
        (pipeline,) = db.execute("SELECT pipeline FROM runs").fetchone()
        record = json.loads(pipeline)
        for spec in record["specs"]:
            if spec.get("codec") == "data":
                spec["codec"] = "evil"
        db.execute("UPDATE runs SET pipeline = ?", (json.dumps(record),))
    finally:
        db.close()
    assert _read(path, run_id).outputs["matrix"].shape == (2, 3)
    with pytest.raises(NotRestorableError, match="codec 'evil'"):
        await _resume(path, run_id)


async def test_the_unedited_journal_reads_and_resumes(journal):
    path, run_id = journal
    read = _read(path, run_id)
    np.testing.assert_array_equal(read.outputs["matrix"], np.arange(6.0).reshape(2, 3))
    assert list(read.outputs["frame"]["b"]) == ["x", "y", "z"]
    result = await _resume(path, run_id)
    assert result.outputs["held"] == "resumed"


async def test_an_object_array_is_shared_in_memory_only_and_refused_by_the_codec(
    tmp_path,
):
    marker = _marker(tmp_path)

    @stage(codec="data", name="objects")
    async def objects(ctx: Any) -> Any:
        return np.array([_Touch(marker)], dtype=object)

    async with runtime(on_failure="continue") as rt:  # no journal: nothing encoded
        assert (await rt.run(Pipeline("p").add(objects))).ok
    assert not marker.exists()
    with pytest.raises(NotRestorableError, match="Python objects"):
        DataCodec().encode(np.array([_Touch(marker)], dtype=object))


# -- random damage to valid bytes -------------------------------------------------------

_VALID = {
    "npy": bytes(DataCodec().encode(np.arange(24, dtype="<i4").reshape(2, 3, 4))),
    "arrow": _good_ipc(),
}


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from(sorted(_VALID)),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=6),
    cut=st.none() | st.floats(0, 1),
)
def test_damaged_bytes_decode_or_raise_value_error_only(which, flips, cut):
    data = bytearray(_VALID[which])
    for where, mask in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    if cut is not None:
        del data[int(cut * len(data)) :]
    try:
        value = DataCodec().decode(bytes(data))
    except ValueError:
        return
    assert isinstance(
        value, np.ndarray | pd.DataFrame | pd.Series | pa.Table | Undecoded
    )
    if isinstance(value, np.ndarray):
        assert not value.dtype.hasobject
        io.BytesIO(value.tobytes())  # its memory is all there


async def test_resume_of_a_run_with_a_damaged_output_changes_nothing(journal):
    path, run_id = journal
    _set(path, "matrix", data=b"\x93NUMPY garbage")
    before = path.read_bytes()
    with pytest.raises((JournalError, RunFailed)):
        await _resume(path, run_id)
    assert path.read_bytes() == before
