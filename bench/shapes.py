"""Graph shapes other than a chain, change throughput and cycle-check cost.

    python bench/shapes.py                      # every measure, a few minutes
    python bench/shapes.py --only fanout,changes --json out.json

Measures:
  fanout   1 -> N -> 1, declared up front and mapped at run time (ctx.expand)
  lattice  a diamond lattice: layers of W stages, each after two of the layer before
  changes  1,000 concurrent stages each requesting changes: changes/s, latency
  cycle    one new edge in graphs of up to 1,000,000 stages: check + reorder time
  cpu      1,000 stages of ~5 ms pure Python on loop, thread, process and Dask
  shared   one large output (a dict of lists of 160,000 ints) read by 34 mapped stages
  readers  a 20,000-stage chain followed by event readers that stop, never read, or read all
  insert   adding a stage before an early stage of a 100,000-stage chain vs at its tail
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
import trio.testing
from _common import emit, machine, progress

from dagvisor import Pipeline, runtime, stage
from dagvisor.supervisor._graph import LiveGraph


@stage
async def source(ctx: Any) -> int:
    return 1


@stage
async def leaf(ctx: Any) -> int:
    return 1


@stage
async def sink(ctx: Any) -> int:
    return len(ctx.inputs)


async def _timed_run(pipeline: Pipeline) -> tuple[float, Any]:
    async with runtime() as rt:
        start = time.perf_counter()
        result = await rt.run(pipeline)
        return time.perf_counter() - start, result


def _fanout_row(shape: str, n: int, elapsed: float) -> dict[str, Any]:
    stages = n + 2  # the source, N leaves, the sink
    return {
        "shape": shape,
        "n": n,
        "run_s": elapsed,
        "per_stage_us": elapsed / stages * 1e6,
    }


def fanout(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        progress(f"fanout declared, N={n:,}")
        pipeline = Pipeline("fan").add(source)
        for i in range(n):
            pipeline = pipeline.add(leaf.named(f"leaf{i}"), after=["source"])
        pipeline = pipeline.add(sink, after=[f"leaf{i}" for i in range(n)])
        elapsed, result = trio.run(_timed_run, pipeline)
        assert result.outputs["sink"] == n
        rows.append(_fanout_row("fanout_declared", n, elapsed))

        progress(f"fanout mapped at run time, N={n:,}")

        @stage
        async def plan(ctx: Any, n: int = n) -> None:
            names = await ctx.expand(leaf, range(n), reason="fan out")
            await ctx.add_stage(sink, after=names, reason="fan in")

        elapsed, result = trio.run(_timed_run, Pipeline("mapped").add(plan))
        assert result.outputs["sink"] == n
        rows.append(_fanout_row("fanout_mapped", n, elapsed))
        progress(
            f"  declared {rows[-2]['per_stage_us']:.1f} µs/stage, mapped {rows[-1]['per_stage_us']:.1f} µs/stage"
        )
    return rows


def lattice(width: int, depth: int) -> list[dict[str, Any]]:
    progress(f"diamond lattice {width} x {depth}")

    @stage
    async def cell(ctx: Any) -> int:
        return sum(ctx.inputs.values()) or 1

    pipeline = Pipeline("lattice")
    for i in range(width):
        pipeline = pipeline.add(cell.named(f"c0_{i}"))
    for layer in range(1, depth):
        for i in range(width):
            pipeline = pipeline.add(
                cell.named(f"c{layer}_{i}"),
                after=[f"c{layer - 1}_{i}", f"c{layer - 1}_{(i + 1) % width}"],
            )
    n = width * depth
    elapsed, result = trio.run(_timed_run, pipeline)
    assert result.ok
    row = {
        "shape": "lattice",
        "width": width,
        "depth": depth,
        "n": n,
        "run_s": elapsed,
        "per_stage_us": elapsed / n * 1e6,
    }
    progress(f"  {row['per_stage_us']:.1f} µs/stage")
    return [row]


def changes(stages: int, per_stage: int) -> list[dict[str, Any]]:
    progress(f"change throughput: {stages} concurrent stages x {per_stage} changes")
    latencies: list[float] = []
    start_gate = trio.Event()
    end_gate = trio.Event()
    all_answered = trio.Event()

    @stage
    async def mutator(ctx: Any) -> None:
        await start_gate.wait()
        for k in range(per_stage):
            t = time.perf_counter()
            # The new stages wait for `hold`, so none runs while changes are timed.
            await ctx.add_stage(
                leaf.named(f"{ctx.name}.{k}"), after=["hold"], reason="grow"
            )
            latencies.append(time.perf_counter() - t)
        if len(latencies) == stages * per_stage:
            all_answered.set()

    @stage
    async def hold(ctx: Any) -> None:
        await end_gate.wait()

    pipeline = Pipeline("changes").add(hold)
    for i in range(stages):
        pipeline = pipeline.add(mutator.named(f"m{i}"))

    async def main() -> tuple[float, float, int]:
        async with runtime() as rt:
            run = await rt.start(pipeline)
            await trio.testing.wait_all_tasks_blocked()
            begin, begin_cpu = time.perf_counter(), time.process_time()
            start_gate.set()
            await all_answered.wait()
            elapsed = time.perf_counter() - begin
            cpu = time.process_time() - begin_cpu
            end_gate.set()
            result = await run.wait()
            return elapsed, cpu, len([r for r in result.audit if r.accepted])

    # CPU time as well as wall-clock time: on a shared machine the rate per
    # CPU second is what the runtime itself costs (one thread, no journal).
    elapsed, cpu, accepted = trio.run(main)
    total = stages * per_stage
    assert accepted == total, (accepted, total)
    latencies.sort()
    row = {
        "shape": "changes",
        "stages": stages,
        "changes": total,
        "elapsed_s": elapsed,
        "changes_per_s": total / elapsed,
        "changes_per_cpu_s": total / cpu,
        "latency_p50_us": latencies[len(latencies) // 2] * 1e6,
        "latency_p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "lost": total - accepted,
    }
    progress(
        f"  {row['changes_per_s']:,.0f} changes/s ({row['changes_per_cpu_s']:,.0f} a CPU second), p50 {row['latency_p50_us']:.0f} µs, p99 {row['latency_p99_us']:.0f} µs"
    )
    return [row]


def cycle(sizes: list[int], edges: int = 1000) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        progress(f"cycle check, graph of {n:,} stages")
        rng = random.Random(n)
        graph = LiveGraph()
        chains = max(1, n // 1000)
        length = n // chains
        ends = []
        for c in range(chains):
            previous: list[Any] = []
            chain = []
            for i in range(length):
                node = graph.add_node(leaf.named(f"c{c}_{i}"), previous)
                chain.append(node)
                previous = [node]
            ends.append(chain)
        # Typical: one new edge checked against the graph as built (read-only).
        fresh_times, fresh_regions = [], []
        for _ in range(edges):
            up, down = _random_pair(rng, ends, chains, length)
            graph.last_region = 0
            t = time.perf_counter()
            graph.cycle_path(up, down)
            fresh_times.append(time.perf_counter() - t)
            fresh_regions.append(graph.last_region)
        # Adversarial: random edges accumulate and wire the chains together,
        # so the region between two ends keeps growing.
        times, regions, refused = [], [], 0
        for _ in range(edges):
            up, down = _random_pair(rng, ends, chains, length)
            graph.last_region = 0
            t = time.perf_counter()
            path = graph.cycle_path(up, down)
            if path is None and up not in down.deps:
                graph.add_edge(up, down)
            times.append(time.perf_counter() - t)
            regions.append(graph.last_region)
            refused += path is not None
        fresh_times.sort()
        times.sort()
        row = {
            "shape": "cycle_check",
            "n": len(graph),
            "edges": edges,
            "fresh_median_us": statistics.median(fresh_times) * 1e6,
            "fresh_p99_us": fresh_times[int(len(fresh_times) * 0.99)] * 1e6,
            "fresh_max_us": fresh_times[-1] * 1e6,
            "fresh_max_region": max(fresh_regions),
            "accumulated_median_us": statistics.median(times) * 1e6,
            "accumulated_p99_us": times[int(len(times) * 0.99)] * 1e6,
            "accumulated_max_us": times[-1] * 1e6,
            "accumulated_max_region": max(regions),
            "refused_as_cycles": refused,
        }
        progress(
            f"  one edge: median {row['fresh_median_us']:.1f} µs, max {row['fresh_max_us']:.1f} µs "
            f"(region <= {row['fresh_max_region']}); after {edges} random edges: median "
            f"{row['accumulated_median_us']:.1f} µs, p99 {row['accumulated_p99_us']:.0f} µs, "
            f"max {row['accumulated_max_us']:.0f} µs (region <= {row['accumulated_max_region']})"
        )
        rows.append(row)
    return rows


def cpu(stages: int = 1000) -> list[dict[str, Any]]:
    """A CPU-bound fan-out: N stages of about 5 ms each, on every executor."""
    from _common import burn, calibrate

    loops = calibrate()
    rows = []

    @stage(name="work")
    async def on_loop(ctx: Any) -> int:
        return burn(ctx)  # blocks the event loop: the baseline

    async def run_fanout(spec: Any, executor: Any = "thread") -> float:
        @stage
        async def plan(ctx: Any) -> None:
            await ctx.expand(spec, range(stages), reason="fan out")

        async with runtime(executor=executor, thread_limit=4) as rt:
            start = time.perf_counter()
            result = await rt.run(Pipeline("cpu").add(plan), inputs={"loops": loops})
            assert result.ok
            return time.perf_counter() - start

    variants: list[tuple[str, Any, Any]] = [
        ("loop", on_loop, "thread"),
        ("thread", stage(name="work", executor="thread")(burn), "thread"),
        ("process", stage(name="work", executor="process")(burn), "thread"),
    ]
    for name, spec, executor in variants:
        progress(f"cpu-bound fan-out: {stages} x ~5 ms on {name}")
        rows.append(
            {
                "shape": "cpu_fanout",
                "executor": name,
                "stages": stages,
                "wall_s": trio.run(run_fanout, spec, executor),
            }
        )
    try:
        import distributed
    except ImportError:
        progress("  (dask extra not installed: skipping Dask)")
    else:
        from dagvisor import DaskExecutor

        progress(
            f"cpu-bound fan-out: {stages} x ~5 ms on a Dask LocalCluster (2 workers)"
        )
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:

            async def on_dask() -> float:
                async with DaskExecutor(cluster.scheduler_address) as dask:
                    return await run_fanout(stage(name="work", executor=dask)(burn))

            rows.append(
                {
                    "shape": "cpu_fanout",
                    "executor": "dask",
                    "stages": stages,
                    "wall_s": trio.run(on_dask),
                }
            )
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup"] = base / row["wall_s"]
        progress(
            f"  {row['executor']:>8}: {row['wall_s']:.2f} s, speedup {row['speedup']:.2f}x"
        )
    return rows


def shared(consumers: int = 34, ints: int = 160_000) -> list[dict[str, Any]]:
    """What sharing one large output costs: it is frozen once, not once per reader."""
    progress(f"one output of {ints:,} ints read by {consumers} mapped stages")

    @stage
    async def big(ctx: Any) -> dict[str, list[int]]:
        return {str(i): list(range(1000)) for i in range(ints // 1000)}

    @stage
    async def reader(ctx: Any) -> int:
        return len(ctx.inputs["big"])

    @stage
    async def plan(ctx: Any) -> None:
        await ctx.expand(reader, range(consumers), after=["big"], reason="readers")

    pipeline = Pipeline("shared").add(big).add(plan)
    runs = []
    for _ in range(3):
        elapsed, result = trio.run(_timed_run, pipeline)
        assert result.ok
        runs.append(elapsed)
    start = time.perf_counter()
    {str(i): list(range(1000)) for i in range(ints // 1000)}
    building = time.perf_counter() - start
    row = {
        "shape": "shared_output",
        "consumers": consumers,
        "ints": ints,
        "run_s": statistics.median(runs),
        "building_the_value_s": building,
    }
    progress(
        f"  run {row['run_s'] * 1e3:.1f} ms (building the value alone {building * 1e3:.1f} ms)"
    )
    return [row]


def readers(stages: int = 20_000) -> list[dict[str, Any]]:
    """What event readers cost the run: nothing for those that stopped or never read."""

    async def chain_with(kind: str, count: int) -> float:
        pipeline = Pipeline.chain(leaf.named(f"s{i}") for i in range(stages))
        async with runtime() as rt, trio.open_nursery() as nursery:
            run = await rt.start(pipeline)
            streams = [run.events() for _ in range(count)]
            start = time.perf_counter()
            if kind == "stopped":
                for stream in streams:
                    async for _ in stream:
                        break
                del streams[:]
            elif kind == "reading":
                for stream in streams:

                    async def drain(stream: Any = stream) -> None:
                        async for _ in stream:
                            pass

                    nursery.start_soon(drain)
            await run.wait()
            return time.perf_counter() - start

    rows = []
    base = None
    for kind, count in (
        ("none", 0),
        ("stopped", 200),
        ("never reading", 1000),
        ("reading", 10),
    ):
        elapsed = statistics.median(trio.run(chain_with, kind, count) for _ in range(3))
        base = base or elapsed
        rows.append(
            {
                "shape": "event_readers",
                "readers": f"{count} {kind}",
                "per_stage_us": elapsed / stages * 1e6,
                "vs_no_reader": elapsed / base,
            }
        )
        progress(
            f"  {count} readers {kind}: {rows[-1]['per_stage_us']:.1f} µs/stage "
            f"({rows[-1]['vs_no_reader']:.2f}x)"
        )
    return rows


def insert(stages: int = 100_000, changes: int = 500) -> list[dict[str, Any]]:
    """Inserting "a deeper check before the decision" costs what an append costs."""
    progress(f"insert before an early stage vs append, {stages:,}-stage chain")
    hold = trio.Event()

    @stage
    async def gate(ctx: Any) -> None:
        await hold.wait()

    async def measure() -> tuple[float, float]:
        pipeline = Pipeline("held").add(gate).add(leaf.named("c0"), after=["gate"])
        for i in range(1, stages):
            pipeline = pipeline.add(leaf.named(f"c{i}"), after=[f"c{i - 1}"])
        # Alternated, each timed on its own, medians kept: a pause of the
        # cyclic collector over the large graph lands on one change, not on
        # one of the two kinds.
        appends: list[float] = []
        inserts: list[float] = []
        async with runtime() as rt:
            run = await rt.start(pipeline)
            for i in range(changes):
                start = time.perf_counter()
                await run.add_stage(
                    leaf.named(f"tail{i}"), after=[f"c{stages - 1}"], reason="append"
                )
                appends.append(time.perf_counter() - start)
                start = time.perf_counter()
                await run.add_stage(
                    leaf.named(f"check{i}"),
                    after=["gate"],
                    before=["c1"],
                    reason="a deeper check before an early stage",
                )
                inserts.append(time.perf_counter() - start)
            hold.set()
            await run.wait()
        return statistics.median(appends), statistics.median(inserts)

    appended, inserted = trio.run(measure)
    row = {
        "shape": "insert_before",
        "stages": stages,
        "append_us": appended * 1e6,
        "insert_before_us": inserted * 1e6,
        "ratio": inserted / appended,
    }
    progress(
        f"  append {row['append_us']:.1f} µs, insert before c1 "
        f"{row['insert_before_us']:.1f} µs ({row['ratio']:.2f}x)"
    )
    return [row]


def _random_pair(
    rng: random.Random, ends: list[list[Any]], chains: int, length: int
) -> tuple[Any, Any]:
    a, b = rng.sample(range(chains), 2) if chains > 1 else (0, 0)
    return ends[a][rng.randrange(length)], ends[b][rng.randrange(length)]


MEASURES = (
    "fanout",
    "lattice",
    "changes",
    "cycle",
    "cpu",
    "shared",
    "readers",
    "insert",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(MEASURES), help="comma-separated measures"
    )
    parser.add_argument("--fanout-sizes", default="1000,10000,100000")
    parser.add_argument("--cycle-sizes", default="10000,100000,1000000")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    only = set(args.only.split(","))
    rows: list[dict[str, Any]] = []
    if "fanout" in only:
        rows += fanout([int(s) for s in args.fanout_sizes.split(",")])
    if "lattice" in only:
        rows += lattice(100, 100)
    if "changes" in only:
        rows += changes(1000, 20)
    if "cycle" in only:
        rows += cycle([int(s) for s in args.cycle_sizes.split(",")])
    if "cpu" in only:
        rows += cpu()
    if "shared" in only:
        rows += shared()
    if "readers" in only:
        rows += readers()
    if "insert" in only:
        rows += insert()
    emit({"benchmark": "shapes", "machine": machine(), "rows": rows}, args.json_path)


if __name__ == "__main__":
    main()
