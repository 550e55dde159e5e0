"""Hostile named limits and worker counts: refused with a typed error, or kept plain.

``runtime(limits=..., process_workers=...)`` and ``@stage(limit=...)`` take
values a user controls; a journal's records name limits too, and a file can
be edited. Whatever they hold, the answer is a typed error saying what was
wrong, or a plain value that nothing a user's object does can change.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import Journal, Pipeline, StageState, runtime, stage
from dagvisor.errors import (
    InvalidRequestError,
    InvalidStageError,
    JournalError,
    UnknownLimitError,
)


async def _body(ctx):
    return ctx.name


class Hostile(str):
    """A str whose comparisons raise: only its plain value may be used.

    (Its hash is a plain string's, so that a dict can hold it.)
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__ called")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("__ne__ called")

    __hash__ = str.__hash__

    def strip(self, *args: Any) -> str:
        raise RuntimeError("strip called")


class BrokenMapping(Mapping[str, int]):
    """A mapping whose reading raises."""

    def __getitem__(self, key: str) -> int:
        raise RuntimeError("getitem")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        return 1


# -- runtime(limits=...) ---------------------------------------------------------------

BAD_LIMITS: list[Any] = [
    [("db", 1)],
    "db",
    3,
    {"": 1},
    {"   ": 1},
    {3: 1},
    {None: 1},
    {b"db": 1},
    {("db",): 1},
    {"db": 0},
    {"db": -1},
    {"db": True},
    {"db": 1.5},
    {"db": 2.0},
    {"db": math.nan},
    {"db": math.inf},
    {"db": "2"},
    {"db": None},
    BrokenMapping(),
]


@pytest.mark.parametrize("limits", BAD_LIMITS, ids=repr)
async def test_bad_limits_are_refused_with_a_typed_error(limits):
    with pytest.raises(InvalidRequestError) as info:
        async with runtime(limits=limits):
            pass
    assert "limits" in str(info.value)


@given(
    st.dictionaries(
        st.one_of(st.text(), st.integers(), st.none(), st.binary()),
        st.one_of(
            st.integers(-3, 5),
            st.floats(allow_nan=True),
            st.booleans(),
            st.none(),
            st.text(max_size=3),
        ),
        max_size=4,
    )
)
def test_any_limits_are_taken_or_refused_typed(limits: dict[Any, Any]) -> None:
    def well_formed() -> bool:
        return all(
            type(name) is str
            and name.strip() != ""
            and type(count) is int
            and count >= 1
            for name, count in limits.items()
        )

    async def main() -> None:
        async with runtime(limits=limits):
            pass

    if well_formed():
        trio.run(main)
    else:
        with pytest.raises(InvalidRequestError):
            trio.run(main)


async def test_a_limit_name_whose_comparisons_raise_is_kept_as_its_plain_value():
    limited = stage(name="q", limit="db")(_body)
    async with runtime(limits={Hostile("db"): 1}) as rt:
        result = await rt.run(Pipeline("p").add(limited))
    assert result.outputs == {"q": "q"}


async def test_huge_and_odd_limit_names_and_counts_work(tmp_path):
    odd = (
        "db\udcff\x00\n</script>" + "x" * 10_000
    )  # a lone surrogate, NUL, a line break
    limited = stage(name="q", limit=odd)(_body)
    path = tmp_path / "runs.db"
    async with runtime(limits={odd: 2**100, "other": 1}, journal=path) as rt:
        result = await rt.run(Pipeline("p").add(limited))
    assert result.ok
    with Journal(path, readonly=True) as journal:
        record = journal.load(result.run_id).pipeline
        stored = journal.result(result.run_id)
    assert record["specs"][0]["limit"] == odd
    assert stored.states == {"q": StageState.SUCCEEDED}


async def test_many_limits_are_fine():
    limits = {f"pool{i}": 1 + i % 3 for i in range(10_000)}
    limited = stage(name="q", limit="pool9999")(_body)
    async with runtime(limits=limits) as rt:
        result = await rt.run(Pipeline("p").add(limited))
    assert result.ok


# -- runtime(process_workers=...) ------------------------------------------------------


@pytest.mark.parametrize(
    "workers", [0, -1, True, False, 1.5, 2.0, math.nan, "2", [2]], ids=repr
)
async def test_bad_process_workers_are_refused_with_a_typed_error(workers):
    with pytest.raises(InvalidRequestError) as info:
        async with runtime(process_workers=workers):
            pass
    assert "process_workers" in str(info.value)


async def test_process_workers_none_and_whole_numbers_are_taken():
    for workers in (None, 1, 64):
        async with runtime(process_workers=workers):
            pass


# -- @stage(limit=...) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "limit", ["", "  ", 3, b"db", True, ["db"], ("db",), 1.5], ids=repr
)
def test_bad_stage_limits_are_refused_when_declared(limit):
    with pytest.raises(InvalidStageError) as info:
        stage(name="q", limit=limit)(_body)
    assert "limit" in str(info.value)


def test_a_stage_limit_whose_comparisons_raise_is_kept_as_its_plain_value():
    spec = stage(name="q", limit=Hostile("db"))(_body)
    assert type(spec.limit) is str
    assert spec.limit == "db"
    assert type(spec.options(retries=1).limit) is str


async def test_an_unknown_limit_never_reaches_the_run_whatever_its_name():
    odd = Hostile("nope\udcff")
    limited = stage(name="q", limit=odd)(_body)
    async with runtime(limits={"db": 1}) as rt:
        with pytest.raises(UnknownLimitError) as info:
            await rt.run(Pipeline("p").add(limited))
    assert info.value.limit == "nope\udcff"
    str(info.value).encode("utf-8", "backslashreplace")  # printable as data


# -- a journal that says otherwise -----------------------------------------------------


@pytest.mark.parametrize("value", [5, "", [], {"a": 1}, True])
async def test_a_journal_edited_to_hold_a_bad_limit_is_refused_on_reading(
    tmp_path, value
):
    path = tmp_path / "runs.db"
    limited = stage(name="q", limit="db")(_body)
    async with runtime(limits={"db": 1}, journal=path) as rt:
        result = await rt.run(Pipeline("p").add(limited))
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE runs SET pipeline = json_set(pipeline, '$.specs[0].limit', json(?))",
            (json.dumps(value),),
        )
    with Journal(path, readonly=True) as journal, pytest.raises(JournalError):
        journal.result(result.run_id)


@pytest.mark.parametrize(
    "payload",
    [
        {"stage": "nowhere", "time": 1.0},
        {"stage": "q", "time": "soon"},
        {"stage": "q", "time": math.inf},
        {"stage": 3, "time": 1.0},
        {"time": 1.0},
    ],
    ids=repr,
)
async def test_a_journal_edited_to_hold_a_bad_queued_event_is_refused(
    tmp_path, payload
):
    path = tmp_path / "runs.db"
    limited = stage(name="q", limit="db")(_body)
    async with runtime(limits={"db": 1}, journal=path) as rt:
        result = await rt.run(Pipeline("p").add(limited))
    with sqlite3.connect(path) as db:
        changed = db.execute(
            "UPDATE events SET payload = ? WHERE kind = 'stage_queued'",
            (json.dumps(payload, allow_nan=True),),
        ).rowcount
    assert changed == 1
    with Journal(path, readonly=True) as journal, pytest.raises(JournalError):
        journal.result(result.run_id)
