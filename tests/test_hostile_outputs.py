"""Hostile outputs: no value a stage returns can end a run it did not fail.

An output is frozen once, in the task of the stage that produced it, and
every consumer shares that one read-only value (see README, "What a
consumer sees of an output").
"""

from __future__ import annotations

import copy
import io
import pickle
import threading
from typing import Any

import pytest
import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import InvalidOutputError, ReadOnlyInputError, RunFailed


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value = value[0]
        depth += 1
    return depth


class Opaque:
    """An object of the user's own class: shared as it is."""

    def __init__(self) -> None:
        self.seen: list[str] = []


def _generator():  # a list holding a generator is an ordinary output
    yield 1


async def _run_two_consumers(value_factory: Any) -> tuple[Any, Any, Any]:
    """Run a producer and two consumers; return (output, first seen, second seen)."""
    seen: dict[str, Any] = {}

    @stage
    async def produce(ctx):
        return value_factory()

    @stage
    async def first(ctx):
        seen["first"] = ctx.inputs["produce"]
        await trio.lowlevel.checkpoint()
        return "first"

    @stage
    async def second(ctx):
        seen["second"] = ctx.inputs["produce"]
        return "second"

    pipeline = (
        Pipeline("outputs")
        .add(produce)
        .add(first, after=["produce"])
        .add(second, after=["produce"])
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    return result.outputs["produce"], seen["first"], seen["second"]


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: {"lock": threading.Lock(), "n": [1, 2]}, id="lock"),
        pytest.param(lambda: {"file": io.StringIO("x"), "rows": [[1]]}, id="file"),
        pytest.param(lambda: [_generator(), [1]], id="generator"),
        pytest.param(lambda: _nested(5_000), id="nested-5000"),
        pytest.param(lambda: {"obj": Opaque(), "tags": {"a", "b"}}, id="own-class"),
    ],
)
async def test_an_ordinary_output_never_crashes_the_run(factory):
    output, first, second = await _run_two_consumers(factory)
    # One frozen value, shared: consumers get the very same object.
    assert first is second is output


async def test_a_value_nested_deeper_than_the_recursion_limit_reaches_its_consumers():
    output, first, _ = await _run_two_consumers(lambda: _nested(50_000))
    assert _depth(first) == 50_000
    assert first is output


async def test_a_self_referencing_output_is_frozen_with_its_cycle():
    def cyclic():
        value: list[Any] = [1]
        value.append(value)
        holder = {"self": value, "pair": (value, 2)}
        return holder

    _, first, _ = await _run_two_consumers(cyclic)
    assert first["self"][1] is first["self"]
    assert first["pair"][0] is first["self"]
    with pytest.raises(ReadOnlyInputError):
        first["self"].append(3)


async def test_consumers_cannot_change_a_shared_output_and_the_error_says_how_to_copy():
    attempts: dict[str, str] = {}

    @stage
    async def produce(ctx):
        return {
            "items": [1, 2, 3],
            "meta": {"n": 3},
            "tags": {"a"},
            "raw": bytearray(b"ab"),
            "pair": ([1], 2),
        }

    @stage
    async def vandal(ctx):
        data = ctx.inputs["produce"]
        for label, attempt in {
            "list.append": lambda: data["items"].append(99),
            "list[0]=": lambda: data["items"].__setitem__(0, 0),
            "list+=": lambda: data["items"].__iadd__([4]),
            "list.sort": lambda: data["items"].sort(),
            "dict[k]=": lambda: data["meta"].__setitem__("n", 0),
            "dict.update": lambda: data.update(x=1),
            "dict.pop": lambda: data.pop("items"),
            "dict|=": lambda: data.__ior__({"x": 1}),
            "set.add": lambda: data["tags"].add("b"),
            "tuple's list": lambda: data["pair"][0].append(2),
        }.items():
            try:
                attempt()
            except ReadOnlyInputError as exc:
                attempts[label] = str(exc)
        assert isinstance(data["raw"], bytes)  # a bytearray arrives as bytes
        mine = copy.deepcopy(data)  # a private, mutable copy
        mine["items"].append(99)
        return mine

    @stage
    async def reader(ctx):
        await trio.lowlevel.checkpoint()
        return ctx.inputs["produce"]

    pipeline = (
        Pipeline("p")
        .add(produce)
        .add(vandal, after=["produce"])
        .add(reader, after=["produce"])
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert len(attempts) == 10
    assert "read-only" in attempts["list.append"]
    assert "copy" in attempts["list.append"]
    expected = {
        "items": [1, 2, 3],
        "meta": {"n": 3},
        "tags": {"a"},
        "raw": b"ab",
        "pair": ([1], 2),
    }
    assert result.outputs["reader"] == expected
    assert result.outputs["produce"] == expected
    # The vandal's own output is frozen in turn, like every output.
    assert result.outputs["vandal"]["items"] == [1, 2, 3, 99]


async def test_frozen_values_behave_like_their_builtin_types():
    _, first, _ = await _run_two_consumers(
        lambda: {"rows": [1, 2], "meta": {"k": "v"}, "tags": {1}}
    )
    assert isinstance(first, dict)
    assert isinstance(first["rows"], list)
    assert first == {"rows": [1, 2], "meta": {"k": "v"}, "tags": {1}}
    assert [*first["rows"], 3] == [1, 2, 3]
    assert first["rows"] + [3] == [1, 2, 3]
    assert type(first["rows"] + [3]) is list
    assert type(first["meta"] | {"x": 1}) is dict
    assert type(first["meta"].copy()) is dict
    assert type(first["tags"] | {2}) is set
    # Pickled (to another process), a frozen value arrives as a plain one.
    thawed = pickle.loads(pickle.dumps(first))
    assert type(thawed) is dict
    assert type(thawed["rows"]) is list
    thawed["rows"].append(3)
    assert copy.copy(first["rows"]) == [1, 2]
    assert type(copy.copy(first["rows"])) is list


async def test_numpy_arrays_are_shared_read_only():
    np = pytest.importorskip("numpy")
    source = np.arange(6)
    _, first, second = await _run_two_consumers(lambda: {"a": source})
    array = first["a"]
    assert array is second["a"]
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 99
    # The producer's own array is untouched and still writable.
    assert source.flags.writeable
    assert list(array) == [0, 1, 2, 3, 4, 5]


async def test_an_output_is_frozen_once_not_once_per_consumer():
    produced: list[Any] = []
    seen: list[Any] = []

    @stage
    async def produce(ctx):
        value = {str(i): list(range(10)) for i in range(100)}
        produced.append(value)
        return value

    @stage
    async def consume(ctx):
        seen.append(ctx.inputs["produce"])

    @stage
    async def plan(ctx):
        await ctx.expand(consume, range(34), after=["produce"], reason="fan out")

    pipeline = Pipeline("p").add(produce).add(plan, after=["produce"])
    async with runtime() as rt:
        await rt.run(pipeline)
    assert len(seen) == 34
    assert all(value is seen[0] for value in seen)
    assert seen[0] == produced[0]


async def test_run_inputs_and_mapped_items_are_frozen_too():
    seen: dict[str, Any] = {}
    items = [{"id": 1, "tags": ["a"]}]

    @stage
    async def mapped(ctx):
        seen["item"] = ctx.item
        seen["run_inputs"] = ctx.run_inputs["config"]

    @stage
    async def plan(ctx):
        await ctx.expand(mapped, items, reason="map")
        items[0]["tags"].append("changed after the request")

    config = {"limits": [1, 2]}
    async with runtime() as rt:
        await rt.run(Pipeline("p").add(plan), inputs={"config": config})
    config["limits"].append(3)
    assert seen["item"] == {"id": 1, "tags": ["a"]}
    assert seen["run_inputs"] == {"limits": [1, 2]}
    with pytest.raises(ReadOnlyInputError):
        seen["item"]["tags"].append("x")
    with pytest.raises(ReadOnlyInputError):
        seen["run_inputs"]["limits"].append(9)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.builds(bytearray, st.binary(max_size=4))
    ),
    max_leaves=20,
)


def _thawed(value: Any) -> Any:
    """What the value compares equal to once bytearrays are bytes (their frozen form)."""
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, list):
        return [_thawed(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_thawed(v) for v in value)
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    return value


@given(_values)
def test_freezing_keeps_the_value_equal_and_leaves_the_original_alone(value):
    from dagvisor.actors._freeze import freeze

    before = copy.deepcopy(value)
    frozen = freeze(value)
    assert frozen == _thawed(before)
    assert value == before
    assert freeze(frozen) is frozen  # freezing a frozen value is free


class _HashOnce:
    """A dict key whose ``__hash__`` works once (to build the dict), then raises."""

    def __init__(self) -> None:
        self.hashed = False

    def __hash__(self) -> int:
        if self.hashed:
            raise RuntimeError("hash asked twice")
        self.hashed = True
        return 1


async def test_a_value_that_cannot_be_frozen_fails_its_stage_with_a_typed_error():
    @stage
    async def bad(ctx):
        return {"rows": {_HashOnce(): [1]}}

    @stage
    async def independent(ctx):
        return "fine"

    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as caught:
            await rt.run(Pipeline("p").add(bad).add(independent))
    error = caught.value.errors["bad"]
    assert isinstance(error, InvalidOutputError)
    assert error.stage == "bad"
    assert "dict" in str(error)
    assert caught.value.result.outputs["independent"] == "fine"
