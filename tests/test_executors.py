"""Where stage bodies run: threads and worker processes (trio-parallel)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_parallel
from readiness import readiness, waits_for_the_test

from dagvisor import Pipeline, StageState, StageView, runtime, stage
from dagvisor.errors import (
    InvalidStageError,
    NotPicklableError,
    RunFailed,
    StageTimeoutError,
)

# Bodies that run in worker processes: defined at module level, so a worker
# can import them by reference.


def square(view: StageView) -> int:
    return view.item * view.item


def total(view: StageView) -> int:
    return sum(view.inputs.values())


def describe(view: StageView) -> tuple[str, int]:
    return type(view).__name__, os.getpid()


def crash_once(view: StageView) -> str:
    marker = Path(view.run_inputs["marker"])
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(3)  # the worker process dies mid-stage
    return "recovered"


def crunch(n: int) -> int:
    return sum(i * i for i in range(n))


square_in_process = stage(name="square", executor="process")(square)
total_in_process = stage(name="total", executor="process")(total)


async def test_a_dynamic_fan_out_of_process_stages():
    @stage
    async def plan(ctx):
        names = await ctx.expand(square_in_process, [1, 2, 3], reason="one per item")
        await ctx.add_stage(total_in_process, after=names, reason="fan in")

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["square[2]"] == 9
    assert result.outputs["total"] == 14


async def test_a_process_body_gets_a_view_in_another_process():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(stage(executor="process")(describe)))
    kind, pid = result.outputs["describe"]
    assert kind == "StageView"
    assert pid != os.getpid()


async def test_the_runtime_default_executor_applies_to_plain_functions():
    plain = stage(describe)
    assert plain.executor is None
    async with runtime(executor="process") as rt:
        result = await rt.run(Pipeline("p").add(plain))
    assert result.outputs["describe"][1] != os.getpid()


async def test_a_worker_that_dies_fails_the_stage_and_a_retry_recovers(tmp_path):
    once = stage(name="once", executor="process")(crash_once)
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(
                Pipeline("p").add(once), inputs={"marker": str(tmp_path / "a")}
            )
        assert isinstance(info.value.errors["once"], trio_parallel.BrokenWorkerError)
        retried = stage(name="once", executor="process", retries=1)(crash_once)
        result = await rt.run(
            Pipeline("q").add(retried), inputs={"marker": str(tmp_path / "b")}
        )
    assert result.outputs["once"] == "recovered"


async def test_a_timeout_kills_the_worker():
    # The body waits for the test, which only lets it go once the run is
    # over: only killing its worker ends the attempt.
    slow = stage(name="slow", executor="process", timeout=0.5)(waits_for_the_test)
    with trio.fail_after(30):  # a guard against a hang, not a timing assertion
        async with runtime() as rt, readiness() as ready:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("p").add(slow), inputs=ready.inputs)
    assert isinstance(info.value.errors["slow"], StageTimeoutError)


async def test_cancelling_a_run_kills_its_process_stages():
    slow = stage(name="slow", executor="process")(waits_for_the_test)
    with trio.fail_after(30):  # a guard against a hang, not a timing assertion
        async with runtime() as rt, readiness() as ready:
            run = await rt.start(Pipeline("p").add(slow), inputs=ready.inputs)
            await ready.wait()  # the body runs, in its worker
            await run.cancel(reason="stop")
            with pytest.raises(RunFailed):
                await run.wait()  # the body is not let go: only a kill ends it
    assert run.done


async def test_an_input_that_cannot_be_pickled_is_named():
    @stage
    async def make_lock(ctx):
        return threading.Lock()

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(
                Pipeline("p").add(make_lock).add(total_in_process, after=["make_lock"])
            )
    error = info.value.errors["total"]
    assert isinstance(error, NotPicklableError)
    assert error.what == "input 'make_lock'"
    assert "executor='thread'" in str(error)
    assert info.value.result.states["make_lock"] is StageState.SUCCEEDED


def test_what_cannot_leave_the_process_is_refused_when_declared():
    def nested(view):
        return 1

    with pytest.raises(InvalidStageError, match="module level"):
        stage(executor="process")(nested)
    with pytest.raises(InvalidStageError, match="module level"):
        stage(name="l", executor="process")(lambda view: 1)

    async def asynchronous(ctx):
        return 1

    with pytest.raises(InvalidStageError, match="run_in"):
        stage(executor="process")(asynchronous)


async def test_run_in_sends_the_heavy_part_elsewhere():
    @stage
    async def mixed(ctx):
        in_process = await ctx.run_in("process", crunch, 1000)
        in_thread = await ctx.run_in("thread", crunch, 1000)
        await ctx.add_stage(
            stage(name="described", executor="process")(describe),
            reason="and the graph still changes",
        )
        return in_process, in_thread

    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(mixed))
    expected = sum(i * i for i in range(1000))
    assert result.outputs["mixed"] == (expected, expected)
    assert result.outputs["described"][0] == "StageView"


async def test_bad_executor_options():
    from dagvisor.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="executor"):
        async with runtime(executor="gpu"):  # type: ignore[arg-type]
            pass


async def test_a_dynamic_fan_out_of_thread_stages():
    square_in_thread = stage(name="square", executor="thread")(square)

    @stage
    async def plan(ctx):
        names = await ctx.expand(square_in_thread, [2, 3], reason="one per item")
        await ctx.add_stage(
            stage(name="total", executor="thread")(total), after=names, reason="fan in"
        )

    async with runtime(thread_limit=2) as rt:
        result = await rt.run(Pipeline("p").add(plan))
    assert result.outputs["total"] == 13


# -- timeouts and cancellation act on every executor ----------------------------------


async def test_a_thread_stage_past_its_timeout_fails_and_its_late_value_is_dropped(
    autojump_clock,
):
    gate = threading.Event()
    ran = []

    @stage(timeout=0.2)
    def slow(ctx):
        gate.wait(30)  # released by the test once virtual time is past the timeout
        return "late"

    @stage
    async def consumer(ctx):
        ran.append(dict(ctx.inputs))

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(slow).add(consumer, after=["slow"]))
        await trio.sleep(0.6)
        gate.set()
        with pytest.raises(RunFailed) as info:
            await run.wait()
    assert isinstance(info.value.errors["slow"], StageTimeoutError)
    assert info.value.result.states["consumer"] is StageState.UPSTREAM_FAILED
    assert "slow" not in info.value.result.outputs
    assert ran == []


async def test_a_thread_stage_that_timed_out_is_retried(mock_clock):
    # Virtual time moves only when the test jumps it: an autojumping clock
    # would also jump while the retry's thread runs, and time it out.
    gate = threading.Event()
    attempts = []

    @stage(timeout=0.2, retries=1)
    def slow_once(ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt == 0:
            gate.wait(30)
            return "late"
        return "fresh"

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(slow_once))
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.6)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        result = await run.wait()
    assert result.outputs["slow_once"] == "fresh"
    assert attempts == [0, 1]


async def test_cancel_stage_on_a_running_thread_stage_cancels_it(autojump_clock):
    gate = threading.Event()
    ran = []

    @stage
    def blocking(ctx):
        gate.wait(30)
        return "late"

    @stage
    async def consumer(ctx):
        ran.append(1)

    async with runtime() as rt:
        run = await rt.start(
            Pipeline("p").add(blocking).add(consumer, after=["blocking"])
        )
        await trio.sleep(1)
        await run.cancel_stage("blocking", reason="no longer needed")
        gate.set()
        result = await run.wait()
    assert result.states["blocking"] is StageState.CANCELLED
    assert result.states["consumer"] is StageState.CANCELLED
    assert "blocking" not in result.outputs
    assert ran == []


async def test_a_thread_stage_failing_after_its_timeout_is_a_timeout(autojump_clock):
    gate = threading.Event()

    @stage(timeout=0.2)
    def slow_then_fails(ctx):
        gate.wait(30)
        raise ValueError("too late to matter")

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(slow_then_fails))
        await trio.sleep(0.6)
        gate.set()
        with pytest.raises(RunFailed) as info:
            await run.wait()
    assert isinstance(info.value.errors["slow_then_fails"], StageTimeoutError)


async def test_an_async_stage_whose_last_await_ends_after_its_timeout_times_out(
    autojump_clock,
):
    @stage(timeout=1)
    async def shielded(ctx):
        with trio.CancelScope(shield=True):
            await trio.sleep(2)  # completes without raising, past the timeout
        return "late"

    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("p").add(shielded))
    assert isinstance(info.value.errors["shielded"], StageTimeoutError)


async def test_an_async_stage_cancelled_during_its_last_await_is_cancelled(
    autojump_clock,
):
    @stage
    async def shielded(ctx):
        with trio.CancelScope(shield=True):
            await trio.sleep(2)
        return "late"

    @stage
    async def consumer(ctx):
        return "ran"

    async with runtime() as rt:
        run = await rt.start(
            Pipeline("p").add(shielded).add(consumer, after=["shielded"])
        )
        await trio.sleep(1)
        await run.cancel_stage("shielded", reason="stop")
        result = await run.wait()
    assert result.states["shielded"] is StageState.CANCELLED
    assert result.states["consumer"] is StageState.CANCELLED


async def _wait_started(run, name: str) -> None:
    async for event in run.events():
        if type(event).__name__ == "StageStarted" and event.name == name:
            return


async def test_cancel_stage_kills_a_running_process_stage():
    slow = stage(name="slow", executor="process")(waits_for_the_test)

    @stage
    async def consumer(ctx):
        return "ran"

    with trio.fail_after(60):  # a guard against a hang, not a timing assertion
        async with runtime() as rt, readiness() as ready:
            run = await rt.start(
                Pipeline("p").add(slow).add(consumer, after=["slow"]),
                inputs=ready.inputs,
            )
            await ready.wait()  # the body runs, in its worker
            await run.cancel_stage("slow", reason="stop")
            result = await run.wait()  # the body is not let go: only a kill ends it
    assert result.states["slow"] is StageState.CANCELLED
    assert result.states["consumer"] is StageState.CANCELLED


# -- waiting for a slot is not part of the timeout -------------------------------------


async def test_a_thread_stage_waiting_for_a_slot_does_not_time_out(mock_clock):
    gate = threading.Event()

    @stage
    def holder(ctx):
        gate.wait(30)
        return "held the only thread"

    @stage(timeout=10)
    def quick(ctx):
        return "quick"

    async with runtime(thread_limit=1) as rt:
        run = await rt.start(Pipeline("p").add(holder))
        await trio.testing.wait_all_tasks_blocked()
        await run.add_stage(quick, reason="waits for the only thread")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(15)  # far past quick's timeout, had it started
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        result = await run.wait()
    assert result.outputs == {"holder": "held the only thread", "quick": "quick"}


async def test_a_process_stage_queued_for_a_worker_does_not_time_out(mock_clock):
    # One worker process, held by `holder` until the test lets it go:
    # `quick` waits for the worker far past its own timeout (in virtual
    # time, which moves only when the test jumps it); that wait is not its run.
    holder = stage(name="holder", executor="process")(waits_for_the_test)
    quick = stage(name="quick", executor="process", timeout=10)(describe)
    limiter = trio_parallel.current_default_worker_limiter()
    tokens = limiter.total_tokens
    limiter.total_tokens = 1
    try:
        async with runtime() as rt, readiness() as ready:
            run = await rt.start(Pipeline("p").add(holder), inputs=ready.inputs)
            await ready.wait()  # holder runs: the only worker is taken
            await run.add_stage(quick, reason="waits for the only worker")
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(15)  # far past quick's timeout, had its timer started
            await trio.testing.wait_all_tasks_blocked()
            await ready.release()
            result = await run.wait()
    finally:
        limiter.total_tokens = tokens
    assert result.outputs["holder"] == "released"
    assert result.outputs["quick"][0] == "StageView"


# -- a script without `if __name__ == "__main__":` -----------------------------------------

SCRIPT = """\
import sys
import trio
from dagvisor import Pipeline, runtime, stage


def work(view):
    return "worked"


crunch = stage(executor="process")(work)
with open(sys.argv[1], "a") as log:
    log.write("top level\\n")


async def main():
    async with runtime() as rt:
        result = await rt.run(Pipeline("p").add(crunch))
    print(result.outputs["work"])

"""


def _run_script(tmp_path: Path, text: str, *, as_module: bool = False):
    script = tmp_path / "pipeline_script.py"
    script.write_text(text)
    log = tmp_path / "log.txt"
    command = (
        [sys.executable, "-m", "pipeline_script", str(log)]
        if as_module
        else [sys.executable, str(script), str(log)]
    )
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    return done, log.read_text().splitlines()


IN_A_THREAD = """\
import threading
runner = threading.Thread(target=trio.run, args=(main,))
runner.start()
runner.join()
"""


@pytest.mark.parametrize(
    ("start", "as_module", "exit_code"),
    [
        ("trio.run(main)\n", False, 1),
        ("trio.run(main)\n", True, 1),
        # The run is in another thread than the script's (whose failure
        # Python prints, but does not make the exit code).
        (IN_A_THREAD, False, 0),
    ],
)
def test_a_process_stage_in_a_script_without_the_main_guard_fails_fast(
    tmp_path, start, as_module, exit_code
):
    done, log = _run_script(tmp_path, SCRIPT + start, as_module=as_module)
    assert done.returncode == exit_code, done.stderr
    assert "MissingMainGuardError" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr
    assert "pipeline_script.py" in done.stderr
    assert log == ["top level"]  # no worker ran the script again


def test_a_process_stage_in_a_guarded_script_runs(tmp_path):
    guarded = SCRIPT + 'if __name__ == "__main__":\n    trio.run(main)\n'
    done, log = _run_script(tmp_path, guarded)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "worked"
    assert log[0] == "top level"  # workers import the script, but run no pipeline


def test_a_worker_importing_an_unguarded_script_never_runs_the_pipeline_again(
    tmp_path,
):
    # The parent runs a thread-only pipeline, then starts a process of its
    # own: the child imports the script again and reaches runtime().
    text = SCRIPT.replace('executor="process"', 'executor="thread"') + (
        "trio.run(main)\n"
        "import multiprocessing\n"
        "child = multiprocessing.get_context('spawn').Process(target=print)\n"
        "child.start()\n"
        "child.join()\n"
        "print('child exit code', child.exitcode)\n"
    )
    done, _ = _run_script(tmp_path, text)
    assert "MissingMainGuardError" in done.stderr
    assert "child exit code 1" in done.stdout
    assert done.stdout.count("worked") == 1  # the pipeline ran once, in the parent
