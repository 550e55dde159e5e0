"""Signals: sent to a run, waited for by its stages, audited, journaled, given back.

Time is trio's `MockClock` where a test waits: no test sleeps for real.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import RunClosedError, RunFailed, StageTimeoutError
from dagvisor.supervisor import Journal

GOT: list[tuple[str, int, object]] = []
HOLD: dict[str, trio.Event] = {}
REACHED: dict[str, trio.Event] = {}


@pytest.fixture(autouse=True)
def _clean():
    GOT.clear()
    HOLD.clear()
    REACHED.clear()
    yield
    GOT.clear()
    HOLD.clear()
    REACHED.clear()


async def _reach(name: str) -> None:
    if name in REACHED:
        REACHED[name].set()
    if name in HOLD:
        await HOLD[name].wait()


@stage
async def gate(ctx):
    await _reach("gate")


@stage
async def take_two(ctx):
    first = await ctx.wait_signal("go")
    second = await ctx.wait_signal("go")
    return [first, second]


@stage
async def take_one(ctx):
    payload = await ctx.wait_signal("go")
    GOT.append((ctx.name, ctx.attempt, payload))
    await _reach(ctx.name)
    return payload


@stage(retries=1)
async def fail_once(ctx):
    payload = await ctx.wait_signal("go")
    GOT.append((ctx.name, ctx.attempt, payload))
    if ctx.attempt == 0:
        raise ValueError("the first attempt fails after taking its signal")
    return payload


@stage
async def fail_after_taking(ctx):
    payload = await ctx.wait_signal("go")
    GOT.append((ctx.name, ctx.attempt, payload))
    raise ValueError("fails with the signal in hand")


@stage
async def wait_briefly(ctx):
    with trio.move_on_after(5):
        return await ctx.wait_signal("go")
    return "timed out"


@stage(timeout=5)
async def wait_timed(ctx):
    return await ctx.wait_signal("go")


@stage
async def wait_forever(ctx):
    await _reach(ctx.name)
    return await ctx.wait_signal("go")


@stage
async def late(ctx):
    return await ctx.wait_signal("go")


@stage
async def signal_itself(ctx):
    await ctx.signal("note", {"from": ctx.name}, reason="a stage may signal too")
    return await ctx.wait_signal("note")


async def _blocked() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_signals_sent_before_anyone_waits_are_kept_first_in_first_out():
    HOLD["gate"] = trio.Event()
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(gate).add(take_two, after=["gate"]))
        await run.signal("go", {"n": 1}, reason="first")
        await run.signal("go", [2], reason="second")
        await run.signal("go", 3, reason="third, never taken")
        await _blocked()
        assert run.snapshot().states["take_two"] is StageState.PENDING
        HOLD["gate"].set()
        result = await run.wait()
    assert result.outputs["take_two"] == [{"n": 1}, [2]]
    kinds = [(r.kind, r.signal, r.carried, r.requester, r.reason) for r in result.audit]
    assert kinds == [
        ("signal", "go", '{"n":1}', "external", "first"),
        ("signal", "go", "[2]", "external", "second"),
        ("signal", "go", "3", "external", "third, never taken"),
    ]
    assert str(result.audit[0]).endswith("signal 'go' carrying {\"n\":1} - first")


async def test_each_signal_goes_to_one_waiter_the_one_waiting_longest():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(take_one.named("a")))
        await _blocked()  # a waits
        await run.add_stage(take_one.named("b"), reason="a second waiter")
        await _blocked()  # b waits too, after a
        await run.signal("go", 1, reason="one")
        await run.signal("go", 2, reason="two")
        result = await run.wait()
    assert result.outputs == {"a": 1, "b": 2}
    assert sorted(GOT) == [("a", 0, 1), ("b", 0, 2)]


async def test_a_stage_can_signal_its_own_run():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(signal_itself))
    assert result.outputs["signal_itself"] == {"from": "signal_itself"}
    assert result.audit[0].requester == "signal_itself"


async def test_a_retry_gets_the_signal_its_failed_attempt_took_before_newer_ones():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(fail_once))
        await run.signal("go", "first", reason="r")
        await run.signal("go", "second", reason="r")
        result = await run.wait()
    assert GOT == [("fail_once", 0, "first"), ("fail_once", 1, "first")]
    assert result.outputs["fail_once"] == "first"


async def test_a_signal_a_failed_stage_took_goes_to_the_next_waiter():
    async with runtime(on_failure="continue") as rt:
        run = await rt.start(Pipeline("p").add(fail_after_taking))
        await _blocked()  # fail_after_taking waits
        await run.add_stage(take_one.named("other"), reason="a second waiter")
        await _blocked()  # other waits too, after it
        await run.signal("go", "only", reason="one signal")
        with pytest.raises(RunFailed) as failed:
            await run.wait()
    result = failed.value.result
    # The failed stage's signal went back to the front: "other" took it.
    assert GOT == [("fail_after_taking", 0, "only"), ("other", 0, "only")]
    assert result.states["fail_after_taking"] is StageState.FAILED
    assert result.outputs["other"] == "only"


async def test_a_signal_taken_by_a_stage_that_succeeded_is_not_given_again():
    pipeline = Pipeline("p").add(take_one).add(wait_briefly, after=["take_one"])
    async with runtime() as rt:
        run = await rt.start(pipeline)
        await run.signal("go", "once", reason="r")
        result = await run.wait()
    assert result.outputs == {"take_one": "once", "wait_briefly": "timed out"}


def test_a_wait_that_times_out_takes_nothing_and_loses_nothing():
    async def main():
        pipeline = Pipeline("p").add(wait_briefly).add(late, after=["wait_briefly"])
        async with runtime() as rt:
            run = await rt.start(pipeline)
            await trio.sleep(10)  # virtual: wait_briefly gave up at 5
            assert run.snapshot().states["wait_briefly"] is StageState.SUCCEEDED
            await run.signal("go", "for the next", reason="r")
            result = await run.wait()
        assert result.outputs == {"wait_briefly": "timed out", "late": "for the next"}

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_stage_timeout_while_waiting_loses_no_signal():
    async def main():
        pipeline = Pipeline("p").add(wait_timed).add(wait_forever)
        async with runtime(on_failure="continue") as rt:
            run = await rt.start(pipeline)
            await trio.sleep(10)  # virtual: wait_timed timed out at 5
            await run.signal("go", "after the timeout", reason="r")
            with pytest.raises(RunFailed) as failed:
                await run.wait()
        result = failed.value.result
        assert isinstance(result.errors["wait_timed"], StageTimeoutError)
        assert result.outputs["wait_forever"] == "after the timeout"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_cancelling_a_waiting_stage_takes_nothing():
    pipeline = Pipeline("p").add(wait_forever).add(take_one.named("next"))
    REACHED["wait_forever"] = trio.Event()
    async with runtime() as rt:
        run = await rt.start(pipeline)
        await REACHED["wait_forever"].wait()
        await _blocked()
        await run.cancel_stage("wait_forever", reason="not needed")
        await _blocked()
        await run.signal("go", "kept", reason="r")
        result = await run.wait()
    assert result.states["wait_forever"] is StageState.CANCELLED
    assert result.outputs["next"] == "kept"


async def test_cancelling_the_run_answers_its_waiters_and_refuses_later_signals():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(wait_forever))
        await _blocked()
        await run.cancel(reason="stop")
        with pytest.raises(RunClosedError):
            await run.signal("go", 1, reason="too late")


async def test_signals_are_journaled_and_shown_by_the_audit_command(tmp_path):
    path = tmp_path / "runs.db"
    big = {"notes": "x" * 5000}
    async with runtime(journal=path) as rt:
        run = await rt.start(Pipeline("p").add(take_two))
        await run.signal("go", big, reason="a large payload")
        await run.signal("go", None, reason="an empty one")
        await run.wait()
    with Journal(path, readonly=True) as journal:
        result = journal.result(run.id)
        events = journal.load(run.id).events
    record = result.audit[0]
    assert record.kind == "signal"
    assert record.signal == "go"
    assert record.carried is not None
    assert len(record.carried) < 100
    assert "5,0" in record.carried  # its size, not its whole text
    taken = [payload for _, kind, payload in events if kind == "signal_taken"]
    assert [t["stage"] for t in taken] == ["take_two", "take_two"]
    sent = [payload for _, kind, payload in events if kind == "signal"]
    assert sent[0]["output"] == '{"notes":"' + "x" * 5000 + '"}'  # whole
    command = [
        sys.executable,
        "-m",
        "dagvisor",
        "audit",
        run.id,
        "--journal",
        str(path),
    ]
    shown = (await trio.run_process(command, capture_stdout=True)).stdout.decode()
    assert "signal by external: signal 'go' carrying" in shown
    assert "a large payload" in shown
    assert "x" * 200 not in shown


async def _crash_copy(run, live, crashed) -> None:
    await trio.testing.wait_all_tasks_blocked()
    await run.wait_committed()
    copy_as_crashed(live, crashed)


async def test_a_resumed_run_gets_again_what_unfinished_stages_took_and_not_the_rest(
    tmp_path,
):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    pipeline = (
        Pipeline("crash")
        .add(take_one.named("done"))
        .add(take_one.named("held"), after=["done"])
        .add(late, after=["held"])
    )
    HOLD["held"] = trio.Event()
    REACHED["held"] = trio.Event()
    async with runtime(journal=live) as rt:
        run = await rt.start(pipeline)
        await run.signal("go", "for done", reason="r")
        await run.signal("go", "for held", reason="r")
        await REACHED["held"].wait()
        await run.signal("go", "for late", reason="r")
        await _crash_copy(run, live, crashed)
        await run.cancel()
    assert GOT == [("done", 0, "for done"), ("held", 0, "for held")]
    HOLD.clear()
    GOT.clear()
    async with runtime(journal=crashed) as rt:
        result = await rt.resume(run.id)
    assert GOT == [("held", 1, "for held")]
    assert result.outputs == {
        "done": "for done",
        "held": "for held",
        "late": "for late",
    }
    assert [r.kind for r in result.audit] == ["signal"] * 3
