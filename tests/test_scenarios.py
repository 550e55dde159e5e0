"""The modification scenarios: interceptors, branching, swaps, mapping, events, audit."""

from __future__ import annotations

import pytest
import trio

from dagvisor import (
    NO_ITEM,
    GraphChanged,
    Pipeline,
    StageFinished,
    StageStarted,
    StageState,
    runtime,
    stage,
)
from dagvisor.errors import (
    DuplicateStageError,
    InvalidRequestError,
    RunFailed,
    StageStateError,
)


@stage
async def noop(ctx):
    return ctx.name


# -- interceptor injection -------------------------------------------------------


class Compensator:
    """Adds a compensating stage when a stage fails."""

    name = "compensator"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def before_stage(self, ctx):
        self.calls.append(("before", ctx.name))

    async def after_stage(self, ctx, value):
        self.calls.append(("after", ctx.name))

    async def on_error(self, ctx, exc):
        self.calls.append(("error", ctx.name))
        await ctx.add_stage(
            refund.named(f"refund:{ctx.name}"),
            reason=f"compensate for {type(exc).__name__}",
        )


@stage
async def refund(ctx):
    return "refunded"


@stage
async def charge(ctx):
    raise ConnectionError("card declined")


async def test_an_interceptor_adds_a_compensating_stage_on_error():
    compensator = Compensator()
    async with runtime(interceptors=[compensator], on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("orders").add(charge).add(noop, after=["charge"]))
    result = info.value.result
    assert result.outputs["refund:charge"] == "refunded"
    (record,) = result.audit
    assert record.requester == "interceptor:compensator"
    assert record.reason == "compensate for ConnectionError"
    assert ("error", "charge") in compensator.calls
    assert ("after", "refund:charge") in compensator.calls
    assert result.states["noop"] is StageState.UPSTREAM_FAILED


async def test_interceptors_need_async_hooks():
    class Sync:
        def before_stage(self, ctx):
            pass

    class Empty:
        pass

    with pytest.raises(InvalidRequestError, match="async"):
        async with runtime(interceptors=[Sync()]):
            pass
    with pytest.raises(InvalidRequestError, match="none of"):
        async with runtime(interceptors=[Empty()]):
            pass


async def test_an_interceptor_that_raises_fails_the_stage():
    class Strict:
        async def before_stage(self, ctx):
            if ctx.name == "noop":
                raise PermissionError("not allowed")

    async with runtime(interceptors=[Strict()]) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(noop))
    assert isinstance(info.value.errors["noop"], PermissionError)


# -- context-based branching -----------------------------------------------------


@stage
async def triage(ctx):
    patient = ctx.run_inputs["patient"]
    if patient["risk"] > 0.7:
        await ctx.add_stage(
            noop.named("icu_review"), after=["triage"], reason="high risk"
        )
        await ctx.add_stage(
            noop.named("notify_doctor"), after=["icu_review"], reason="escalate"
        )
    else:
        await ctx.add_stage(
            noop.named("ward_round"), after=["triage"], reason="routine"
        )
    return patient["risk"]


@pytest.mark.parametrize(
    ("risk", "branch"),
    [(0.9, {"triage", "icu_review", "notify_doctor"}), (0.2, {"triage", "ward_round"})],
)
async def test_a_stage_branches_on_the_data_it_sees(risk, branch):
    async with runtime() as rt:
        result = await rt.run(
            Pipeline("clinic").add(triage), inputs={"patient": {"risk": risk}}
        )
    assert set(result.states) == branch
    assert result.ok


# -- runtime pipeline swap -------------------------------------------------------


async def test_replace_pending_swaps_the_rest_and_keeps_completed_work(autojump_clock):
    @stage
    async def extract(ctx):
        return [1, 2, 3]

    @stage
    async def decide(ctx):
        await trio.sleep(1)
        new_tail = (
            Pipeline("v2")
            .add(extract)
            .add(noop.named("validate"), after=["extract"])
            .add(load_v2, after=["extract", "validate"])
        )
        await ctx.replace_pending(new_tail, reason="schema changed: load with v2")
        return "swapped"

    @stage
    async def load_v2(ctx):
        return sum(ctx.inputs["extract"])

    pipeline = (
        Pipeline("etl")
        .add(extract)
        .add(decide, after=["extract"])
        .add(noop.named("load_v1"), after=["extract"])
        .add(noop.named("report"), after=["load_v1", "decide"])
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs["load_v2"] == 6
    assert result.outputs["decide"] == "swapped"
    assert "report" not in result.states
    swap = next(r for r in result.audit if r.kind == "replace_pending")
    assert set(swap.removed) == {"report"}
    assert set(swap.added) == {"validate", "load_v2"}
    assert "extract" not in swap.added  # its work was kept, not redone
    # load_v1 had no reason to wait and ran before the swap.
    assert result.states["load_v1"] is StageState.SUCCEEDED


# -- mapping over runtime data ---------------------------------------------------


@stage
async def square(ctx):
    return ctx.item * ctx.item


@stage
async def collect(ctx):
    return sorted(ctx.inputs.values())


async def test_expand_maps_over_runtime_data_and_a_collector_fans_in():
    @stage
    async def plan(ctx):
        names = await ctx.expand(square, [3, 1, 2], reason="one per item")
        assert names == ["square[0]", "square[1]", "square[2]"]
        await ctx.add_stage(collect, after=names, reason="fan in")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["collect"] == [1, 4, 9]
    assert result.outputs["square[0]"] == 9


async def test_expand_with_a_key_function_names_stages_by_content():
    seen = {}

    @stage
    async def by_key(ctx):
        seen[ctx.key] = ctx.item
        return ctx.item["n"]

    @stage
    async def plan(ctx):
        return await ctx.expand(
            by_key,
            [{"id": "b", "n": 2}, {"id": "a", "n": 1}],
            key=lambda o: o["id"],
            reason="by id",
        )

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["plan"] == ["by_key[b]", "by_key[a]"]
    assert result.outputs["by_key[a]"] == 1
    assert seen == {"a": {"id": "a", "n": 1}, "b": {"id": "b", "n": 2}}


async def test_expand_refuses_duplicate_keys():
    @stage
    async def plan(ctx):
        with pytest.raises(InvalidRequestError, match="key"):
            await ctx.expand(square, [1, 2], key=lambda _: "same", reason="bad keys")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    # A request that reached the run is audited, refused ones included.
    (record,) = result.audit
    assert (record.kind, record.accepted) == ("expand", False)
    assert record.error_type == "InvalidRequestError"


async def test_nested_expansion_gives_unique_names():
    @stage
    async def inner(ctx):
        return ctx.item

    @stage
    async def outer(ctx):
        return await ctx.expand(inner, range(ctx.item), reason="nested")

    @stage
    async def plan(ctx):
        await ctx.expand(outer, [2, 3], reason="outer")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["outer[0]"] == ["inner[0.0]", "inner[0.1]"]
    assert result.outputs["outer[1]"] == ["inner[1.0]", "inner[1.1]", "inner[1.2]"]
    assert result.outputs["inner[1.2]"] == 2
    assert result.ok


async def test_stages_not_mapped_have_no_item():
    @stage
    async def plain(ctx):
        return (ctx.item is NO_ITEM, ctx.key)

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plain))
    assert result.outputs["plain"] == (True, None)


# -- idempotency, removal, cancellation -----------------------------------------


async def test_an_identical_re_add_by_the_same_requester_is_idempotent():
    @stage
    async def adder(ctx):
        first = await ctx.add_stage(noop.named("x"), after=["adder"], reason="add x")
        again = await ctx.add_stage(
            noop.named("x"), after=["adder"], reason="add x again"
        )
        names = await ctx.expand(square, [1, 2], reason="map")
        names_again = await ctx.expand(square, [1, 2], reason="map again")
        return first, again, names, names_again

    @stage
    async def other(ctx):
        with pytest.raises(DuplicateStageError):
            await ctx.add_stage(
                noop.named("x"), after=["adder"], reason="someone else's x"
            )

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(adder).add(other, after=["adder"]))
    first, again, names, names_again = result.outputs["adder"]
    assert first == again == "x"
    assert names == names_again
    kinds = [
        (r.kind, r.accepted, r.version_after - r.version_before) for r in result.audit
    ]
    assert kinds == [
        ("add_stage", True, 1),
        ("add_stage", True, 0),
        ("expand", True, 1),
        ("expand", True, 0),
        ("add_stage", False, 0),
    ]


async def test_cancel_stage_interrupts_a_running_stage(autojump_clock):
    @stage
    async def long(ctx):
        await trio.sleep(100)

    keep_alive = trio.Event()

    @stage
    async def held(ctx):
        await keep_alive.wait()

    async with runtime() as rt:
        run = await rt.start(
            Pipeline("p").add(long).add(noop, after=["long"]).add(held)
        )
        await trio.sleep(1)
        await run.cancel_stage("long", reason="taking too long")
        with pytest.raises(StageStateError):
            await run.remove_stage("long", reason="already started")
        keep_alive.set()
        result = await run.wait()
    assert result.states["long"] is StageState.CANCELLED
    assert result.states["noop"] is StageState.CANCELLED
    assert result.timings["long"].duration == pytest.approx(1)


async def test_a_change_needs_a_reason():
    @stage
    async def adder(ctx):
        with pytest.raises(InvalidRequestError, match="reason"):
            await ctx.add_stage(noop, reason="  ")

    async with runtime() as rt:
        await rt.run(Pipeline("p").add(adder))


# -- events and the audit trail --------------------------------------------------


async def test_events_report_starts_finishes_and_changes_in_order():
    gate = trio.Event()

    @stage
    async def first(ctx):
        await gate.wait()
        await ctx.add_stage(noop, after=["first"], reason="one more")

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(first))
        events = run.events()
        gate.set()
        seen = [event async for event in events]
        await run.wait()
    summary = [
        (type(e).__name__, getattr(e, "stage", None) or e.record.kind) for e in seen
    ]
    assert summary == [
        ("GraphChanged", "add_stage"),
        ("StageFinished", "first"),
        ("StageStarted", "noop"),
        ("StageFinished", "noop"),
    ]
    assert isinstance(seen[0], GraphChanged)
    assert isinstance(seen[2], StageStarted)
    assert isinstance(seen[3], StageFinished)
    assert seen[3].state is StageState.SUCCEEDED


async def test_audit_queries_by_time_and_by_stage(autojump_clock):
    @stage
    async def adder(ctx):
        for i in range(5):
            await ctx.add_stage(
                noop.named(f"n{i}"), after=["adder"], reason=f"step {i}"
            )
            await trio.sleep(1)

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(adder))
        await run.wait()
        log = run.audit()
    assert len(log) == 5
    assert [r.reason for r in log.for_stage("n3")] == ["step 3"]
    assert [r.seq for r in log.for_stage("adder")] == [0, 1, 2, 3, 4]
    walls = [r.wall_time for r in log]
    assert [r.seq for r in log.between(walls[1], walls[3])] == [1, 2, 3]
    assert [r.seq for r in log.between(since=walls[4])] == [4]
    assert [r.monotonic_time for r in log] == [0, 1, 2, 3, 4]
    assert "step 2" in str(log[2])
