"""`@stage` under hostile options: what a declaration is given, at its worst.

Every option of `stage` is user input. A value that cannot work is refused
with `InvalidStageError` (never a raw OverflowError, ValueError or the
user's own exception from a ``__repr__``); a value that is kept is kept as
the plain value that was checked, so that a subclass redefining ``__eq__``,
comparisons or ``__float__`` cannot make the run see something else.
"""

from __future__ import annotations

import math
import sys
import threading
import tracemalloc
import types
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import Pipeline, StageRegistry, runtime, stage
from dagvisor.errors import InvalidStageError


async def body(ctx):
    return "ran"


class Lying(str):
    """A string equal to everything."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


class Raising(str):
    """A string that refuses to be compared."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    __hash__ = str.__hash__


class NeverLess(int):
    """An int whose comparisons say it is never below anything."""

    def __lt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return True

    def __ge__(self, other: object) -> bool:
        return True


class LoudFloat(float):
    """A float whose ``__float__`` says another number."""

    def __float__(self) -> float:
        return -1.0

    def __lt__(self, other: object) -> bool:
        return False


class Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


# -- each option at its worst ------------------------------------------------------------

REFUSED = [
    ({"retries": NeverLess(-1)}, "retries"),
    ({"retries": 10**5000}, "retries"),  # too long even to print
    ({"retries": 2**63}, "retries"),  # more than a journal can store
    ({"retries": Unshowable()}, "retries"),
    ({"backoff": 10**400}, "backoff"),  # past the largest float
    ({"backoff": LoudFloat(-5.0)}, "backoff"),
    ({"backoff": math.inf}, "backoff"),
    ({"backoff": Unshowable()}, "backoff"),
    ({"timeout": 10**400}, "timeout"),
    ({"timeout": LoudFloat(-5.0)}, "timeout"),
    ({"timeout": NeverLess(-1)}, "timeout"),
    ({"trigger": Lying("sometimes")}, "trigger"),
    ({"trigger": Raising("sometimes")}, "trigger"),
    ({"trigger": Unshowable()}, "trigger"),
    ({"executor": Lying("gpu")}, "executor"),
    ({"executor": Raising("gpu")}, "executor"),
    ({"executor": Unshowable()}, "executor"),
    ({"name": Unshowable()}, "name"),
    ({"when": Unshowable()}, "predicate"),
]


@pytest.mark.parametrize(("options", "fragment"), REFUSED)
def test_a_hostile_option_is_refused_with_a_typed_error(options, fragment):
    with pytest.raises(InvalidStageError, match=fragment):
        stage(**options)(body)


def test_kept_options_are_the_plain_values_that_were_checked():
    spec = stage(
        name=Lying("s"),
        retries=NeverLess(2),
        backoff=LoudFloat(0.5),
        timeout=NeverLess(3),
        trigger=Lying("none_failed"),
        executor=Lying("thread"),
    )(lambda ctx: 1)
    fields = (spec.name, spec.retries, spec.backoff, spec.timeout)
    assert fields == ("s", 2, 0.5, 3.0)
    assert [type(value) for value in fields] == [str, int, float, float]
    assert type(spec.trigger) is str
    assert spec.trigger == "none_failed"
    assert type(spec.executor) is str
    assert spec.executor == "thread"


def test_a_function_whose_name_raises_needs_a_name():
    class Anonymous:
        @property
        def __name__(self):
            raise RuntimeError("no name")

        async def __call__(self, ctx):
            return 1

    with pytest.raises(InvalidStageError, match="pass name="):
        stage(Anonymous())
    assert stage(name="a")(Anonymous()).is_async


def test_a_callable_whose_signature_raises_is_declared_and_found_out_at_run_time():
    class Odd:
        @property
        def __signature__(self):
            raise RuntimeError("no signature")

        async def __call__(self, ctx):
            return "ran"

    assert stage(name="odd")(Odd()).is_async


# -- any value, against what the rules say ---------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**300, max_value=10**320),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.integers(-3, 3).map(NeverLess),
    st.floats(-3, 3).map(LoudFloat),
)


def _real(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int.__int__(value) if isinstance(value, int) else float.__float__(value)


def _as_float(value):
    try:
        return float(value)
    except OverflowError:
        return None


REFUSE = object()


def _expected(option, value):
    """What the rules of `stage` keep for ``option=value``, or `REFUSE`."""
    real = _real(value)
    if option == "retries":
        if type(real) is int and 0 <= real <= 2**63 - 1:
            return real
        return REFUSE
    if option == "timeout" and value is None:
        return None
    seconds = None if real is None else _as_float(real)
    if seconds is None or math.isnan(seconds):
        return REFUSE
    if option == "backoff":
        return seconds if 0 <= seconds < math.inf else REFUSE
    return seconds if seconds > 0 else REFUSE  # timeout: inf means no limit


@pytest.mark.parametrize("option", ["retries", "backoff", "timeout"])
@given(value=_numbers)
def test_a_number_option_is_kept_plain_or_refused_as_the_rules_say(option, value):
    expected = _expected(option, value)
    if expected is REFUSE:
        with pytest.raises(InvalidStageError, match=option):
            stage(**{option: value})(body)
        return
    kept = getattr(stage(**{option: value})(body), option)
    assert type(kept) is type(expected)
    assert kept == expected


@given(
    value=st.one_of(
        st.sampled_from(["all_succeeded", "none_failed", "sometimes", ""]),
        st.text(max_size=15),
        st.sampled_from(["all_succeeded", "none_failed", "x"]).map(Lying),
        st.integers(),
        st.none(),
    )
)
def test_a_trigger_is_kept_as_a_plain_known_string_or_refused(value):
    plain = str.__str__(value) if isinstance(value, str) else None
    if plain not in ("all_succeeded", "none_failed"):
        with pytest.raises(InvalidStageError, match="trigger"):
            stage(trigger=value)(body)
        return
    kept = stage(trigger=value)(body).trigger
    assert type(kept) is str
    assert kept == plain


# -- the registry behind every declaration ------------------------------------------------


def _module_functions(count: int, module_name: str) -> list[types.FunctionType]:
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module
    source = "\n".join(f"async def f{i}(ctx):\n    return {i}\n" for i in range(count))
    exec(compile(source, module_name, "exec"), module.__dict__)
    return [getattr(module, f"f{i}") for i in range(count)]


def test_a_declared_function_is_found_by_name_however_the_registry_is_asked_first():
    functions = _module_functions(3, "hostile_declared_a")
    registry = StageRegistry()
    for fn in functions:
        registry.remember(fn)
    assert registry.key_of(functions[1]) == "hostile_declared_a:f1"
    assert registry.lookup("hostile_declared_a:f2") is functions[2]
    registry.remember(functions[0])  # already filed: found, not duplicated
    assert registry.lookup("hostile_declared_a:f0") is functions[0]


def test_the_last_function_given_a_name_keeps_it_declared_or_registered():
    first, second = _module_functions(2, "hostile_declared_b")
    registry = StageRegistry()
    registry.remember(first)
    registry.register(second, name="hostile_declared_b:f0")  # after: it wins
    assert registry.lookup("hostile_declared_b:f0") is second
    registry.remember(first)  # declared again, after the registration: it wins
    assert registry.lookup("hostile_declared_b:f0") is first


def test_declaring_one_function_many_times_holds_it_once():
    (fn,) = _module_functions(1, "hostile_declared_c")
    registry = StageRegistry()
    registry.remember(fn)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100_000):
            registry.remember(fn)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000  # one reference a declaration would be 800,000 bytes
    assert registry.lookup("hostile_declared_c:f0") is fn


def test_a_closure_declared_as_a_stage_is_not_kept_alive_by_the_registry():
    def make():
        async def nested(ctx):
            return 1

        return nested

    nested = make()
    alive = weakref.ref(nested)
    stage(nested)
    stage(name="l")(lambda ctx: 1)
    del nested
    assert alive() is None


def test_an_object_whose_names_raise_is_never_registered_and_never_raises():
    class Hostile:
        def __getattribute__(self, name):
            if name in ("__module__", "__qualname__", "__name__"):
                raise RuntimeError(name)
            return object.__getattribute__(self, name)

        async def __call__(self, ctx):
            return 1

    registry = StageRegistry()
    hostile = Hostile()
    registry.remember(hostile)
    assert registry.key_of(hostile) is None
    spec = stage(name="hostile")(hostile)
    assert spec.is_async


def test_functions_declared_from_several_threads_are_all_found():
    functions = _module_functions(2000, "hostile_declared_d")
    registry = StageRegistry()
    start = threading.Barrier(3)
    found: list[object] = []

    def declare(part: list[types.FunctionType]) -> None:
        start.wait()
        for fn in part:
            registry.remember(fn)

    def look() -> None:
        start.wait()
        found.extend(
            registry.lookup(f"hostile_declared_d:f{i}") for i in range(0, 2000, 7)
        )

    threads = [
        threading.Thread(target=declare, args=(functions[0::2],)),
        threading.Thread(target=declare, args=(functions[1::2],)),
        threading.Thread(target=look),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found  # looked up while declared: each either found or not yet there
    assert all(fn is None or fn in functions for fn in found)
    for i, fn in enumerate(functions):
        assert registry.lookup(f"hostile_declared_d:f{i}") is fn


async def test_a_journaled_run_finds_a_function_declared_just_before_it(tmp_path):
    (fn,) = _module_functions(1, "hostile_declared_e")
    spec = stage(name="late")(fn)
    async with runtime(journal=str(tmp_path / "runs.db")) as rt:
        result = await rt.run(Pipeline("p").add(spec))
    assert result.outputs == {"late": 0}
