"""`@stage` and `StageSpec`."""

from __future__ import annotations

import attrs
import pytest

from dagvisor import StageSpec, stage
from dagvisor.errors import DagvisorError, InvalidStageError


async def body(ctx):
    return 1


def test_bare_decorator_names_the_stage_after_the_function():
    spec = stage(body)
    assert spec.name == "body"
    assert spec.retries == 0
    assert spec.timeout is None
    assert spec.executor == "loop"
    assert spec.is_async


def test_decorator_with_options():
    spec = stage(name="b", retries=2, timeout=5, backoff=0.5, trigger="none_failed")(
        body
    )
    assert (spec.name, spec.retries, spec.timeout, spec.backoff) == ("b", 2, 5.0, 0.5)
    assert spec.trigger == "none_failed"


def test_plain_functions_run_in_a_thread_by_default():
    @stage
    def plain(ctx):
        return 1

    assert plain.executor is None  # the runtime's default: "thread" unless set
    assert not plain.is_async


def test_named_and_options_return_new_specs():
    spec = stage(body)
    renamed = spec.named("other")
    assert renamed.name == "other"
    assert spec.name == "body"
    assert renamed.fn is spec.fn
    retried = spec.options(retries=3)
    assert retried.retries == 3
    assert spec.retries == 0


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"backoff": True}, "backoff"),
        ({"trigger": ["all_succeeded"]}, "trigger"),
        ({"backoff": -1}, "backoff"),
        ({"when": 3}, "predicate"),
        ({"trigger": "sometimes"}, "trigger"),
        ({"executor": "gpu"}, "executor"),
        ({"name": ""}, "non-empty"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(options, fragment):
    with pytest.raises(InvalidStageError, match=fragment) as info:
        stage(**options)(body)
    assert isinstance(info.value, DagvisorError)
    assert isinstance(info.value, ValueError)


def test_a_function_with_the_wrong_signature_is_refused():
    async def two(ctx, extra):
        return 1

    with pytest.raises(InvalidStageError, match="one positional argument"):
        stage(two)


def test_a_lambda_needs_a_name():
    with pytest.raises(InvalidStageError, match="name="):
        stage(lambda ctx: 1)
    assert stage(name="l")(lambda ctx: 1).name == "l"


def test_a_plain_function_cannot_claim_the_event_loop():
    def plain(ctx):
        return 1

    with pytest.raises(InvalidStageError, match="block the event loop"):
        stage(executor="loop")(plain)


def test_a_stage_cannot_be_decorated_twice():
    with pytest.raises(InvalidStageError, match="already a stage"):
        stage(stage(body))


def test_not_callable():
    with pytest.raises(InvalidStageError, match="function"):
        stage(42)


# -- declarations that cannot work are refused -----------------------------------------


def test_an_async_generator_function_is_refused():
    async def produces(ctx):
        yield 1

    with pytest.raises(InvalidStageError, match="async generator"):
        stage(produces)
    with pytest.raises(InvalidStageError, match="async generator"):
        stage(executor="thread")(produces)


def test_a_generator_function_is_refused():
    def produces(ctx):
        yield 1

    with pytest.raises(InvalidStageError, match="generator"):
        stage(produces)


def test_an_async_generator_predicate_is_refused():
    async def sometimes(ctx):
        yield True

    with pytest.raises(InvalidStageError, match="when"):
        stage(when=sometimes)(body)


class AsyncCallable:
    async def __call__(self, ctx):
        return "called"


def test_an_object_with_an_async_call_is_an_async_stage():
    spec = stage(name="obj")(AsyncCallable())
    assert spec.executor == "loop"
    assert spec.is_async
    with pytest.raises(InvalidStageError, match="run_in"):
        stage(name="obj", executor="thread")(AsyncCallable())


def test_an_async_predicate_is_accepted():
    async def ready(ctx):
        return True

    assert stage(when=ready)(body).when is ready


def test_a_callable_whose_call_is_itself_is_declared_without_looping():
    class Loopy:
        pass

    Loopy.__call__ = Loopy()  # type: ignore[attr-defined]  # a hostile shape
    spec = stage(name="loopy")(Loopy())
    assert spec.executor is None  # not async: it would run in a thread


def _fields(spec):
    return {field.name: getattr(spec, field.name) for field in attrs.fields(type(spec))}


def plain_body(ctx):
    return 1


async def predicate(ctx):
    return True


@pytest.mark.parametrize(
    "declare",
    [
        lambda: stage(body),
        lambda: stage(name="n")(body),
        lambda: stage(body).named("renamed"),
        lambda: stage(retries=2, backoff=1, timeout=3, when=predicate)(body),
        lambda: stage(trigger="none_failed")(body),
        lambda: stage(plain_body),
        lambda: stage(executor="thread", timeout=1.5)(plain_body),
        lambda: stage(executor="process", retries=1)(plain_body),
        lambda: stage(body).options(retries=1, name="o"),
        lambda: stage(body).with_params(batch=7, region="eu"),
        lambda: stage(body).named("p", params={"nested": {"a": [1, 2.5, None]}}),
        lambda: stage(body).with_params(batch=1).options(retries=1),
        lambda: stage(limit="db")(body),
        lambda: stage(limit="db", executor="thread")(plain_body),
    ],
)
def test_a_declared_spec_is_the_one_its_constructor_makes(declare):
    # Declaring builds a spec without its attrs __init__ (it is on the path
    # of every declaration): field by field, it must be the same spec.
    declared = declare()
    fields = _fields(declared)
    derived = {name: fields.pop(name) for name in ("simple", "params_key", "queues")}
    built = StageSpec(**fields)
    assert _fields(built) == {**fields, **derived}
    assert declared == built
    assert hash(declared) == hash(built)
    assert repr(declared) == repr(built)


def test_an_unknown_option_names_itself_and_the_options():
    @stage
    async def body(ctx):
        return 1

    with pytest.raises(TypeError, match=r"unknown keywords \['bogus'\].*retries"):
        body.options(bogus=1)
