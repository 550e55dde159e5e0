"""Stage bodies on a dask.distributed cluster (a real LocalCluster, 2 worker processes)."""

from __future__ import annotations

import os

import pytest
import trio
from test_executors import crash_once, describe, sleeps, square, total

from dagvisor import DaskExecutor, Pipeline, runtime, stage
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


async def test_cancelling_a_run_cancels_its_dask_futures(cluster):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        slow = stage(name="slow", executor=dask)(sleeps)
        with trio.fail_after(60):
            async with runtime() as rt:
                run = await rt.start(Pipeline("p").add(slow))
                await trio.sleep(1)
                await run.cancel(reason="stop")
                with pytest.raises(RunFailed) as info:
                    await run.wait()
    assert info.value.result.status == "cancelled"


async def test_a_timeout_fails_the_stage_on_dask(cluster):
    async with DaskExecutor(cluster.scheduler_address) as dask:
        slow = stage(name="slow", executor=dask, timeout=1.0)(sleeps)
        with trio.fail_after(60):
            async with runtime() as rt:
                with pytest.raises(RunFailed) as info:
                    await rt.run(Pipeline("p").add(slow))
    assert type(info.value.errors["slow"]).__name__ == "StageTimeoutError"
