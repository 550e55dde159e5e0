"""Costs that must not grow with the graph: wiring a pipeline, removing dependents.

    python bench/costs.py
    python bench/costs.py --only edges --json out.json

Measures:
  edges    1,000 edges added to a pipeline of 100 chains (10,000 and
           100,000 stages): along insertion order, and in random directions
           (cycles refused and counted)
  removal  removing every pending dependent of one stage: 10,000 and 100,000
           on the live graph in three orders, and 10,000 through a running
           Run (`run.remove_stage`, one request each)
  replace  `run.replace_pending` swapping 10 pending stages for 10 new ones
           in a run that holds 10,000 and 100,000 finished stages

Each size is timed in the same process, so the ratio between sizes is the
figure that says whether a cost grows.
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
async def leaf(ctx: Any) -> int:
    return 1


def _chains(chains: int, length: int) -> Pipeline:
    pipeline = Pipeline("chains")
    for c in range(chains):
        pipeline = pipeline.add(leaf.named(f"c{c}_0"))
        for i in range(1, length):
            pipeline = pipeline.add(leaf.named(f"c{c}_{i}"), after=[f"c{c}_{i - 1}"])
    return pipeline


def _edge_pairs(
    rng: random.Random, chains: int, length: int, count: int, *, forward: bool
) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(count):
        a, b = sorted(rng.sample(range(chains), 2))  # insertion order: a's chain first
        up, down = (a, b) if forward or rng.random() < 0.5 else (b, a)
        pairs.append(
            (f"c{up}_{rng.randrange(length)}", f"c{down}_{rng.randrange(length)}")
        )
    return pairs


def edges(sizes: list[int], count: int = 1000) -> list[dict[str, Any]]:
    """Time per `Pipeline.add_edge`, ``count`` edges on pipelines of 100 chains."""
    rows = []
    for size in sizes:
        length = size // 100
        base = _chains(100, length)
        for kind in ("forward", "random"):
            pairs = _edge_pairs(
                random.Random(size), 100, length, count, forward=kind == "forward"
            )
            pipeline, refused, times = base, 0, []
            for up, down in pairs:
                start = time.perf_counter()
                try:
                    pipeline = pipeline.add_edge(up, down)
                except ValueError:  # CycleError: refused, the pipeline unchanged
                    refused += 1
                times.append(time.perf_counter() - start)
            row = {
                "measure": f"add_edge_{kind}",
                "stages": size,
                "edges": count,
                "refused": refused,
                "total_s": sum(times),
                "per_edge_us": sum(times) / count * 1e6,
                "median_us": statistics.median(times) * 1e6,
            }
            rows.append(row)
            progress(
                f"add_edge {kind}, {size:,} stages: {row['per_edge_us']:.1f} µs an "
                f"edge (median {row['median_us']:.1f}), {refused} refused"
            )
    return rows


def _remove_on_graph(count: int, order: str) -> float:
    graph = LiveGraph()
    source = graph.add_node(leaf.named("src"), [])
    children = [graph.add_node(leaf.named(f"d{i}"), [source]) for i in range(count)]
    if order == "newest first":
        children.reverse()
    elif order == "shuffled":
        random.Random(count).shuffle(children)
    start = time.perf_counter()
    for child in children:
        graph.remove_node(child)
    elapsed = time.perf_counter() - start
    assert not source.dependents
    return elapsed


def _remove_on_a_run(count: int) -> float:
    hold = trio.Event()

    @stage
    async def gate(ctx: Any) -> None:
        await hold.wait()

    pipeline = Pipeline("held").add(gate)
    for i in range(count):
        pipeline = pipeline.add(leaf.named(f"d{i}"), after=["gate"])
    names = [f"d{i}" for i in range(count)]
    random.Random(count).shuffle(names)

    async def main() -> float:
        async with runtime() as rt:
            run = await rt.start(pipeline)
            start = time.perf_counter()
            for name in names:
                await run.remove_stage(name, reason="not needed")
            elapsed = time.perf_counter() - start
            hold.set()
            result = await run.wait()
        assert list(result.states) == ["gate"]
        return elapsed

    return trio.run(main)


def removal(sizes: list[int], on_run: int = 10_000) -> list[dict[str, Any]]:
    """Removing every pending dependent of one stage."""
    rows = []
    for size in sizes:
        for order in ("oldest first", "shuffled", "newest first"):
            elapsed = _remove_on_graph(size, order)
            rows.append(
                {
                    "measure": "remove_dependents_live_graph",
                    "order": order,
                    "dependents": size,
                    "total_s": elapsed,
                    "per_removal_us": elapsed / size * 1e6,
                }
            )
            progress(
                f"remove {size:,} dependents, {order}, live graph: "
                f"{elapsed * 1e3:.1f} ms ({elapsed / size * 1e6:.2f} µs each)"
            )
    elapsed = _remove_on_a_run(on_run)
    rows.append(
        {
            "measure": "remove_dependents_run",
            "order": "shuffled",
            "dependents": on_run,
            "total_s": elapsed,
            "per_removal_us": elapsed / on_run * 1e6,
        }
    )
    progress(
        f"remove {on_run:,} dependents through run.remove_stage: "
        f"{elapsed:.2f} s ({elapsed / on_run * 1e6:.1f} µs each)"
    )
    return rows


def _replace_in_a_run(finished: int, rounds: int = 50) -> list[float]:
    """Time of each replace_pending with ``finished`` ended stages in memory."""
    hold = trio.Event()
    started = trio.Event()

    @stage
    async def gate(ctx: Any) -> None:
        started.set()
        await hold.wait()

    pipeline = Pipeline("done").add(gate)
    for i in range(finished):
        pipeline = pipeline.add(leaf.named(f"f{i}"))
    for i in range(10):
        pipeline = pipeline.add(leaf.named(f"p{i}"), after=["gate"])

    async def main() -> list[float]:
        times = []
        async with runtime() as rt:
            run = await rt.start(pipeline)
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()  # every leaf has ended
            for round_ in range(rounds):
                rest = Pipeline(f"rest{round_}").add(gate)
                for i in range(10):
                    rest = rest.add(leaf.named(f"r{round_}_{i}"), after=["gate"])
                start = time.perf_counter()
                await run.replace_pending(rest, reason="new plan")
                times.append(time.perf_counter() - start)
            hold.set()
            result = await run.wait()
        assert result.ok
        assert len(result.states) == finished + 11
        return times

    return trio.run(main)


def replace(sizes: list[int]) -> list[dict[str, Any]]:
    """replace_pending's cost against the finished stages in memory."""
    rows = []
    for size in sizes:
        times = _replace_in_a_run(size)
        row = {
            "measure": "replace_pending",
            "finished_stages": size,
            "median_ms": statistics.median(times) * 1e3,
            "max_ms": max(times) * 1e3,
        }
        rows.append(row)
        progress(
            f"replace 10 pending stages beside {size:,} finished: "
            f"{row['median_ms']:.3f} ms (median of {len(times)})"
        )
    if len(rows) > 1:
        ratio = rows[-1]["median_ms"] / rows[0]["median_ms"]
        rows.append({"measure": "replace_pending_ratio", "ratio": ratio})
        progress(f"ratio {sizes[-1]:,} / {sizes[0]:,} finished: {ratio:.2f}x")
    return rows


MEASURES = ("edges", "removal", "replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(MEASURES))
    parser.add_argument("--edge-sizes", default="10000,100000")
    parser.add_argument("--removal-sizes", default="10000,100000")
    parser.add_argument("--replace-sizes", default="10000,100000")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    only = set(args.only.split(","))
    rows: list[dict[str, Any]] = []
    if "edges" in only:
        rows += edges([int(s) for s in args.edge_sizes.split(",")])
    if "removal" in only:
        rows += removal([int(s) for s in args.removal_sizes.split(",")])
    if "replace" in only:
        rows += replace([int(s) for s in args.replace_sizes.split(",")])
    emit({"benchmark": "costs", "machine": machine(), "rows": rows}, args.json_path)


if __name__ == "__main__":
    main()
