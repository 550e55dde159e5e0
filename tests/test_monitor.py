"""The monitor: memory samples and throttled progress, off by default."""

from __future__ import annotations

import pytest
import trio

from dagvisor import Pipeline, Progress, runtime, stage
from dagvisor.errors import InvalidRequestError


@stage
async def sleepy(ctx):
    await trio.sleep(ctx.run_inputs["seconds"])
    return 1


@stage
async def adder(ctx):
    await ctx.add_stage(sleepy.named("late"), after=["adder"], reason="grow")


async def test_progress_is_reported_at_most_once_per_interval(autojump_clock):
    seen: list[Progress] = []
    pipeline = Pipeline("p").add(adder).add(sleepy, after=["adder"])
    async with runtime(on_progress=seen.append, monitor_interval=1.0) as rt:
        result = await rt.run(pipeline, inputs={"seconds": 2.5})
    # sleepy and the stage added at run time sleep 2.5 s side by side: the
    # run ends at t = 2.5, after samples at t = 0, 1 and 2.
    assert [round(p.elapsed, 3) for p in seen] == [0, 1, 2]
    assert seen[1].running == 2
    assert seen[1].added == 1
    assert seen[1].done == 1  # adder
    assert seen[1].pending == 0
    assert result.stats.duration == pytest.approx(2.5)
    assert all(p.rss > 0 for p in seen)
    assert result.stats.peak_rss is not None
    assert result.stats.peak_rss >= max(p.rss for p in seen)
    assert len(result.stats.memory) == len(seen) + 1  # and the final sample
    assert result.stats.added == 1


async def test_the_monitor_is_off_by_default():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(sleepy), inputs={"seconds": 0})
    assert result.stats.peak_rss is None
    assert result.stats.memory == ()


async def test_a_failing_progress_callback_warns_once_and_the_run_goes_on(
    autojump_clock,
):
    calls = []

    def broken(progress):
        calls.append(progress)
        raise ValueError("display gone")

    async with runtime(on_progress=broken, monitor_interval=1) as rt:
        with pytest.warns(RuntimeWarning, match="display gone"):
            result = await rt.run(Pipeline("p").add(sleepy), inputs={"seconds": 5})
    assert result.ok
    assert len(calls) == 1


async def test_latency_percentiles(autojump_clock):
    @stage
    async def sleepy_by_name(ctx):
        await trio.sleep(int(ctx.name[1:]))

    pipeline = Pipeline.chain(sleepy_by_name.named(f"s{i}") for i in range(1, 11))
    async with runtime() as rt:
        result = await rt.run(pipeline)
    latency = result.stats.latency
    assert latency is not None
    assert latency.max == pytest.approx(10)
    # A percentile is the nearest rank: sorted durations [1 .. 10], index
    # round(p / 100 * 9). Python rounds half to even: p50 is index round(4.5)
    # = 4, the 5th duration; p90 index round(8.1) = 8, the 9th.
    assert latency.p50 == pytest.approx(5)
    assert latency.p90 == pytest.approx(9)
    assert result.stats.duration == pytest.approx(55)
    assert result.stats.stages_per_second == pytest.approx(10 / 55)


async def test_bad_monitor_options():
    with pytest.raises(InvalidRequestError, match="monitor_interval"):
        async with runtime(monitor_interval=0):
            pass
    with pytest.raises(InvalidRequestError, match="on_progress"):
        async with runtime(on_progress=42):  # type: ignore[arg-type]
            pass


@stage
async def tick(ctx):
    await trio.sleep(1)


async def test_progress_counts_never_go_back_when_finished_stages_leave_memory(
    autojump_clock,
):
    # A streamed run keeps only a window of stages in memory: progress must
    # still count every stage done, never decrease, never pass the total.
    seen: list[Progress] = []
    stream = Pipeline.stream((tick.named(f"t{i}") for i in range(300)), window=8)
    async with runtime(on_progress=seen.append, monitor_interval=7.0) as rt:
        result = await rt.run(stream)
    assert len(seen) > 10
    dones = [p.done for p in seen]
    assert dones == sorted(dones)
    assert all(p.done <= p.stages for p in seen)
    assert all(p.done + p.running + p.pending == p.stages for p in seen)
    assert seen[-1].done >= 290
    assert seen[10].stages_per_second == pytest.approx(seen[10].done / seen[10].elapsed)
    assert result.stats.stages == 300
