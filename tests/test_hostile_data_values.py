"""Odd values through `DataCodec`: the same value back, dtype included, or a refusal when written.

A stage's output is journaled when it is produced and read back by
``dagvisor show``, `Journal.result` and a resume, perhaps years later. What
the codec accepts must come back equal, its dtype and the types of its
elements included; what it cannot keep must fail the stage that produced
it, with a `NotRestorableError` saying what to do, and not come back
altered, or be refused only when it is read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import DataCodec, Journal, Pipeline, runtime, stage
from dagvisor.errors import NotRestorableError, RunFailed

CODEC = DataCodec()


def _back(value: Any) -> Any:
    encoded = CODEC.encode(value)
    return CODEC.decode(encoded if type(encoded) is str else bytes(encoded))


def _same_objects(left: pd.Series, right: pd.Series) -> bool:
    """Element by element, type included (NaN equal to NaN, not to None)."""

    def same(a: object, b: object) -> bool:
        if type(a) is not type(b):
            return False
        if isinstance(a, float) and math.isnan(a):
            return isinstance(b, float) and math.isnan(b)
        return bool(a == b)

    return len(left) == len(right) and all(
        same(a, b) for a, b in zip(left, right, strict=True)
    )


# -- arrays whose items have no size ------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [np.zeros(3, dtype="V0"), np.zeros(3, dtype=[]), np.zeros((2, 0), dtype="V0")],
    ids=["V0", "an empty structure", "an empty V0 matrix"],
)
def test_an_array_whose_items_have_no_size_is_refused_when_written(array):
    with pytest.raises(NotRestorableError, match="no size"):
        CODEC.encode(array)


# -- numpy scalars that are not numbers ------------------------------------------------


@pytest.mark.parametrize(
    "scalar",
    [
        np.datetime64("2020-01-01T00:00:00.000000001"),
        np.datetime64("NaT"),
        np.datetime64("2020-01-01"),
        np.timedelta64(5, "ns"),
        np.zeros(1, dtype=[("a", "i4"), ("b", "f8")])[0],
        np.void(b"ab"),
    ],
    ids=["datetime64 ns", "NaT", "datetime64 D", "timedelta64", "a record", "void"],
)
def test_a_numpy_scalar_that_is_no_number_is_refused_not_turned_into_one(scalar):
    with pytest.raises(NotRestorableError, match=r"np\.asarray"):
        CODEC.encode(scalar)


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        (np.float64(2.5), 2.5),
        (np.int8(-3), -3),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.bool_(True), True),
        (np.str_("x\udc80"), "x\udc80"),
        (np.bytes_(b"\x00y"), b"\x00y"),
    ],
)
def test_numbers_strings_and_bytes_of_numpy_are_their_python_values(scalar, value):
    back = _back(scalar)
    assert back == value
    assert type(back) is type(value)


# -- object columns: pandas' dtype is not Arrow's --------------------------------------

_OBJECTS = st.lists(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**62), 2**62),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=4),
    ),
    max_size=5,
)


@given(values=_OBJECTS, as_index=st.booleans())
def test_an_object_column_comes_back_the_same_or_is_refused_when_written(
    values, as_index
):
    column = pd.Series(values, dtype=object)
    if as_index:
        frame = pd.DataFrame({"n": range(len(values))}, index=pd.Index(column))
    else:
        frame = pd.DataFrame({"a": column})
    try:
        back = _back(frame)
    except NotRestorableError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert "column" in refusal or "index" in refusal
        return
    assert list(back.dtypes) == list(frame.dtypes)
    assert back.index.dtype == frame.index.dtype
    if as_index:
        assert _same_objects(back.index.to_series(), frame.index.to_series())
    else:
        assert _same_objects(back["a"], frame["a"])


@pytest.mark.parametrize(
    "value",
    [
        pd.DataFrame({"a": [1, None]}, dtype=object),
        pd.DataFrame({"a": [1, 2]}, dtype=object),
        pd.DataFrame({"a": [[1], [2, 3]]}),
        pd.DataFrame(
            {
                "a": [
                    pd.Timestamp("2020", tz="UTC"),
                    pd.Timestamp("2020", tz="Europe/Paris"),
                ]
            }
        ),
        pd.Series([1.5, None], dtype=object),
    ],
    ids=["ints and None", "ints", "lists", "mixed time zones", "a Series"],
)
def test_an_object_column_arrow_would_change_is_refused_naming_it(value):
    with pytest.raises(NotRestorableError, match="dtype object"):
        CODEC.encode(value)


@pytest.mark.parametrize(
    "value",
    [
        pd.DataFrame({"a": [True, None]}, dtype=object),
        pd.DataFrame({"a": [None, None]}),
        pd.DataFrame({"a": [b"\x00", b""]}),
        pd.DataFrame({"t": pd.date_range("2020", periods=2, tz="Europe/Paris")}),
        pd.DataFrame({"i": pd.array([1, None], dtype="Int64")}),
        pd.DataFrame({"c": pd.Categorical(["a", "b"], categories=["b", "a", "z"])}),
    ],
    ids=["bools and None", "all None", "bytes", "time zone", "Int64", "categorical"],
)
def test_columns_arrow_keeps_still_come_back_equal(value):
    pd.testing.assert_frame_equal(_back(value), value)


# -- through a run: the stage fails, the run is told why ------------------------------


@stage(codec="data")
async def counts(ctx: Any) -> pd.DataFrame:
    return pd.DataFrame({"n": [1, None, 3]}, dtype=object)


async def test_a_frame_that_would_come_back_altered_fails_its_stage(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("objects").add(counts))
    error = info.value.result.errors["counts"]
    assert isinstance(error, NotRestorableError)
    assert "'n'" in str(error)
    with Journal(path, readonly=True) as journal:
        assert "counts" not in journal.result(info.value.result.run_id).outputs
