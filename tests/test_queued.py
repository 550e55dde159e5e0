"""Queued is not running: a stage waiting for an executor slot or a named limit.

A stage whose actor has started but whose first attempt waits for a thread,
a worker process, a Dask slot or a named limit is ``queued``; it is
``running`` from the moment it has its slot. The state, the events, the
progress, the timings and the journal keep the two apart. No test sleeps to
order anything: bodies in worker processes say when they run (readiness
signals), threads wait on events the test sets, and time is virtual.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest
import trio
import trio.testing
from conftest import copy_as_crashed
from readiness import readiness, waits_for_the_test

from dagvisor import (
    Journal,
    Pipeline,
    Progress,
    StageFinished,
    StageQueued,
    StageStarted,
    StageState,
    StageTiming,
    runtime,
    stage,
)
from dagvisor.__main__ import main as dagvisor_main
from dagvisor._cli_run import _progress_line
from dagvisor.errors import RunFailed, StageTimeoutError

QUEUED = StageState.QUEUED
RUNNING = StageState.RUNNING
SUCCEEDED = StageState.SUCCEEDED
CANCELLED = StageState.CANCELLED

check = stage(name="check", executor="process")(waits_for_the_test)

HOLD: dict[str, trio.Event] = {}
ATTEMPTS: dict[str, list[int]] = {}


@pytest.fixture(autouse=True)
def _fresh():
    HOLD.clear()
    ATTEMPTS.clear()


async def _held(ctx):
    ATTEMPTS.setdefault(ctx.name, []).append(ctx.attempt)
    if "release" in HOLD:
        HOLD["reached"].set()
        await HOLD["release"].wait()
    return ctx.name


held_db = stage(name="held", limit="db")(_held)

GATE: dict[str, threading.Event] = {}


@stage(name="holder")
def thread_holder(ctx):
    GATE["holder"].wait(30)
    return "held"


@stage(name="later")
def thread_later(ctx):
    return "later"


def _counts(run) -> Counter[StageState]:
    return Counter(run.snapshot().states.values())


# -- thirty process stages on two workers ----------------------------------------------


async def test_thirty_process_stages_on_two_workers_run_two_at_a_time():
    go = trio.Event()

    @stage
    async def plan(ctx):
        await go.wait()
        await ctx.expand(check, range(30), reason="thirty checks")

    seen: list[tuple[str, str]] = []
    started_at: dict[str, float] = {}
    most_running = 0

    async def follow(events) -> None:
        nonlocal most_running
        running: set[str] = set()
        async for event in events:
            match event:
                case StageQueued(stage=name):
                    seen.append(("queued", name))
                case StageStarted(stage=name, time=when):
                    seen.append(("started", name))
                    started_at[name] = when
                    running.add(name)
                    if name != "plan":
                        most_running = max(most_running, len(running - {"plan"}))
                case StageFinished(stage=name):
                    running.discard(name)

    with trio.fail_after(120):  # a guard against a hang, not a timing assertion
        async with (
            runtime(process_workers=2) as rt,
            readiness() as ready,
            trio.open_nursery() as nursery,
        ):
            run = await rt.start(Pipeline("qc").add(plan), inputs=ready.inputs)
            nursery.start_soon(follow, run.events())
            go.set()
            announced = 0
            rounds: list[Counter[StageState]] = []
            while announced < 30:
                announced += 2
                await ready.wait(announced)  # two more bodies run, in their workers
                await trio.testing.wait_all_tasks_blocked()
                rounds.append(_counts(run))
                await ready.release()
            result = await run.wait()
    for done, counts in enumerate(rounds):
        assert counts[RUNNING] == 2, counts
        assert counts[QUEUED] == 30 - 2 * done - 2, counts
        assert counts[SUCCEEDED] == 2 * done + 1, counts  # plan, and those let go
    assert most_running == 2
    mapped = [f"check[{i}]" for i in range(30)]
    assert all(result.states[name] is SUCCEEDED for name in mapped)
    for name in mapped:  # queued when spawned, started when it had a worker
        assert seen.index(("queued", name)) < seen.index(("started", name))
    # Timings separate the wait from the run: a stage started when it had
    # its worker, as its event said, in the order the events came.
    timings = {name: result.timings[name] for name in mapped}
    for name, timing in timings.items():
        assert timing.queued is not None
        assert timing.started == started_at[name]
        assert timing.queued <= timing.started <= timing.finished
        assert timing.duration == timing.finished - timing.started
        assert timing.queue_time == timing.started - timing.queued
    in_event_order = [started_at[name] for kind, name in seen if kind == "started"]
    assert in_event_order == sorted(in_event_order)
    assert result.timings["plan"].queued is None  # on the loop: never queues
    assert result.timings["plan"].queue_time == 0.0
    assert len(result.stats.queue_latency) == 30
    assert len(result.stats.latency) == 31


# -- a thread stage waiting for the only thread ----------------------------------------


async def test_a_stage_waiting_for_a_thread_is_queued_not_running(mock_clock):
    gate = threading.Event()
    progress = []

    @stage
    def holder(ctx):
        gate.wait(30)
        return "held the only thread"

    @stage(timeout=10)
    def quick(ctx):
        return "quick"

    async with runtime(
        thread_limit=1, on_progress=progress.append, monitor_interval=1
    ) as rt:
        run = await rt.start(Pipeline("p").add(holder))
        events = run.events()
        await trio.testing.wait_all_tasks_blocked()
        await run.add_stage(quick, reason="waits for the only thread")
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states == {"holder": RUNNING, "quick": QUEUED}
        mock_clock.jump(15)  # far past quick's timeout, had it started
        await trio.testing.wait_all_tasks_blocked()
        last = progress[-1]
        gate.set()
        result = await run.wait()
    assert (last.running, last.queued, last.pending, last.done) == (1, 1, 0, 0)
    assert result.outputs == {"holder": "held the only thread", "quick": "quick"}
    assert result.timings["quick"] == StageTiming(15.0, 15.0, queued=0.0)
    assert result.timings["quick"].queue_time == 15.0
    assert result.timings["quick"].duration == 0.0
    assert result.timings["holder"] == StageTiming(0.0, 15.0, queued=0.0)
    stats = result.stats
    assert stats.run_time == 15.0  # holder's 15 s; quick ran in no time
    assert stats.queue_time == 15.0  # quick's wait
    assert stats.latency.max == 15.0
    assert stats.queue_latency.max == 15.0
    quick_events = []
    while True:
        try:
            event = events.receive_nowait()
        except trio.EndOfChannel:
            break
        if getattr(event, "stage", None) == "quick":
            quick_events.append(event)
    assert quick_events == [
        StageQueued("quick", 0.0),
        StageStarted("quick", 15.0),
        StageFinished("quick", SUCCEEDED, 15.0),
    ]


async def test_an_async_stage_without_a_limit_never_queues():
    @stage
    async def plain(ctx):
        return 1

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(plain))
        events = run.events()
        result = await run.wait()
    assert result.timings["plain"].queued is None
    kinds = set()
    async for event in events:
        kinds.add(type(event))
    assert StageQueued not in kinds


# -- a named limit's wait is queue time, not run time ----------------------------------


async def test_a_queued_stages_timeout_does_not_include_its_wait(mock_clock):
    @stage(limit="db", timeout=10)
    async def quick(ctx):
        await trio.sleep(4)
        return "quick"

    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(limits={"db": 1}) as rt:
        run = await rt.start(Pipeline("p").add(held_db))
        await HOLD["reached"].wait()
        await run.add_stage(quick, reason="waits for the db")
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states["quick"] is QUEUED
        mock_clock.jump(15)  # past quick's timeout, had its timer started
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states["quick"] is QUEUED
        HOLD["release"].set()
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(4)
        result = await run.wait()
    assert result.outputs["quick"] == "quick"
    assert result.timings["quick"] == StageTiming(15.0, 19.0, queued=0.0)


async def test_a_stage_past_its_timeout_once_it_runs_still_times_out(mock_clock):
    @stage(limit="db", timeout=10)
    async def slow(ctx):
        await trio.sleep(20)

    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(limits={"db": 1}, on_failure="continue") as rt:
        run = await rt.start(Pipeline("p").add(held_db))
        await HOLD["reached"].wait()
        await run.add_stage(slow, reason="waits for the db")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(15)
        await trio.testing.wait_all_tasks_blocked()
        HOLD["release"].set()
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(10)
        with pytest.raises(RunFailed) as info:
            await run.wait()
    result = info.value.result
    assert isinstance(result.errors["slow"], StageTimeoutError)
    # Started at 15 s (when it had the limit), timed out 10 s later.
    assert result.timings["slow"] == StageTiming(15.0, 25.0, queued=0.0)


# -- cancelling a queued stage ---------------------------------------------------------


async def test_cancel_stage_on_a_queued_stage_cancels_it_and_frees_nothing_it_lacked(
    autojump_clock,
):
    ran: list[str] = []

    @stage(limit="db")
    async def waiting(ctx):
        ran.append(ctx.name)
        return "ran"

    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(limits={"db": 1}) as rt:
        run = await rt.start(Pipeline("p").add(held_db))
        await HOLD["reached"].wait()
        await run.add_stage(waiting.named("second"), reason="waits for the db")
        await run.add_stage(waiting.named("after"), after=["second"], reason="then")
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states["second"] is QUEUED
        await trio.sleep(3)  # it waits 3 s in the queue
        await run.cancel_stage("second", reason="not needed")
        await trio.testing.wait_all_tasks_blocked()
        states = run.snapshot().states
        assert states["second"] is CANCELLED
        assert states["held"] is RUNNING  # the holder kept its limit
        await run.add_stage(waiting.named("third"), reason="the limit still works")
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states["third"] is QUEUED
        HOLD["release"].set()
        result = await run.wait()
    assert ran == ["third"]  # the cancelled stage's body never ran
    assert result.states["after"] is CANCELLED
    timing = result.timings["second"]
    assert timing.started is None
    assert timing.queued == 0.0
    assert timing.queue_time == 3.0  # it waited until it was cancelled
    assert timing.duration == 0.0
    # The report gives the stage that never ran a lane with its wait alone.
    assert "<title>second: queued 3.0000 s</title>" in result.to_html()


async def test_cancel_stage_on_a_stage_queued_for_a_thread(mock_clock):
    gate = threading.Event()

    @stage
    def holder(ctx):
        gate.wait(30)
        return "held"

    @stage
    def never(ctx):
        return "never"

    async with runtime(thread_limit=1) as rt:
        run = await rt.start(Pipeline("p").add(holder))
        await trio.testing.wait_all_tasks_blocked()
        await run.add_stage(never, reason="waits for the only thread")
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel_stage("never", reason="not needed")
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states == {"holder": RUNNING, "never": CANCELLED}
        gate.set()
        result = await run.wait()
    assert result.outputs == {"holder": "held"}


# -- the journal: queue time kept, a queued stage never ran ----------------------------


async def test_the_journal_keeps_queue_time_and_show_tells_it(
    mock_clock, tmp_path, capsys
):
    path = tmp_path / "runs.db"
    GATE["holder"] = threading.Event()
    async with runtime(thread_limit=1, journal=path) as rt:
        run = await rt.start(Pipeline("p").add(thread_holder))
        await trio.testing.wait_all_tasks_blocked()
        await run.add_stage(thread_later, reason="waits for the only thread")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(15)
        GATE["holder"].set()
        live = await run.wait()
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
        kinds = [kind for _, kind, _ in journal.load(run.id).events]
    assert kinds.count("stage_queued") == 2
    assert kinds.count("stage_started") == 2
    offset = stored.timings["later"].started - live.timings["later"].started
    for name in ("holder", "later"):
        mine, theirs = live.timings[name], stored.timings[name]
        assert theirs.queued == pytest.approx(mine.queued + offset)
        assert theirs.queue_time == pytest.approx(mine.queue_time)
        assert theirs.duration == pytest.approx(mine.duration)
    assert stored.stats.queue_time == pytest.approx(15.0)
    assert dagvisor_main(["show", run.id, "--journal", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "2 stages queued for a slot or a limit, 15.000 s in all" in shown
    assert "later: 0.000 s (queued 15.000 s)" in shown


async def test_a_stage_queued_at_a_crash_never_ran_and_resumes_at_attempt_0(
    tmp_path,
):
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    waiter = stage(name="waiter", limit="db")(_held)
    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(journal=live, limits={"db": 1}) as rt:
        run = await rt.start(Pipeline("p").add(held_db).add(waiter))
        await HOLD["reached"].wait()
        await trio.testing.wait_all_tasks_blocked()
        await run.wait_committed()
        copy_as_crashed(live, crashed)  # what a process killed now leaves
        await run.cancel(reason="the process dies here")
    with Journal(crashed, readonly=True) as journal:
        stored = journal.result(run.id)
    assert stored.status == "interrupted"
    running = "held" if stored.states["held"] is RUNNING else "waiter"
    queued = "waiter" if running == "held" else "held"
    assert stored.states[queued] is QUEUED
    assert stored.timings[queued].started is None
    assert stored.stats.counts[QUEUED] == 1
    assert dagvisor_main(["show", run.id, "--journal", str(crashed)]) == 0
    HOLD.clear()
    ATTEMPTS.clear()
    async with runtime(journal=crashed, limits={"db": 1}) as rt:
        result = await rt.resume(run.id)
    assert result.ok
    assert {running: [1], queued: [0]} == ATTEMPTS  # the queued one never ran


# -- replace_pending and the report ----------------------------------------------------


async def test_replace_pending_keeps_a_queued_stage_and_replaces_what_waits_on_it(
    autojump_clock,
):
    @stage(limit="db")
    async def waiting(ctx):
        return "waited"

    @stage
    async def tail(ctx):
        return "old tail"

    @stage
    async def fresh(ctx):
        return "new tail"

    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(limits={"db": 1}) as rt:
        run = await rt.start(Pipeline("p").add(held_db))
        await HOLD["reached"].wait()
        await run.add_stage(waiting, reason="waits for the db")
        await run.add_stage(tail, after=["waiting"], reason="after it")
        await trio.testing.wait_all_tasks_blocked()
        assert run.snapshot().states["waiting"] is QUEUED
        # Its actor started: a queued stage is not pending, so it stays; the
        # stage waiting on it is pending, so it goes.
        await run.replace_pending(Pipeline("new").add(fresh), reason="a new ending")
        await trio.testing.wait_all_tasks_blocked()
        states = run.snapshot().states
        assert states["waiting"] is QUEUED
        assert "tail" not in states
        HOLD["release"].set()
        result = await run.wait()
    assert result.outputs == {"held": "held", "waiting": "waited", "fresh": "new tail"}


async def test_the_report_draws_the_wait_apart_from_the_run(autojump_clock):
    @stage(limit="db")
    async def waiting(ctx):
        await trio.sleep(2)
        return "waited"

    HOLD["reached"], HOLD["release"] = trio.Event(), trio.Event()
    async with runtime(limits={"db": 1}) as rt:
        run = await rt.start(Pipeline("p").add(held_db))
        await HOLD["reached"].wait()
        await run.add_stage(waiting, reason="waits for the db")
        await trio.sleep(5)
        HOLD["release"].set()
        result = await run.wait()
    page = result.to_html()
    hatched = re.findall(r'<rect class="queued"[^>]*><title>([^<]*)</title>', page)
    assert hatched == ["waiting: queued 5.0000 s"]  # only the stage that waited
    # Both queued for the limit; the holder had it at once.
    assert "<span>queued</span><b>2 stages, 5.000 s</b>" in page
    assert "<span>run time (all stages)</span><b>7.000 s</b>" in page


def test_the_command_lines_progress_line_counts_the_queued_apart():
    progress = Progress(
        run_id="r",
        elapsed=2.0,
        stages=10,
        done=3,
        running=2,
        pending=1,
        added=0,
        failed=0,
        stages_per_second=1.5,
        rss=2**20,
        queued=4,
    )
    assert "3/10 done, 2 running, 4 queued, 1 pending" in _progress_line(progress)
