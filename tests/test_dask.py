"""Stage bodies on a dask.distributed cluster (a real LocalCluster, 2 worker processes)."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from readiness import announce_and_wait, readiness, waits_for_the_test
from test_executors import crash_once, describe, square, total

from dagvisor import DaskExecutor, Pipeline, StageState, runtime, stage
from dagvisor.errors import RunFailed

distributed = pytest.importorskip("distributed", reason="needs the dask extra")

pytestmark = [
    pytest.mark.dask,
    # dask.distributed reports its own housekeeping as warnings; they are not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:distributed"),
]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture
async def ready(cluster):
    """Bodies that say they run and wait for the test (Dask cannot interrupt a
    running task); after the test, each is let go and has returned.

    Both workers are up first: a test before may have killed one, and a task
    the scheduler gives the only worker up waits for it however long the
    other takes to come back."""
    await trio.to_thread.run_sync(cluster.wait_for_workers, 2)
    async with readiness() as signals:
        yield signals


async def test_a_dynamic_fan_out_on_dask(cluster):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        squares = stage(name="square", executor=dask)(square)
        summed = stage(name="total", executor=dask)(total)

        @stage
        async def plan(ctx):
            names = await ctx.expand(squares, [1, 2, 3, 4], reason="one per item")
            await ctx.add_stage(summed, after=names, reason="fan in")

        async with runtime() as rt:
            result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["total"] == 30
    assert result.outputs["square[3]"] == 16


async def test_the_body_runs_on_a_worker_and_gets_a_view(cluster):
    with distributed.Client(cluster.scheduler_address) as client:
        dask = DaskExecutor(client)  # a client the caller owns
        async with runtime(executor=dask) as rt:
            result = await rt.run(Pipeline("p").add(stage(describe)))
        assert client.status == "running"  # not closed by the executor
    kind, pid = result.outputs["describe"]
    assert kind == "StageView"
    assert pid != os.getpid()


async def test_a_worker_killed_mid_stage_does_not_hang_the_run(cluster, tmp_path):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        once = stage(name="once", executor=dask)(crash_once)
        with trio.fail_after(120):  # a guard against a hang, not a timing assertion
            async with runtime() as rt:
                result = await rt.run(
                    Pipeline("p").add(once), inputs={"marker": str(tmp_path / "m")}
                )
    # The worker died; Dask ran the task again on a worker that lives.
    assert (tmp_path / "m").read_text() == "crashed once"
    assert result.outputs["once"] == "recovered"


async def test_cancelling_a_run_cancels_its_dask_futures(cluster, ready):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        slow = stage(name="slow", executor=dask)(waits_for_the_test)
        with trio.fail_after(60):  # a guard against a hang, not a timing assertion
            async with runtime() as rt:
                run = await rt.start(Pipeline("p").add(slow), inputs=ready.inputs)
                await ready.wait()  # the body runs, on its worker
                await run.cancel(reason="stop")
                with pytest.raises(RunFailed) as info:
                    await run.wait()
    assert info.value.result.status == "cancelled"


async def test_a_timeout_fails_the_stage_on_dask(cluster, ready):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        slow = stage(name="slow", executor=dask, timeout=1.0)(waits_for_the_test)
        with trio.fail_after(60):  # a guard against a hang, not a timing assertion
            async with runtime() as rt:
                with pytest.raises(RunFailed) as info:
                    await rt.run(Pipeline("p").add(slow), inputs=ready.inputs)
    assert type(info.value.errors["slow"]).__name__ == "StageTimeoutError"


def held_first_attempt(view):
    if view.attempt == 0:
        announce_and_wait(tuple(view.run_inputs["ready"]))  # until the test lets go
        return "late"
    return f"retry of {view.name}"


async def test_a_timed_out_attempt_is_retried_on_dask_as_on_processes(
    cluster, ready, mock_clock
):
    # Two stages, two worker threads: each first attempt times out and keeps
    # its thread until it really ends; the retries wait for a free slot
    # before their timers start, so they are not timed out by the queue.
    # Virtual time moves only when the test jumps it.
    async with DaskExecutor(cluster.scheduler_address) as dask:
        flaky = stage(name="flaky", executor=dask, timeout=1.5, retries=1)(
            held_first_attempt
        )
        pipeline = Pipeline("p").add(flaky.named("a")).add(flaky.named("b"))
        async with runtime() as rt:
            run = await rt.start(pipeline, inputs=ready.inputs)
            await ready.wait(2)  # both first attempts run, one per thread
            mock_clock.jump(2)  # past their timeout: they time out, threads held
            await trio.testing.wait_all_tasks_blocked()  # retries wait for a slot
            mock_clock.jump(2)  # past a retry's timeout, had its timer started
            await trio.testing.wait_all_tasks_blocked()
            await ready.release()  # the first attempts end: their slots are free
            result = await run.wait()
    assert result.outputs == {"a": "retry of a", "b": "retry of b"}


async def test_cancel_stage_on_dask_cancels_the_stage_and_keeps_its_slot(
    cluster, ready
):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        slow = stage(name="slow", executor=dask)(waits_for_the_test)

        @stage
        async def consumer(ctx):
            return "ran"

        with trio.fail_after(60):
            async with runtime() as rt:
                run = await rt.start(
                    Pipeline("p").add(slow).add(consumer, after=["slow"]),
                    inputs=ready.inputs,
                )
                await ready.wait()  # the body runs, on its worker
                await run.cancel_stage("slow", reason="stop")
                result = await run.wait()
        # The task is still running on its worker (Dask cannot interrupt
        # it): its slot stays taken until it really ends.
        stats = dask.statistics()
        assert stats.running == 1
        assert stats.slots == 2
    assert result.states["slow"] is StageState.CANCELLED
    assert result.states["consumer"] is StageState.CANCELLED


async def test_a_stage_name_dask_keys_could_not_hold_runs_on_dask(cluster):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        odd = stage(name="odd \ud800 name/é:1", executor=dask)(describe)
        with trio.fail_after(60):  # a guard against a hang, not a timing assertion
            async with runtime() as rt:
                result = await rt.run(Pipeline("p").add(odd))
    assert result.outputs["odd \ud800 name/é:1"][0] == "StageView"
