"""The stage registry and the output codecs of the journal."""

from __future__ import annotations

import dataclasses
import threading

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import stage
from dagvisor.actors import JsonCodec, PickleCodec, StageRegistry, default_registry
from dagvisor.errors import NotRestorableError


@attrs.frozen
class Point:
    x: int
    y: tuple[int, ...]


@dataclasses.dataclass
class Reading:
    sensor: str
    values: list[float]


async def registered(ctx):
    return 1


registered_spec = stage(registered)


def test_stage_registers_module_level_functions():
    assert default_registry.lookup(f"{__name__}:registered") is registered
    default_registry.check_restorable(registered_spec)  # does not raise


def test_a_closure_or_a_lambda_is_not_restorable():
    async def nested(ctx):
        return 1

    with pytest.raises(NotRestorableError, match="module level") as info:
        default_registry.check_restorable(stage(nested))
    assert "nested" in str(info.value)
    with pytest.raises(NotRestorableError, match="when predicate"):
        default_registry.check_restorable(stage(when=lambda ctx: True)(registered))


def test_explicit_registration_under_a_name():
    registry = StageRegistry()

    def helper(ctx):
        return 1

    with pytest.raises(NotRestorableError, match="explicit name"):
        registry.register(helper)
    assert registry.register(helper, name="helpers.v1") == "helpers.v1"
    assert registry.lookup("helpers.v1") is helper
    registry.check_restorable(stage(name="h")(helper))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trips_values_exactly(value):
    codec = JsonCodec()
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back) is type(value)


def test_json_round_trips_attrs_classes_and_dataclasses():
    codec = JsonCodec()
    value = {
        "p": Point(1, (2, 3)),
        "r": Reading("t1", [0.5, 1.5]),
        "__dagvisor__": "not a tag",
    }
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back["p"]) is Point
    assert type(back["p"].y) is tuple


def test_json_refuses_what_it_cannot_encode_with_the_fix():
    with pytest.raises(NotRestorableError, match="PickleCodec") as info:
        JsonCodec().encode({"lock": threading.Lock()})
    assert "lock" in str(info.value)


def test_pickle_is_an_explicit_choice():
    codec = PickleCodec()
    assert codec.decode(codec.encode({1: Point(1, ())})) == {1: Point(1, ())}
    with pytest.raises(NotRestorableError, match="cannot be pickled"):
        codec.encode(threading.Lock())
