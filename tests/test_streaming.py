"""Streamed pipelines: stages pulled as the run advances, finished ones dropped."""

from __future__ import annotations

import pytest

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import InvalidRequestError, RunFailed, UnknownStageError


@stage
async def first(ctx):
    return 1


@stage
async def step(ctx):
    return sum(ctx.inputs.values()) + 1


def chain(n):
    yield first.named("s0")
    for i in range(1, n):
        yield step.named(f"s{i}")


async def test_a_streamed_chain_keeps_only_a_window_in_the_graph():
    n, window = 20_000, 100
    async with runtime() as rt:
        run = await rt.start(Pipeline.stream(chain(n), name="deep", window=window))
        largest = 0
        async for _ in run.events():
            largest = max(largest, len(run.snapshot().states))
        result = await run.wait()
    assert result.outputs[f"s{n - 1}"] == n
    assert result.stats.stages == n
    assert result.stats.counts[StageState.SUCCEEDED] == n
    assert largest <= 3 * window
    assert len(result.states) <= 3 * window  # the rest was dropped as it finished


async def test_streamed_pairs_name_their_dependencies():
    def band():
        yield first.named("b0")
        yield step.named("b1"), ["b0"]
        for i in range(2, 50):
            yield step.named(f"b{i}"), [f"b{i - 1}", f"b{i - 2}"]

    async with runtime() as rt:
        result = await rt.run(Pipeline.stream(band(), window=10))
    fib = [1, 2]
    for _ in range(2, 50):
        fib.append(fib[-1] + fib[-2] + 1)
    assert result.outputs["b49"] == fib[49]


async def test_a_dependency_on_a_dropped_stage_fails_the_run_clearly():
    def reaching_back():
        yield from chain(100)
        yield step.named("late"), ["s0"]

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline.stream(reaching_back(), window=10))
    error = info.value.errors["late"]
    assert isinstance(error, UnknownStageError)
    assert "may only depend on the last 10 stages" in str(error)


@pytest.mark.parametrize(
    ("policy", "s0"),
    [("continue", StageState.SUCCEEDED), ("cancel", StageState.CANCELLED)],
)
async def test_an_iterable_that_raises_fails_the_run(policy, s0):
    def broken():
        yield first.named("s0")
        raise OSError("source went away")

    async with runtime(on_failure=policy) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline.stream(broken()))
    assert isinstance(info.value.errors["<stream>"], OSError)
    # Fail-fast stops the run before s0 could run; continue lets it finish.
    assert info.value.result.states["s0"] is s0


async def test_a_bad_item_fails_the_run():
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline.stream([first, "not a stage"]))  # type: ignore[list-item]
    assert isinstance(info.value.errors["<stream>"], InvalidRequestError)
    assert "not a str" in str(info.value.errors["<stream>"])


async def test_a_streamed_pipeline_runs_once():
    streamed = Pipeline.stream(chain(3))
    async with runtime() as rt:
        await rt.run(streamed)
        with pytest.raises(ValueError, match="already run"):
            await rt.run(streamed)


async def test_replace_pending_ends_the_stream():
    @stage
    async def swapper(ctx):
        await ctx.replace_pending(
            Pipeline("tail").add(first.named("end")), reason="stop here"
        )

    def items():
        yield swapper
        for i in range(1000):
            yield step.named(f"s{i}")

    async with runtime() as rt:
        result = await rt.run(Pipeline.stream(items(), window=20))
    assert result.outputs["end"] == 1
    assert result.stats.stages < 100


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        Pipeline.stream([], window=1)
