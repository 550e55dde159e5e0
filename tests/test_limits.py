"""Named concurrency limits: ``@stage(limit="db")`` and ``runtime(limits={"db": 4})``.

At most N stages holding a limit run at once, across every run of the
runtime; the wait for it is queue time, never part of a stage's timeout;
a limit the runtime does not define is refused when the run starts or the
stage is added (`UnknownLimitError`), never when it would run. Bodies count
themselves in and out: the count is exact, and time is virtual.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from dagvisor import Journal, Pipeline, StageState, runtime, stage
from dagvisor.errors import RunFailed, UnknownLimitError

INSIDE: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _fresh():
    INSIDE.clear()


async def _counted(ctx):
    """A body that counts how many bodies of its limit are inside at once."""
    INSIDE["now"] = INSIDE.get("now", 0) + 1
    INSIDE["most"] = max(INSIDE.get("most", 0), INSIDE["now"])
    await trio.sleep(1)
    INSIDE["now"] -= 1
    return ctx.name


query = stage(name="query", limit="db")(_counted)


@stage
async def boom(ctx):
    raise ValueError("fails")


async def test_a_limit_of_two_over_ten_stages_in_two_runs(autojump_clock):
    results = {}

    async def one_run(rt, label: str) -> None:
        pipeline = Pipeline(label)
        for i in range(5):
            pipeline = pipeline.add(query.named(f"{label}{i}"))
        results[label] = await rt.run(pipeline)

    async with runtime(limits={"db": 2}) as rt, trio.open_nursery() as nursery:
        nursery.start_soon(one_run, rt, "a")
        nursery.start_soon(one_run, rt, "b")
    assert INSIDE["most"] == 2  # never more, across both runs
    assert trio.current_time() == 5.0  # ten seconds of work, two at a time
    # Each stage ran 1 s; the rest of its time in the runs was queue time.
    for result in results.values():
        assert result.stats.latency.p50 == 1.0
        assert result.stats.latency.max == 1.0
        assert all(t.duration == 1.0 for t in result.timings.values())
    queued = sorted(
        t.queue_time for result in results.values() for t in result.timings.values()
    )
    assert queued == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    total = sum(result.stats.queue_time for result in results.values())
    assert total == 20.0


@given(
    size=st.integers(1, 4),
    runs=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    other=st.integers(0, 3),
)
def test_a_limit_is_never_exceeded(size: int, runs: list[int], other: int) -> None:
    counts: dict[str, int] = {"now": 0, "most": 0, "free": 0, "free_most": 0}

    async def limited(ctx):
        counts["now"] += 1
        counts["most"] = max(counts["most"], counts["now"])
        await trio.sleep(1)
        counts["now"] -= 1

    async def free(ctx):  # another limit's stages are not held back by this one
        counts["free"] += 1
        counts["free_most"] = max(counts["free_most"], counts["free"])
        await trio.sleep(1)
        counts["free"] -= 1

    bound = stage(name="bound", limit="pool")(limited)
    elsewhere = stage(name="elsewhere", limit="other")(free)

    async def main() -> None:
        async with (
            runtime(limits={"pool": size, "other": 100}) as rt,
            trio.open_nursery() as nursery,
        ):
            for index, count in enumerate(runs):
                pipeline = Pipeline(f"r{index}")
                for i in range(count):
                    pipeline = pipeline.add(bound.named(f"s{i}"))
                for i in range(other):
                    pipeline = pipeline.add(elsewhere.named(f"o{i}"))
                nursery.start_soon(rt.run, pipeline)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    total = sum(runs)
    assert counts["most"] == min(size, total)
    assert counts["free_most"] == (other * len(runs) if other else 0)


async def test_a_limit_holds_thread_stages_back_before_they_take_a_thread():
    inside = {"now": 0, "most": 0}
    lock = threading.Lock()
    gate = threading.Event()

    def work(ctx):
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        gate.wait(30)
        with lock:
            inside["now"] -= 1
        return ctx.name

    bound = stage(name="work", limit="api")(work)
    pipeline = Pipeline("t")
    for i in range(8):
        pipeline = pipeline.add(bound.named(f"w{i}"))
    async with runtime(limits={"api": 1}, thread_limit=8) as rt:
        run = await rt.start(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        counts = Counter(run.snapshot().states.values())
        gate.set()
        result = await run.wait()
    assert counts == {StageState.RUNNING: 1, StageState.QUEUED: 7}
    assert inside["most"] == 1
    assert all(state is StageState.SUCCEEDED for state in result.states.values())


# -- an unknown limit is refused when the run starts or the stage is added --------------


async def test_a_run_naming_an_unknown_limit_is_refused_before_it_starts(tmp_path):
    path = tmp_path / "runs.db"
    ran: list[str] = []

    @stage
    async def first(ctx):
        ran.append("first")

    pipeline = Pipeline("p").add(first).add(query.named("q"), after=["first"])
    async with runtime(journal=path, limits={"api": 1}) as rt:
        with pytest.raises(UnknownLimitError) as info:
            await rt.run(pipeline)
    assert (info.value.limit, info.value.stage) == ("db", "q")
    assert "runtime(limits={'db': N})" in str(info.value)
    assert "'api'" in str(info.value)  # the limits it does define
    assert isinstance(info.value, LookupError)
    assert ran == []  # nothing ran
    assert not path.exists()  # nothing was written


async def test_a_stage_naming_an_unknown_limit_is_refused_when_added():
    outcomes: dict[str, str] = {}

    @stage
    async def grow(ctx):
        attempts = {
            "add_stage": lambda: ctx.add_stage(query.named("q1"), reason="r"),
            "expand": lambda: ctx.expand(query, [1, 2], reason="r"),
            "replace_pending": lambda: ctx.replace_pending(
                Pipeline("v2").add(query.named("q2")), reason="r"
            ),
        }
        for kind, attempt in attempts.items():
            try:
                await attempt()
            except UnknownLimitError as exc:
                outcomes[kind] = exc.limit
        try:
            async with ctx.changes(reason="a set") as batch:
                batch.add_stage(query.named("q3"))
        except UnknownLimitError as exc:
            outcomes["change_set"] = exc.limit

    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(grow))
        with pytest.raises(UnknownLimitError):
            await run.add_stage(query.named("q4"), reason="from outside")
        result = await run.wait()
    assert outcomes == dict.fromkeys(
        ("add_stage", "expand", "replace_pending", "change_set"), "db"
    )
    refused = [record for record in result.audit if not record.accepted]
    assert [record.error_type for record in refused] == ["UnknownLimitError"] * 5
    assert set(result.states) == {"grow"}


async def test_a_streamed_stage_naming_an_unknown_limit_fails_the_stream():
    @stage
    async def plain(ctx):
        return 1

    specs = [plain.named("s0"), query.named("s1"), plain.named("s2")]
    async with runtime() as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline.stream(iter(specs), window=10))
    assert isinstance(info.value.errors["s1"], UnknownLimitError)


async def test_a_resume_without_the_limit_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("p").add(boom).add(query.named("q"), after=["boom"])
    async with runtime(journal=path, limits={"db": 1}) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    run_id = info.value.result.run_id
    with Journal(path, readonly=True) as journal:
        before = journal.events(run_id)
    async with runtime(journal=path) as rt:
        with pytest.raises(UnknownLimitError) as refused:
            await rt.resume(run_id)
    assert refused.value.limit == "db"
    with Journal(path, readonly=True) as journal:
        assert journal.events(run_id) == before


async def test_the_limit_is_journaled_and_read_back(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path, limits={"db": 1}) as rt:
        result = await rt.run(Pipeline("p").add(query.named("q")))
    with Journal(path, readonly=True) as journal:
        record = journal.load(result.run_id).pipeline
    assert [spec.get("limit") for spec in record["specs"]] == ["db"]
    assert query.named("q").limit == "db"
    assert query.options(limit=None).limit is None
    assert query.options(retries=2).limit == "db"
