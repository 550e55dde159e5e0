"""The stage actor under hostile input: odd declarations, values, exceptions and loads.

Each test names what a user, a stage body or a worker process controls and
gives it its worst value; the run must give a typed error (or do the right
thing), never hang, never report success for work that did not happen.
"""

from __future__ import annotations

import functools
import pickle
import threading
import traceback

import pytest
import trio
import trio.testing

from dagvisor import Pipeline, StageState, StageView, runtime, stage
from dagvisor.errors import (
    DagvisorError,
    InvalidStageError,
    NotPicklableError,
    RemoteError,
    ResourceCloseError,
    RunFailed,
)

# -- predicates and bodies that are not what they seem -----------------------------


async def test_an_async_predicate_is_awaited():
    async def never(ctx):
        await trio.lowlevel.checkpoint()
        return False

    async def always(ctx):
        return True

    @stage(when=never)
    async def skipped(ctx):
        return "ran"

    @stage(when=always)
    async def runs(ctx):
        return "ran"

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(skipped).add(runs))
    assert result.states["skipped"] is StageState.SKIPPED
    assert result.outputs == {"runs": "ran"}


async def test_a_predicate_returning_an_awaitable_is_awaited():
    async def decide(ctx, answer):
        return answer

    @stage(name="no", when=lambda ctx: decide(ctx, False))
    async def no(ctx):
        return "ran"

    @stage(name="yes", when=functools.partial(decide, answer=True))
    async def yes(ctx):
        return "ran"

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(no).add(yes))
    assert result.states["no"] is StageState.SKIPPED
    assert result.outputs == {"yes": "ran"}


async def _coroutine():
    return "never awaited"


def returns_a_coroutine(view):
    return _coroutine()


class NotAnAwaitableButLooksLikeOne:
    def __await__(self):
        yield from ()
        return "x"


def returns_an_awaitable(view):
    return NotAnAwaitableButLooksLikeOne()


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("body", [returns_a_coroutine, returns_an_awaitable])
async def test_a_plain_function_returning_an_awaitable_fails(executor, body):
    spec = stage(name="sneaky", executor=executor)(body)
    with trio.fail_after(60):  # a guard against a hang, not a timing assertion
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(spec))
    error = info.value.errors["sneaky"]
    assert isinstance(error, InvalidStageError)
    assert "'sneaky'" in str(error)
    assert "async def" in str(error)
    assert "sneaky" not in info.value.result.outputs


async def test_an_object_with_an_async_call_runs_on_the_loop():
    class Scorer:
        async def __call__(self, ctx):
            await trio.lowlevel.checkpoint()
            return "scored"

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(stage(name="scorer")(Scorer())))
    assert result.outputs == {"scorer": "scored"}


# -- the retry loop yields --------------------------------------------------------------


async def test_an_attempt_failing_before_its_first_await_lets_the_loop_run():
    attempts = []

    @stage(retries=10**7)
    async def fails_at_once(ctx):
        attempts.append(ctx.attempt)
        raise ConnectionError("refused")

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(fails_at_once))
        for _ in range(10):
            await trio.lowlevel.checkpoint()
        await run.cancel(reason="enough")
        with pytest.raises(RunFailed):
            await run.wait()
    # Between two attempts the actor yields, so the test (and the
    # supervisor) ran after a handful of attempts, not ten million.
    assert 0 < len(attempts) < 1000


# -- exceptions and values that cannot travel back from a worker -------------------------


class LockedError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raises_unpicklable(view):
    raise LockedError(f"{view.name} holds a lock")


class TwoArgumentError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")


def raises_unrebuildable(view):
    raise TwoArgumentError(7, "cannot be rebuilt from its args")


def returns_a_lock(view):
    return threading.Lock()


async def test_an_exception_that_cannot_be_pickled_keeps_its_name_and_traceback():
    spec = stage(name="raiser", executor="process")(raises_unpicklable)
    with trio.fail_after(60):  # a guard against a hang, not a timing assertion
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(spec))
    error = info.value.errors["raiser"]
    assert isinstance(error, RemoteError)
    assert isinstance(error, DagvisorError)
    assert error.type_name == "test_hostile_actors.LockedError"
    assert error.message == "raiser holds a lock"
    assert "in raises_unpicklable" in error.remote_traceback
    assert "LockedError: raiser holds a lock" in str(error)
    assert pickle.loads(pickle.dumps(error)).remote_traceback == error.remote_traceback


async def test_an_exception_whose_constructor_differs_comes_back_whole():
    spec = stage(name="raiser", executor="process")(raises_unrebuildable)
    with trio.fail_after(60):
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(spec))
    error = info.value.errors["raiser"]
    # Rebuilt without calling its constructor, or sent as its text: either
    # way its type, message and traceback survive.
    if isinstance(error, RemoteError):
        assert error.type_name.endswith("TwoArgumentError")
        assert "in raises_unrebuildable" in error.remote_traceback
    else:
        assert type(error) is TwoArgumentError
        assert "raises_unrebuildable" in "".join(
            traceback.format_tb(error.__traceback__)
        )
    assert "code 7: cannot be rebuilt from its args" in str(error)


async def test_a_return_value_that_cannot_come_back_is_named():
    spec = stage(name="locked", executor="process")(returns_a_lock)
    with trio.fail_after(60):
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(spec))
    error = info.value.errors["locked"]
    assert isinstance(error, NotPicklableError)
    assert error.what == "its return value"


# -- run_in ships only the function and its arguments -----------------------------------


def echo(*args):
    return args


def view_size(view: StageView) -> int:
    return len(pickle.dumps(view))


async def test_run_in_ignores_what_the_stage_sees_and_it_does_not_send():
    @stage
    async def source(ctx):
        return threading.Lock()  # an upstream output that cannot be pickled

    @stage
    async def uses_run_in(ctx):
        return await ctx.run_in("process", echo, 1, "two")

    pipeline = Pipeline("p").add(source).add(uses_run_in, after=["source"])
    with trio.fail_after(60):
        async with runtime() as rt:
            result = await rt.run(pipeline, inputs={"task": threading.Event()})
    assert result.outputs["uses_run_in"] == (1, "two")


async def test_run_in_names_the_argument_that_cannot_be_pickled():
    @stage
    async def sends_a_lock(ctx):
        return await ctx.run_in("process", echo, 1, threading.Lock())

    with trio.fail_after(60):
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(sends_a_lock))
    error = info.value.errors["sends_a_lock"]
    assert isinstance(error, NotPicklableError)
    assert error.what == "argument 1 of run_in(echo)"
    assert "_thread.lock" in str(error)


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


async def test_a_deeply_nested_input_is_named_not_a_recursion_error():
    deep = stage(name="deep", executor="process")(view_size)

    with trio.fail_after(60):
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(deep), inputs={"deep": _nested(10**5)})
    error = info.value.errors["deep"]
    assert isinstance(error, NotPicklableError)
    assert error.what == "run input 'deep'"


# -- retries, executors and resources given their worst values ---------------------------


async def test_a_huge_backoff_does_not_overflow(autojump_clock):
    attempts = []

    @stage(retries=1100, backoff=1e-300)  # doubled 1,100 times: past a float's range
    async def always_fails(ctx):
        attempts.append(ctx.attempt)
        raise ConnectionError(f"attempt {ctx.attempt}")

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(always_fails))
    assert len(attempts) == 1101
    assert info.value.errors["always_fails"].args == ("attempt 1100",)


class TouchyExecutor:
    """A plugged-in Executor whose == raises: dagvisor must never call it."""

    def __eq__(self, other):
        raise RuntimeError("do not compare me")

    __hash__ = object.__hash__

    async def run(self, body, view):
        return await trio.to_thread.run_sync(body, view)


def doubled(view):
    return view.item * 2


def triple(x):
    return x * 3


async def test_a_plugged_in_executor_is_never_compared():
    touchy = TouchyExecutor()
    spec = stage(name="doubled", executor=touchy)(doubled)

    @stage
    async def plan(ctx):
        names = await ctx.expand(spec, [1, 2], reason="items")
        return await ctx.run_in(touchy, triple, 5), names

    async with runtime(executor=touchy) as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["plan"] == (15, ["doubled[0]", "doubled[1]"])
    assert result.outputs["doubled[1]"] == 4


class Unshowable:
    """A resource whose repr raises and whose exit is not even async."""

    def __repr__(self):
        raise RuntimeError("no repr")

    async def __aenter__(self):
        return self

    def __aexit__(self, *exc):  # a plain function: its None cannot be awaited
        return None


class LongWinded:
    def __repr__(self):
        return "<" + "x" * 10**6 + ">"

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        raise OSError("cannot close")


@pytest.mark.parametrize(
    ("resource", "shown"),
    [(Unshowable(), "<Unshowable object>"), (LongWinded(), "<xxxxxxxx")],
)
async def test_a_resource_that_cannot_even_be_shown_is_still_reported(resource, shown):
    @stage
    async def uses(ctx):
        await ctx.enter(resource)
        return "body done"

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(uses))
    error = info.value.errors["uses"]
    assert isinstance(error, ResourceCloseError)
    assert error.resource.startswith(shown)
    assert len(error.resource) <= 200


async def test_a_thread_stage_may_use_run_in_from_its_thread():
    @stage(executor="thread")
    def nested(ctx):
        return trio.from_thread.run(ctx.run_in, "thread", triple, 7)

    async with runtime(thread_limit=2) as rt:
        result = await rt.run(Pipeline("p").add(nested))
    assert result.outputs == {"nested": 21}


def raises_a_huge_unpicklable_error(view):
    raise LockedError("x" * 10**6)


async def test_a_huge_remote_message_is_cut_not_copied_whole():
    spec = stage(name="huge", executor="process")(raises_a_huge_unpicklable_error)
    with trio.fail_after(60):  # a guard against a hang, not a timing assertion
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(spec))
    error = info.value.errors["huge"]
    assert isinstance(error, RemoteError)
    assert error.message.endswith("characters cut]")
    assert len(error.message) < 20_000
    assert len(error.remote_traceback) < 70_000
    assert "in raises_a_huge_unpicklable_error" in error.remote_traceback
