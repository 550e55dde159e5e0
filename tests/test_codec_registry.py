"""The stage registry and the output codecs of the journal."""

from __future__ import annotations

import dataclasses
import json
import threading

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import Undecoded, stage
from dagvisor.actors import JsonCodec, PickleCodec, StageRegistry, default_registry
from dagvisor.actors._codec import read_value
from dagvisor.actors._freeze import freeze
from dagvisor.actors._jsonform import MAX_DEPTH, Malformed
from dagvisor.errors import NotRestorableError
from dagvisor.supervisor._stage_refs import check_restorable


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
    check_restorable(default_registry, registered_spec)  # does not raise


def test_a_closure_or_a_lambda_is_not_restorable():
    async def nested(ctx):
        return 1

    with pytest.raises(NotRestorableError, match="module level") as info:
        check_restorable(default_registry, stage(nested))
    assert "nested" in str(info.value)
    with pytest.raises(NotRestorableError, match="when predicate"):
        check_restorable(default_registry, stage(when=lambda ctx: True)(registered))


def test_explicit_registration_under_a_name():
    registry = StageRegistry()

    def helper(ctx):
        return 1

    with pytest.raises(NotRestorableError, match="explicit name"):
        registry.register(helper)
    assert registry.register(helper, name="helpers.v1") == "helpers.v1"
    assert registry.lookup("helpers.v1") is helper
    check_restorable(registry, stage(name="h")(helper))


# Any text, lone surrogates and surrogate pairs included: a file name that is
# not UTF-8 comes back from os.listdir() with lone surrogates in it.
any_text = st.text(st.characters(exclude_categories=()), max_size=8)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | any_text
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(any_text, inner, max_size=4)
        | st.dictionaries(st.integers() | st.tuples(st.integers()), inner, max_size=3)
        | st.frozensets(st.integers() | any_text, max_size=4)
        | st.sets(st.integers(), max_size=3)
        | st.builds(Point, st.integers(), st.tuples(st.integers()))
    ),
    max_leaves=20,
)


def _same(back, value):
    """Equal, and of the same types all the way down (1 == 1.0 == True otherwise)."""
    assert back == value
    todo = [(back, value)]
    while todo:
        left, right = todo.pop()
        assert type(left) is type(right)
        if isinstance(right, list | tuple):
            todo.extend(zip(left, right, strict=True))
        elif isinstance(right, dict):
            todo.extend(zip(left.values(), right.values(), strict=True))
            todo.extend(zip(left, right, strict=True))


@given(json_values)
def test_json_round_trips_values_exactly(value):
    codec = JsonCodec(types=[Point])
    text = codec.encode(value)
    text.encode("utf-8")  # valid UTF-8, whatever the value held
    _same(codec.decode(text), value)
    _same(json.loads(codec.encode_utf8(value).decode("utf-8")), json.loads(text))


@given(json_values)
def test_reading_gives_plain_data_and_undecoded_classes(value):
    text = JsonCodec(types=[Point]).encode(value)
    back = read_value(text)
    if "test_codec_registry:Point" not in text:
        _same(back, value)
    todo = [back]
    while todo:  # no Point was rebuilt: each is an Undecoded naming it
        item = todo.pop()
        assert type(item) is not Point
        if isinstance(item, Undecoded):
            assert item.type == f"{__name__}:Point"
            assert JsonCodec(types=[Point]).decode(item.text) is not None
        elif isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())


def test_lone_surrogates_and_pairs_come_back_exactly():
    codec = JsonCodec()
    for text in [
        "\ud800",
        "a\udcff\udc80b",
        "\ud83d\ude00",
        "x\ud83d\ude00\ud800",
        "é" * 3,
    ]:
        for value in (text, [text], {text: text}, (text,)):
            encoded = codec.encode(value)
            encoded.encode("utf-8")
            _same(codec.decode(encoded), value)
            _same(read_value(encoded), value)
    assert codec.encode("é\ud800") == '"é\\ud800"'  # UTF-8 as is; the surrogate escaped


def test_json_round_trips_attrs_classes_and_dataclasses():
    codec = JsonCodec(types=[Point])
    codec.register(Reading)
    value = {
        "p": Point(1, (2, 3)),
        "r": Reading("t1", [0.5, 1.5]),
        "__dagvisor__": "not a tag",
    }
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back["p"]) is Point
    assert type(back["p"].y) is tuple
    assert codec.types == {Point, Reading}


@attrs.frozen
class Private:
    _secret: int
    derived: int = attrs.field(init=False, default=7)


def test_attrs_private_and_derived_fields_come_back():
    codec = JsonCodec(types=[Private])
    back = codec.decode(codec.encode(Private(3)))
    assert back == Private(3)


def test_a_class_that_is_not_allowed_is_refused_with_the_way_to_allow_it():
    codec = JsonCodec()
    with pytest.raises(
        NotRestorableError, match=r"JsonCodec\(types=\[Point\]\)"
    ) as info:
        codec.encode([Point(1, ())])
    assert "-> Point" in str(info.value)
    assert "codec.register(Point)" in str(info.value)
    text = codec.encode(Point(1, ()), allow={Point})
    with pytest.raises(NotRestorableError, match="does not allow"):
        codec.decode(text)
    assert codec.decode(text, allow={Point}) == Point(1, ())
    stored = read_value(text)
    assert isinstance(stored, Undecoded)
    assert stored.type == f"{__name__}:Point"
    assert "Point" in repr(stored)


def test_register_takes_attrs_classes_and_dataclasses_only():
    codec = JsonCodec()
    for wrong in (int, threading.Lock, Point(1, ()), "test_codec_registry:Point"):
        with pytest.raises(TypeError, match="attrs class or a dataclass"):
            codec.register(wrong)
    assert codec.register(Point) is Point  # usable as a decorator


def test_nesting_is_bounded_when_written_and_when_read():
    codec = JsonCodec()
    deep: list = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert codec.decode(codec.encode(deep)) == deep
    with pytest.raises(NotRestorableError, match="nested more than"):
        codec.encode([deep])
    loop: list = []
    loop.append(loop)
    with pytest.raises(NotRestorableError, match="refers to"):
        codec.encode(loop)
    hostile = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="nested too deeply"):
        read_value(hostile)
    with pytest.raises(ValueError, match="nested too deeply"):
        codec.decode(hostile)


def test_values_json_cannot_hold_are_refused_at_encoding():
    codec = JsonCodec()
    with pytest.raises(NotRestorableError, match="as JSON"):
        codec.encode(10**5000)
    with pytest.raises(NotRestorableError, match="as JSON"):
        codec.encode({"n": [10**5000]})
    nan = codec.decode(codec.encode(float("nan")))
    assert nan != nan
    assert codec.decode(codec.encode([float("inf"), -float("inf")])) == [
        float("inf"),
        -float("inf"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"__dagvisor__": "tuple"}',
        '{"__dagvisor__": "set", "items": [[1, 2]]}',
        '{"__dagvisor__": "dict", "items": [[[1], 2]]}',
        '{"__dagvisor__": "dict", "items": [1]}',
        '{"__dagvisor__": "bytes", "data": "not base64!"}',
        '{"__dagvisor__": "bytes", "data": 12}',
        '{"__dagvisor__": "str", "parts": [1]}',
        '{"__dagvisor__": ["tag"]}',
        '{"__dagvisor__": "mystery"}',
        '{"__dagvisor__": "attrs", "type": 5, "fields": {}}',
        "1" * 5000,
    ],
)
def test_text_that_the_codec_never_writes_is_malformed(text):
    with pytest.raises(Malformed):
        read_value(text)
    with pytest.raises(Malformed):
        JsonCodec().decode(text)


def test_json_refuses_what_it_cannot_encode_with_the_fix():
    with pytest.raises(NotRestorableError, match="PickleCodec") as info:
        JsonCodec().encode({"lock": threading.Lock()})
    assert "lock" in str(info.value)


def test_pickle_is_an_explicit_choice():
    codec = PickleCodec()
    assert codec.decode(codec.encode({1: Point(1, ())})) == {1: Point(1, ())}
    with pytest.raises(NotRestorableError, match="cannot be pickled"):
        codec.encode(threading.Lock())


def test_frozen_values_are_written_as_the_builtins_they_stand_for():
    """A stage passing on its (frozen, read-only) input writes it like the original."""
    value = {"l": [1, {"d": {2, 3}}], "t": ([4],)}
    frozen = freeze(value)
    assert type(frozen["l"]) is not list  # a read-only subclass
    codec = JsonCodec()
    assert codec.encode(frozen) == codec.encode(value)
    back = codec.decode(codec.encode(frozen))
    _same(back, value)
