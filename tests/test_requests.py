"""The request path: a requester that gives up never harms the supervisor."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dagvisor import Pipeline, StageState, runtime, stage


@stage
async def noop(ctx):
    return ctx.name


async def test_a_requester_cancelled_while_waiting_for_its_answer(autojump_clock):
    # The request is queued behind others; its requester gives up before the
    # answer. The supervisor still applies it (it was sent) and the run ends well.
    gate = trio.Event()

    @stage
    async def impatient(ctx):
        await gate.wait()
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before the answer can arrive
            await ctx.add_stage(noop.named("late"), reason="asked, then gave up")
        return scope.cancelled_caught

    @stage
    async def busy(ctx):
        await gate.wait()
        for i in range(50):
            await ctx.add_stage(noop.named(f"n{ctx.name}{i}"), reason="load")

    pipeline = Pipeline("p").add(impatient)
    for i in range(5):
        pipeline = pipeline.add(busy.named(f"b{i}"))
    async with runtime() as rt:
        run = await rt.start(pipeline)
        gate.set()
        result = await run.wait()
    assert result.ok
    assert result.outputs["impatient"] is True
    assert all(state is StageState.SUCCEEDED for state in result.states.values())
    assert [r.seq for r in result.audit] == list(range(len(result.audit)))


async def test_a_cancelled_requester_whose_request_was_already_sent(autojump_clock):
    @stage
    async def asks_then_cancels(ctx):
        with trio.move_on_after(0):
            await ctx.add_stage(noop.named("x"), reason="race the deadline")
        return "survived"

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(asks_then_cancels))
    assert result.outputs["asks_then_cancels"] == "survived"
    # Sent before the cancellation was noticed: applied and audited, or not
    # sent at all; never half-applied.
    if result.audit:
        assert result.states["x"] is StageState.SUCCEEDED
    else:
        assert "x" not in result.states


async def test_answering_a_requester_that_gave_up_is_harmless():
    # The supervisor's side of the contract: it answers with send_nowait and
    # must never fail, block or crash because the requester went away.
    from types import MappingProxyType

    import outcome

    from dagvisor.actors._env import RunEnv
    from dagvisor.actors._messages import CancelRun, ReplySlot
    from dagvisor.actors._requests import ask

    inbox_send, inbox_receive = trio.open_memory_channel(10)
    env = RunEnv(
        run_id="r",
        outbox=inbox_send,
        run_inputs=MappingProxyType({}),
        thread_limiter=trio.CapacityLimiter(1),
        cleanup_timeout=1.0,
    )
    scope = trio.CancelScope()

    async def requester():
        with scope:
            await ask(env, CancelRun(reason="r", requester="t", reply=ReplySlot()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(requester)
        await trio.testing.wait_all_tasks_blocked()  # parked, waiting for the answer
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()  # it gave up
        request = inbox_receive.receive_nowait()
        request.reply.send_nowait(outcome.Value("late answer"))  # must not raise
    assert scope.cancelled_caught


async def test_a_change_during_a_slow_fail_fast_shutdown_is_answered_at_once(
    autojump_clock,
):
    # A stage whose cleanup takes 5 s keeps a failing run from ending; a
    # change requested meanwhile must be refused at once, not after 5 s.
    from contextlib import asynccontextmanager

    from dagvisor.errors import RunClosedError, RunFailed

    @asynccontextmanager
    async def slow_cleanup():
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(5)

    @stage
    async def holds(ctx):
        await ctx.enter(slow_cleanup())
        await trio.sleep_forever()

    @stage
    async def fails(ctx):
        await trio.sleep(1)
        raise ValueError("stop")

    answered_at = []
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(holds).add(fails))
        await trio.sleep(2)  # the run is failing; holds is cleaning up until t = 6
        assert not run.done
        try:
            await run.add_stage(noop.named("late"), reason="during shutdown")
        except RunClosedError:
            answered_at.append(trio.current_time())
        try:
            await run.wait()
        except RunFailed as exc:
            result = exc.result
    assert answered_at == [2.0]
    assert result.audit[-1].error_type == "RunClosedError"
    assert result.stats.duration == 6.0


async def test_a_swap_leaves_no_edge_to_a_removed_stage():
    # "late" was cancelled while it still waited for pending "mid"; swapping
    # the pending stages out removes "mid", and "late" must not keep naming it.
    gate = trio.Event()

    @stage
    async def hold(ctx):
        await gate.wait()

    pipeline = (
        Pipeline("p")
        .add(hold)
        .add(noop.named("mid"), after=["hold"])
        .add(noop.named("late"), after=["mid"])
    )
    async with runtime(on_failure="continue") as rt:
        run = await rt.start(pipeline)
        await run.cancel_stage("late", reason="not needed")
        await run.replace_pending(
            Pipeline("swap").add(hold).add(noop.named("new"), after=["hold"]),
            reason="swap",
        )
        gate.set()
        result = await run.wait()
    assert "mid" not in result.states
    assert result.dependencies["late"] == ()
    assert result.states["late"] is StageState.CANCELLED
    assert result.outputs["new"] == "new"


async def test_a_reply_given_before_the_requester_waits_is_returned_or_raised():
    # A requester whose send waited for room may find its answer there.
    import outcome

    from dagvisor.actors._messages import ReplySlot
    from dagvisor.errors import CycleError

    slot = ReplySlot()
    slot.send_nowait(outcome.Value("s1"))
    assert slot.answered
    assert await slot.wait() == "s1"
    refused = ReplySlot()
    refused.send_nowait(outcome.Error(CycleError(["a", "b", "a"])))
    with pytest.raises(CycleError):
        await refused.wait()
    with pytest.raises(RuntimeError, match="answered twice"):
        refused.send_nowait(outcome.Value(None))


async def test_a_waiting_requester_gets_the_answer_itself():
    import outcome

    from dagvisor.actors._messages import ReplySlot
    from dagvisor.errors import CycleError

    slot, refused = ReplySlot(), ReplySlot()
    got: dict[ReplySlot, object] = {}

    async def wait_for(slot: ReplySlot) -> None:
        try:
            got[slot] = await slot.wait()
        except CycleError as error:
            got[slot] = error

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for, slot)
        nursery.start_soon(wait_for, refused)
        await trio.testing.wait_all_tasks_blocked()
        slot.send_nowait(outcome.Value("s1"))
        error = CycleError(["a", "b", "a"])
        refused.send_nowait(outcome.Error(error))
    assert got == {slot: "s1", refused: error}


def test_an_add_stage_request_made_fast_equals_the_constructed_one():
    import attrs

    from dagvisor.actors._messages import AddStage, ReplySlot, add_stage_request
    from dagvisor.errors import CycleError

    refused = CycleError(["a", "a"])
    for ref, error in (({"name": "s"}, None), (None, refused)):
        made = add_stage_request(noop, ("a",), ("b", "c"), "why", "me", ref, error)
        constructed = AddStage(
            spec=noop,
            after=("a",),
            before=("b", "c"),
            reason="why",
            requester="me",
            reply=made.reply,
            ref=ref,
            refused=error,
        )
        assert made == constructed
        assert attrs.asdict(made, recurse=False) == attrs.asdict(
            constructed, recurse=False
        )
        assert type(made.reply) is ReplySlot
        assert not made.reply.answered
