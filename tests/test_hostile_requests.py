"""Hostile requests: every request is answered once, audited once, and no
payload, name or bug in a change ends a run that did not ask for it."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import trio
import trio.testing

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import (
    DuplicateStageError,
    InternalError,
    NotRestorableError,
    RunClosedError,
    RunFailed,
)
from dagvisor.supervisor._core import RunCore
from dagvisor.supervisor._graph import LiveGraph


@stage
async def noop(ctx):
    return ctx.name


class RaisingEq:
    """An item whose comparisons raise (and which pickles fine)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __hash__(self) -> int:
        return self.n


class Unpicklable(RaisingEq):
    def __reduce__(self) -> Any:
        raise TypeError("no pickling")


class EvilName(str):
    """A stage name whose own comparisons and hash raise."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("name compared")

    def __hash__(self) -> int:
        raise RuntimeError("name hashed")


class _Gate:
    """Holds a run open until the test lets it go (module level: journaled runs
    need registered stage functions)."""

    event = trio.Event()


@stage
async def hold(ctx):
    await _Gate.event.wait()
    return "held"


def _held() -> tuple[Pipeline, trio.Event]:
    _Gate.event = trio.Event()
    return Pipeline("held").add(hold), _Gate.event


_answers: list[object] = []


@stage
async def huge_mapper(ctx):
    try:
        await ctx.expand(noop, [10**5000], reason="a huge int")
    except NotRestorableError as exc:
        _answers.append(exc)
    return "went on"


@pytest.mark.parametrize("where", ["outside", "stage"])
async def test_an_item_the_journal_cannot_encode_is_refused_and_audited(
    tmp_path, where
):
    _answers.clear()
    pipeline, gate = _held()
    if where == "stage":
        pipeline = pipeline.add(huge_mapper)
    async with runtime(journal=tmp_path / "j.db") as rt:
        run = await rt.start(pipeline)
        if where == "outside":
            with pytest.raises(NotRestorableError):
                await run.expand(noop, [10**5000], reason="a huge int")
            _answers.append("refused")
        gate.set()
        result = await run.wait()
    assert len(_answers) == 1
    assert result.ok
    (record,) = result.audit
    assert record.kind == "expand"
    assert not record.accepted
    assert record.error_type == "NotRestorableError"
    expected = {"hold"} | ({"huge_mapper"} if where == "stage" else set())
    assert set(result.states) == expected


@pytest.mark.parametrize(
    "make_items",
    [
        pytest.param(lambda: [RaisingEq(1), RaisingEq(2)], id="raising-eq"),
        pytest.param(lambda: [[1, [2]], {"a": {3}}], id="plain-data"),
    ],
)
async def test_a_retried_stage_asking_for_the_same_expansion_gets_it_again(
    make_items,
):
    attempts: list[list[str]] = []

    @stage(retries=1)
    async def flaky(ctx):
        names = await ctx.expand(noop, make_items(), reason="map")
        attempts.append(names)
        if ctx.attempt == 0:
            raise RuntimeError("first attempt fails after its change")
        return names

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(flaky))
    assert attempts[0] == attempts[1] == ["noop[0]", "noop[1]"]
    assert [r.accepted for r in result.audit] == [True, True]
    assert result.audit[1].added == ()  # the second asking is a no-op


async def test_a_retried_expansion_over_numpy_arrays_is_the_same_expansion():
    np = pytest.importorskip("numpy")

    @stage(retries=1)
    async def flaky(ctx):
        names = await ctx.expand(noop, [np.arange(3), np.ones(2)], reason="map")
        if ctx.attempt == 0:
            raise RuntimeError("first attempt fails after its change")
        return names

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(flaky))
    assert result.outputs["flaky"] == ["noop[0]", "noop[1]"]


async def test_other_items_under_the_same_keys_are_refused_not_a_crash():
    @stage(retries=1)
    async def flaky(ctx):
        # Items that can be neither pickled nor compared: a new attempt that
        # maps new objects cannot be shown to be the same request.
        await ctx.expand(noop, [Unpicklable(ctx.attempt)], reason="map")
        raise RuntimeError("fails after its change")

    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as caught:
            await rt.run(Pipeline("p").add(flaky))
    assert isinstance(caught.value.errors["flaky"], DuplicateStageError)
    kinds = [(r.kind, r.accepted, r.error_type) for r in caught.value.result.audit]
    assert kinds == [("expand", True, None), ("expand", False, "DuplicateStageError")]


async def test_names_whose_comparisons_raise_are_plain_names_to_the_run():
    released = trio.Event()

    @stage
    async def grow(ctx):
        name = await ctx.add_stage(
            noop.named(EvilName("child")), after=[EvilName("grow")], reason="r"
        )
        await ctx.add_edge(EvilName("grow"), EvilName("later"), reason="r")
        released.set()
        return name

    @stage
    async def gatekeeper(ctx):
        await released.wait()

    @stage
    async def later(ctx):
        return "later"

    pipeline = Pipeline("p").add(grow).add(gatekeeper).add(later, after=["gatekeeper"])
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs["grow"] == "child"
    assert type(result.outputs["grow"]) is str
    assert result.outputs["child"] == "child"
    assert set(result.dependencies["later"]) == {"gatekeeper", "grow"}


async def test_an_unexpected_error_while_applying_a_change_refuses_it_and_the_run_goes_on(
    monkeypatch,
):
    real_add_node = LiveGraph.add_node
    calls = 0

    def add_node_failing_on_the_second_call(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug while applying")
        return real_add_node(self, *args, **kwargs)

    pipeline, gate = _held()
    async with runtime() as rt:
        run = await rt.start(pipeline)
        monkeypatch.setattr(LiveGraph, "add_node", add_node_failing_on_the_second_call)
        version = run.snapshot().version
        with pytest.raises(InternalError, match="refused"):
            await run.expand(noop, [1, 2, 3], after=["hold"], reason="map three")
        # Applied completely or not at all: the first mapped stage is gone again.
        snapshot = run.snapshot()
        assert set(snapshot.states) == {"hold"}
        assert snapshot.version == version
        monkeypatch.setattr(LiveGraph, "add_node", real_add_node)
        await run.expand(noop, [1], after=["hold"], reason="map one")
        gate.set()
        result = await run.wait()
    assert result.ok
    assert [(r.accepted, r.error_type) for r in result.audit] == [
        (False, "InternalError"),
        (True, None),
    ]
    assert result.states["noop[0]"] is StageState.SUCCEEDED


async def test_a_supervisor_that_dies_still_answers_every_waiting_requester(
    monkeypatch, autojump_clock
):
    answers: dict[str, str] = {}
    asked = trio.Event()

    @stage
    async def boom(ctx):
        await asked.wait()
        return "boom"

    async def ask(run: Any, i: int) -> None:
        try:
            await run.add_stage(
                noop.named(f"n{i}"), after=["boom"], reason="asked while it dies"
            )
            answers[f"n{i}"] = "accepted"
        except (RunClosedError, InternalError) as exc:
            answers[f"n{i}"] = type(exc).__name__

    real_finish = RunCore.finish

    def finish_crashing_on_boom(self, node, *args, **kwargs):
        if node.name == "boom":
            raise RuntimeError("a bug in the supervisor")
        return real_finish(self, node, *args, **kwargs)

    monkeypatch.setattr(RunCore, "finish", finish_crashing_on_boom)
    with trio.move_on_after(3600) as deadline:
        async with runtime() as rt:
            run = await rt.start(Pipeline("p").add(boom))
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(ask, run, i)
                await trio.testing.wait_all_tasks_blocked()
                asked.set()
            with pytest.raises(InternalError):
                await run.wait()
            with pytest.raises(RunClosedError):
                await run.add_stage(noop.named("after"), reason="too late")
    assert not deadline.cancelled_caught  # nobody waited forever
    assert len(answers) == 20


def test_the_fixtures_are_what_they_claim():
    with pytest.raises(RuntimeError):
        _ = RaisingEq(1) == RaisingEq(1)
    with pytest.raises(TypeError):
        pickle.dumps(Unpicklable(1))
    with pytest.raises(RuntimeError):
        hash(EvilName("x"))
