"""numpy arrays, pandas frames and Arrow tables through the journal (`DataCodec`).

Round trips (Hypothesis over numpy's dtypes and shapes), a codec per stage
and per runtime with the journal recording which one wrote each output,
resume, readers without a library (an `Undecoded` summary), what is refused
when it is produced (object arrays, extension types, arrays as mapped items
or run inputs), and journals of format 2 read and upgraded.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import (
    DataCodec,
    Journal,
    JsonCodec,
    Pipeline,
    Undecoded,
    runtime,
    stage,
)
from dagvisor.errors import (
    InvalidRequestError,
    InvalidStageError,
    NotRestorableError,
    RunFailed,
)
from dagvisor.supervisor._format import FORMAT_VERSION

CODEC = DataCodec()
HELD: dict[str, trio.Event] = {}


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(6, dtype=np.int64),
            "score": [0.5, np.nan, 2.0, 3.5, -1.0, 1e300],
            "name": ["a", "é", None, "\U0001f600", "", "f"],
            "when": pd.date_range("2026-01-01", periods=6, tz="UTC"),
            "group": pd.Categorical(["x", "y", "x", "y", "x", "z"]),
            "ok": [True, False, True, True, False, True],
        },
        index=pd.Index([f"r{i}" for i in range(6)], name="row"),
    )


# -- the codec alone -------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.one_of(
            hnp.integer_dtypes(),
            hnp.unsigned_integer_dtypes(),
            hnp.floating_dtypes(),
            hnp.complex_number_dtypes(),
            hnp.boolean_dtypes(),
            hnp.datetime64_dtypes(),
            hnp.byte_string_dtypes(min_len=1),
            hnp.unicode_string_dtypes(min_len=1),
        ),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    st.booleans(),
)
def test_any_array_comes_back_equal_and_read_only(array, fortran):
    if fortran:
        array = np.asfortranarray(array)
    stored = CODEC.encode(array)
    assert isinstance(stored, memoryview)
    back = CODEC.decode(bytes(stored))
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable


def test_frames_series_and_tables_come_back_equal():
    frame = _frame()
    back = CODEC.decode(bytes(CODEC.encode(frame)))
    pd.testing.assert_frame_equal(back, frame)
    named = frame["score"]
    pd.testing.assert_series_equal(CODEC.decode(bytes(CODEC.encode(named))), named)
    unnamed = pd.Series([1.5, 2.5])
    back_series = CODEC.decode(bytes(CODEC.encode(unnamed)))
    pd.testing.assert_series_equal(back_series, unnamed)
    assert back_series.name is None
    table = pa.table({"a": [1, 2, None], "b": [["x"], [], ["y", "z"]]})
    assert CODEC.decode(bytes(CODEC.encode(table))).equals(table)


def test_plain_values_and_numpy_scalars_are_json():
    assert CODEC.encode({"n": 1, "t": (1, 2)}) == JsonCodec().encode(
        {"n": 1, "t": (1, 2)}
    )
    assert CODEC.encode(np.float64(2.5)) == "2.5"
    assert CODEC.decode(CODEC.encode(np.int32(7))) == 7


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (np.array([object(), 1], dtype=object), "holds Python objects"),
        (np.zeros(2, dtype=[("a", "i4"), ("b", "O")]), "holds Python objects"),
        (
            pd.DataFrame({"p": pd.period_range("2026-01", periods=2, freq="M")}),
            "extension type",
        ),
        (pd.DataFrame({"o": [object(), 1]}), "cannot be written as Arrow"),
        ({"inside": np.arange(3)}, r"\.tolist\(\)"),
    ],
)
def test_what_cannot_be_stored_safely_is_refused_with_advice(value, says):
    with pytest.raises(NotRestorableError, match=says):
        CODEC.encode(value)


async def test_codecs_by_name_and_wrong_codecs_are_refused_when_declared():
    assert isinstance(stage(codec="data")(_frame_stage.fn).codec, DataCodec)
    with pytest.raises(InvalidStageError, match="no built-in codec is named"):
        stage(codec="parquet")(_frame_stage.fn)
    with pytest.raises(InvalidStageError, match="codec must be a codec"):
        stage(codec=42)(_frame_stage.fn)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="no built-in codec"):
        async with runtime(codec="parquet"):
            pass
    with pytest.raises(InvalidRequestError, match="codec must be a codec"):
        async with runtime(codec=object()):  # type: ignore[arg-type]
            pass


# -- through a journaled run -------------------------------------------------------


@stage(codec="data")
async def _frame_stage(ctx: Any) -> pd.DataFrame:
    return _frame()


@stage(codec="data")
async def matrix(ctx: Any) -> np.ndarray:
    return np.arange(12.0).reshape(3, 4)


@stage
async def fit(ctx: Any) -> dict[str, Any]:
    frame = ctx.inputs["_frame_stage"]
    slope, _intercept = np.polyfit(frame["id"], frame["id"] * 2.0 + 1, 1)
    return {"slope": round(float(slope), 6), "rows": len(frame)}


@stage(codec="json")
async def as_json(ctx: Any) -> list[int]:
    return [1, 2, 3]


@attrs.frozen
class Summary:
    rows: int


@stage
async def typed(ctx: Any) -> Summary:
    return Summary(len(ctx.inputs["matrix"]))


@stage
async def held(ctx: Any) -> str:
    if ctx.attempt == 0:
        HELD["reached"].set()
        await trio.sleep_forever()
    return "resumed"


PIPELINE = (
    Pipeline("data")
    .add(_frame_stage)
    .add(matrix)
    .add(fit, after=["_frame_stage"])
    .add(as_json)
    .add(typed, after=["matrix"])
)


def _stored(path: Any) -> dict[str, tuple[str, str | None]]:
    """Each success's storage class (text/blob) and the codec named beside it."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT json_extract(payload, '$.stage'), typeof(output), typeof(data), "
            "json_extract(payload, '$.codec') FROM events WHERE kind = 'stage_ended'"
        ).fetchall()
    finally:
        db.close()
    return {
        name: ("blob" if data == "blob" else output, codec)
        for name, output, data, codec in rows
    }


async def test_a_codec_per_stage_is_recorded_and_read_back_with_its_codec(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:  # the run's codec: json
        result = await rt.run(PIPELINE)
    assert result.outputs["fit"] == {"slope": 2.0, "rows": 6}
    assert _stored(path) == {
        "_frame_stage": ("blob", "data"),
        "matrix": ("blob", "data"),
        "fit": ("text", None),
        "as_json": ("text", None),  # its codec is the run's: not repeated
        "typed": ("text", None),
    }
    with Journal(path, readonly=True) as journal:
        read = journal.result(result.run_id)
    pd.testing.assert_frame_equal(read.outputs["_frame_stage"], _frame())
    np.testing.assert_array_equal(read.outputs["matrix"], np.arange(12.0).reshape(3, 4))
    assert read.outputs["as_json"] == [1, 2, 3]
    assert isinstance(read.outputs["typed"], Undecoded)  # no class rebuilt


async def test_the_runtime_codec_applies_and_a_stage_codec_wins(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path, codec="data") as rt:
        result = await rt.run(PIPELINE)
    stored = _stored(path)
    assert stored["matrix"] == ("blob", None)  # the run's own codec
    assert stored["as_json"] == ("text", "json")  # the stage's wins, and is named
    assert stored["fit"] == ("text", None)  # plain data: JSON text
    with Journal(path, readonly=True) as journal:
        assert journal.load(result.run_id).pipeline["codec"] == "data"
        read = journal.result(result.run_id)
    assert read.outputs["as_json"] == [1, 2, 3]
    assert read.outputs["matrix"].shape == (3, 4)


async def test_a_resume_rebuilds_arrays_frames_and_allowed_classes(tmp_path):
    path = tmp_path / "runs.db"
    HELD["reached"] = trio.Event()
    pipeline = PIPELINE.add(held, after=["fit", "typed"])
    async with runtime(journal=path, codec="data") as rt:
        run = await rt.start(pipeline)
        await HELD["reached"].wait()
        await run.cancel(reason="held")
    async with runtime(journal=path, codec="data") as rt:
        result = await rt.resume(run.id)
    assert result.outputs["held"] == "resumed"
    pd.testing.assert_frame_equal(result.outputs["_frame_stage"], _frame())
    assert result.outputs["typed"] == Summary(3)
    async with runtime(journal=path) as rt:  # another runtime codec: refused
        with pytest.raises(NotRestorableError, match="'data' codec"):
            await rt.resume(run.id)


@pytest.mark.parametrize("missing", ["numpy", "pandas", "pyarrow"])
async def test_a_reader_without_the_library_gets_an_undecoded_summary(
    tmp_path, monkeypatch, missing
):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        result = await rt.run(PIPELINE)
    monkeypatch.setitem(sys.modules, missing, None)  # `import` now fails
    with Journal(path, readonly=True) as journal:
        read = journal.result(result.run_id)
    frame, array = read.outputs["_frame_stage"], read.outputs["matrix"]
    if missing == "numpy":
        assert isinstance(array, Undecoded)
        assert array.codec == "data"
        assert "shape (3, 4)" in array.text
        assert "<f8" in array.text
    else:
        assert array.shape == (3, 4)
        assert isinstance(frame, Undecoded)
        if missing == "pandas":  # pyarrow summarises: rows, columns, first rows
            assert frame.type == "pandas:DataFrame"
            assert frame.text.startswith("Table 6 rows x 7 columns")
            assert "score: double" in frame.text
        else:
            assert "pyarrow is not installed" in frame.text


@stage
async def maps_arrays(ctx: Any) -> list[str]:
    return await ctx.expand(fit, [np.arange(3)], reason="an array as an item")


async def test_arrays_as_mapped_items_or_run_inputs_are_refused(tmp_path):
    async with runtime(journal=tmp_path / "runs.db", codec="data") as rt:
        with pytest.raises(NotRestorableError, match=r"convert it \(\.tolist"):
            await rt.run(Pipeline("p").add(as_json), inputs={"x": np.arange(3)})
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(maps_arrays))
    (error,) = info.value.errors.values()
    assert isinstance(error, NotRestorableError)
    assert "travel as stage outputs" in str(error)


@stage(codec="data")
async def objects(ctx: Any) -> np.ndarray:
    return np.array([{"a": 1}], dtype=object)


async def test_an_object_array_fails_its_stage_not_the_run(tmp_path):
    async with runtime(journal=tmp_path / "runs.db", on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(objects).add(as_json))
    assert isinstance(info.value.errors["objects"], NotRestorableError)
    assert info.value.result.outputs["as_json"] == [1, 2, 3]


async def test_a_format_2_journal_is_read_and_upgraded_when_written(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        first = await rt.run(Pipeline("old").add(as_json))
    db = sqlite3.connect(path, isolation_level=None)
    try:  # as dagvisor wrote format 2: no data column
        db.execute("ALTER TABLE events DROP COLUMN data")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    finally:
        db.close()
    with Journal(path, readonly=True) as journal:
        assert journal.result(first.run_id).outputs["as_json"] == [1, 2, 3]
    async with runtime(journal=path) as rt:
        second = await rt.run(PIPELINE)
    db = sqlite3.connect(path)
    try:
        (version,) = db.execute(
            "SELECT value FROM meta WHERE key = 'format_version'"
        ).fetchone()
    finally:
        db.close()
    assert version == str(FORMAT_VERSION) == "4"
    with Journal(path, readonly=True) as journal:
        assert journal.result(first.run_id).outputs["as_json"] == [1, 2, 3]
        assert journal.result(second.run_id).outputs["matrix"].shape == (3, 4)
