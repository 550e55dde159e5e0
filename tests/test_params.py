"""Stage parameters: given once, read as ``ctx.params``, journaled, shown.

Parameters are plain JSON data checked when they are given (a bad value is
a `TypeError` naming it), frozen for every attempt, carried by ``expand``
one set per item, kept by the journal with the stage and restored by a
resume, and shown by lineage and ``RunResult.params``.
"""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import (
    DuplicateStageError,
    InvalidRequestError,
    JournalError,
    ReadOnlyInputError,
    RunFailed,
)
from dagvisor.supervisor import Journal

HOLD: dict[str, trio.Event] = {}
SEEN: list[tuple[str, dict]] = []


@pytest.fixture(autouse=True)
def _fresh_state():
    HOLD.clear()
    SEEN.clear()


@stage
async def check(ctx):
    SEEN.append((ctx.name, json.loads(json.dumps(ctx.params))))
    if ctx.name in HOLD:
        await HOLD[ctx.name].wait()
    return ctx.params.get("batch")


@stage(executor="thread")
def check_in_thread(view):
    return dict(view.params)


@stage(executor="process")
def check_in_process(view):
    return {"params": dict(view.params), "key": view.key}


# -- declaring ---------------------------------------------------------------------


def test_parameters_are_given_by_name_or_with_params_and_keep_the_rest():
    by_name = check.named("check_b7", params={"batch": 7})
    by_method = check.named("check_b7").with_params(batch=7)
    assert by_name == by_method
    assert hash(by_name) == hash(by_method)
    assert by_name.params == {"batch": 7}
    assert check.params == {}
    # Renaming keeps them, options keep them, with_params replaces them.
    assert by_name.named("other").params == {"batch": 7}
    assert by_name.options(retries=2).params == {"batch": 7}
    assert by_name.with_params(region="eu").params == {"region": "eu"}
    assert by_name != check.named("check_b7", params={"batch": 8})
    assert "params={'batch': 7}" in repr(by_name)


def test_equal_parameters_make_equal_specs_whatever_their_order():
    a = check.with_params(x=1, y={"b": 2, "a": 1})
    b = check.with_params(y={"a": 1, "b": 2}, x=1)
    assert a == b
    assert hash(a) == hash(b)
    # Tuples are lists: what the journal gives back is the same stage.
    assert check.with_params(v=(1, 2)) == check.with_params(v=[1, 2])


class _RaisingEq:
    def __eq__(self, other):
        raise RuntimeError("compared")

    __hash__ = object.__hash__


class _Key(str):
    pass


BAD_PARAMS = {
    "a set": {"v": {1, 2}},
    "bytes": {"v": b"raw"},
    "an object": {"v": object()},
    "a raising __eq__": {"v": _RaisingEq()},
    "nan": {"v": math.nan},
    "infinity": {"v": [1.0, math.inf]},
    "a huge int": {"v": 2**64},
    "an int key": {"v": {1: "x"}},
    "a top-level int key": {1: "x"},
    "too deep": {
        "v": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    },
    "a numpy-like scalar": {"v": complex(1, 2)},
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_a_value_that_is_not_plain_data_is_refused_with_its_place(case):
    with pytest.raises(TypeError, match="plain JSON data") as info:
        check.named("c", params=BAD_PARAMS[case])
    assert "'c'" in str(info.value)


def test_parameters_that_are_not_a_mapping_are_refused():
    with pytest.raises(TypeError, match="mapping of names to values"):
        check.named("c", params=[("batch", 1)])  # type: ignore[arg-type]


def test_a_cyclic_value_is_refused_not_looped_over():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(TypeError, match="nested more than"):
        check.named("c", params={"v": cyclic})


def test_a_str_subclass_key_or_value_becomes_a_plain_str():
    spec = check.named("c", params={_Key("k"): _Key("v")})
    [(key, value)] = spec.params.items()
    assert type(key) is str
    assert type(value) is str
    assert (key, value) == ("k", "v")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_any_plain_json_is_kept_as_it_is_and_survives_json(params):
    spec = check.named("c", params=params)
    assert json.loads(json.dumps(spec.params)) == params
    # The journal's round trip gives back an equal stage.
    assert check.named("c", params=json.loads(json.dumps(params))) == spec


def test_parameters_are_read_only():
    spec = check.with_params(sizes=[1, 2], nested={"a": 1})
    with pytest.raises(ReadOnlyInputError):
        spec.params["sizes"].append(3)
    with pytest.raises(ReadOnlyInputError):
        spec.params["nested"]["b"] = 2
    with pytest.raises((ReadOnlyInputError, TypeError)):
        spec.params["new"] = 1  # type: ignore[index]


# -- running -----------------------------------------------------------------------


async def test_every_executor_sees_the_stage_parameters():
    pipeline = (
        Pipeline("p")
        .add(check.named("loop", params={"batch": 7}))
        .add(check_in_thread.named("thread", params={"x": [1, 2]}))
        .add(check_in_process.named("process", params={"y": {"z": 1.5}}))
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs["loop"] == 7
    assert result.outputs["thread"] == {"x": [1, 2]}
    assert result.outputs["process"] == {"params": {"y": {"z": 1.5}}, "key": None}
    assert dict(result.params) == {
        "loop": {"batch": 7},
        "thread": {"x": [1, 2]},
        "process": {"y": {"z": 1.5}},
    }
    assert 'parameters: {"batch": 7}' in str(result.lineage("loop"))
    assert result.lineage("loop").params == {"batch": 7}


@stage
async def fan_out(ctx):
    how = ctx.run_inputs["how"]
    if how == "list":
        params = [{"batch": b} for b in (10, 11, 12)]
    elif how == "callable":
        params = lambda item: {"batch": item * 10}  # noqa: E731
    elif how == "short":
        params = [{"batch": 1}]
    elif how == "bad value":
        params = [{"batch": 1}, {"batch": {1, 2}}, {"batch": 3}]
    elif how == "raising":

        def params(item):
            raise ValueError("no parameters for you")

    else:
        params = "batch"
    names = await ctx.expand(
        check.with_params(region="eu"),
        [1, 2, 3],
        params=params,
        reason="one check per batch",
    )
    return names


@pytest.mark.parametrize("how", ["list", "callable"])
async def test_expand_gives_each_item_its_parameters_over_the_specs(how):
    async with runtime() as rt:
        result = await rt.run(Pipeline("fan").add(fan_out), inputs={"how": how})
    expected = [10, 11, 12] if how == "list" else [10, 20, 30]
    assert [result.outputs[f"check[{i}]"] for i in range(3)] == expected
    for i, batch in enumerate(expected):
        assert result.params[f"check[{i}]"] == {"region": "eu", "batch": batch}
        assert result.lineage(f"check[{i}]").params == {"region": "eu", "batch": batch}


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("short", "1 parameter sets for 3 items"),
        ("bad value", "item 1: parameter"),
        ("raising", "no parameters for you"),
        ("string", "one mapping per item"),
    ],
)
async def test_bad_expand_parameters_refuse_the_whole_expansion(how, message):
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("fan").add(fan_out), inputs={"how": how})
    result = info.value.result
    error = result.errors["fan_out"]
    assert isinstance(error, InvalidRequestError)
    assert message in str(error)
    assert not any(name.startswith("check") for name in result.states)
    [record] = [record for record in result.audit if record.kind == "expand"]
    assert not record.accepted
    assert SEEN == []


@stage
async def ask_twice(ctx):
    first = await ctx.expand(check, [1, 2], params=[{"b": 1}, {"b": 2}], reason="r")
    same = await ctx.expand(check, [1, 2], params=[{"b": 1}, {"b": 2}], reason="r")
    assert same == first
    await ctx.expand(check, [1, 2], params=[{"b": 1}, {"b": 3}], reason="r")


async def test_asking_again_with_other_parameters_is_a_different_stage():
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("twice").add(ask_twice))
    result = info.value.result
    assert isinstance(result.errors["ask_twice"], DuplicateStageError)
    assert "check[1]" in str(result.errors["ask_twice"])
    assert result.params["check[1]"] == {"b": 2}


# -- journal -----------------------------------------------------------------------


@stage
async def plan(ctx):
    await ctx.expand(
        check,
        ["a", "b"],
        key=str,
        params=lambda item: {"batch": item, "limits": [1, 2]},
        reason="checks",
    )


PIPELINE = (
    Pipeline("journaled")
    .add(check.named("first", params={"batch": 1}))
    .add(check.named("second", params={"batch": 2}))
    .add(check.named("plain"))
    .add(plan, after=["first"])
)


async def test_a_journal_keeps_the_parameters_and_a_resume_restores_them(tmp_path):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    HOLD["check[b]"] = trio.Event()
    HOLD["second"] = trio.Event()
    async with runtime(journal=live) as rt:
        run = await rt.start(PIPELINE)
        await trio.testing.wait_all_tasks_blocked()
        await run.wait_committed()
        copy_as_crashed(live, crashed)
        await run.cancel()
    HOLD.clear()
    SEEN.clear()
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run.id)
    assert result.ok
    # The stages that ran again saw the parameters they were declared with.
    assert sorted(SEEN) == [
        ("check[b]", {"batch": "b", "limits": [1, 2]}),
        ("second", {"batch": 2}),
    ]
    assert result.outputs["check[a]"] == "a"
    with Journal(crashed, readonly=True) as journal:
        read = journal.result(run.id)
    assert dict(read.params) == {
        "first": {"batch": 1},
        "second": {"batch": 2},
        "check[a]": {"batch": "a", "limits": [1, 2]},
        "check[b]": {"batch": "b", "limits": [1, 2]},
    }
    assert "parameters:" in str(read.lineage("check[a]"))
    assert "parameters:" not in str(read.lineage("plain"))


async def _journaled_run(path) -> str:
    async with runtime(journal=path) as rt:
        result = await rt.run(PIPELINE)
    return result.run_id


TAMPERED = {
    "pipeline params not a mapping": (
        "UPDATE runs SET pipeline = json_set(pipeline, '$.specs[0].params', "
        "json('[1, 2]'))"
    ),
    "pipeline params with a float too big": (
        "UPDATE runs SET pipeline = json_set(pipeline, '$.specs[0].params', "
        "json('{\"v\": 1e999}'))"
    ),
    "pipeline params nested too deep": (
        "UPDATE runs SET pipeline = json_set(pipeline, '$.specs[0].params', json('"
        + '{"v": '
        + "[" * 40
        + "]" * 40
        + "}"
        + "'))"
    ),
    "item params not a mapping": (
        "UPDATE events SET payload = json_set(payload, '$.params', 'batch') "
        "WHERE kind = 'item'"
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
async def test_tampered_parameters_in_a_journal_are_refused(tmp_path, case):
    path = tmp_path / "runs.db"
    run_id = await _journaled_run(path)
    db = sqlite3.connect(path)
    db.execute(TAMPERED[case])
    assert db.total_changes > 0
    db.commit()
    db.close()
    with (
        Journal(path, readonly=True) as journal,
        pytest.raises(JournalError, match="damaged or"),
    ):
        journal.result(run_id)
