"""Depth scaling: linear chains of no-op stages, each size in a fresh process.

Each stage returns its predecessor's value + 1 and the final value is checked.
Per size: build time, run time, per-stage microseconds (and trio's floor in
the same process), peak RSS, RSS growth and memory per stage (RSS sampled by
psutil in a thread; no tracemalloc).

    python bench/depth.py                         # default sizes, a few minutes
    python bench/depth.py --sizes 1000,100000 --repeat 3 --json out.json
    python bench/depth.py --plot depth.png        # needs the `bench` extra
    python bench/depth.py --streamed --sizes 10000,100000,1000000,10000000

With --streamed the chain is a streamed pipeline (Pipeline.stream, window
1,000): stages are pulled as the run advances and dropped once finished, so
peak memory must not grow with depth.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RssSampler, emit, machine, progress, trio_floor

DEFAULT_SIZES = (100, 500, 1_000, 2_000, 10_000, 100_000, 1_000_000)


def _child(n: int, streamed: bool = False) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import trio

    from dagvisor import Pipeline, runtime, stage

    @stage
    async def first(ctx: Any) -> int:
        return 1

    @stage
    async def step(ctx: Any) -> int:
        for value in ctx.inputs.values():
            return int(value) + 1
        return 0

    gc.collect()
    with RssSampler() as rss:
        start = time.perf_counter()
        stages = itertools.chain(
            [first.named("s0")], (step.named(f"s{i}") for i in range(1, n))
        )
        pipeline: Any = (
            Pipeline.stream(stages, name="depth", window=1_000)
            if streamed
            else Pipeline.chain(stages, name="depth")
        )
        build = time.perf_counter() - start
        after_build = rss.rss()

        async def main() -> tuple[float, int]:
            async with runtime() as rt:
                start = time.perf_counter()
                result = await rt.run(pipeline)
                elapsed = time.perf_counter() - start
                return elapsed, result.outputs[f"s{n - 1}"]

        run, final = trio.run(main)
    if final != n:
        raise SystemExit(f"wrong result: {final} != {n}")
    floor = trio_floor(min(n, 200_000))
    return {
        "stages": n,
        "build_s": build,
        "run_s": run,
        "per_stage_us": run / n * 1e6,
        "floor_per_stage_us": floor / min(n, 200_000) * 1e6,
        "baseline_rss_mb": rss.baseline / 2**20,
        "peak_rss_mb": rss.peak / 2**20,
        "rss_growth_mb": (rss.peak - rss.baseline) / 2**20,
        "pipeline_bytes_per_stage": (after_build - rss.baseline) / n,
        "bytes_per_stage": (rss.peak - rss.baseline) / n,
        "streamed": streamed,
    }


def _measure(n: int, streamed: bool) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(n),
            *(["--streamed"] if streamed else []),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["stages"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(sizes, [r["per_stage_us"] for r in rows], "o-", label="dagvisor")
    left.plot(sizes, [r["floor_per_stage_us"] for r in rows], "s--", label="trio floor")
    left.axhline(30, color="grey", linestyle=":", label="target 30 µs")
    left.set(
        xscale="log",
        xlabel="stages in the chain",
        ylabel="µs per stage",
        ylim=(0, None),
    )
    left.legend()
    right.plot(
        sizes, [r["bytes_per_stage"] for r in rows], "o-", label="RSS growth / stage"
    )
    right.axhline(1024, color="grey", linestyle=":", label="target 1 KB")
    right.set(xscale="log", xlabel="stages in the chain", ylabel="bytes per stage")
    right.legend()
    fig.suptitle("dagvisor: linear chain of no-op stages")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per size (median kept)"
    )
    parser.add_argument("--json", dest="json_path", help="also write the JSON here")
    parser.add_argument("--plot", help="write a PNG of time and memory against depth")
    parser.add_argument(
        "--max-growth",
        type=float,
        help="exit 1 if per-stage time grows more than this from the smallest to the largest size",
    )
    parser.add_argument(
        "--streamed", action="store_true", help="run the chain as a streamed pipeline"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.streamed)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = []
    for n in sizes:
        runs = []
        for k in range(args.repeat):
            progress(f"depth {n:>9,} stages, run {k + 1}/{args.repeat} ...")
            runs.append(_measure(n, args.streamed))
        best = sorted(runs, key=lambda r: r["per_stage_us"])[len(runs) // 2]
        best["per_stage_us_runs"] = [r["per_stage_us"] for r in runs]
        rows.append(best)
        progress(
            f"  {best['per_stage_us']:.1f} µs/stage (floor {best['floor_per_stage_us']:.1f}), "
            f"peak RSS {best['peak_rss_mb']:.0f} MB, {best['bytes_per_stage']:.0f} B/stage"
        )
    by_size = {r["stages"]: r for r in rows}
    summary: dict[str, Any] = {}
    if 1_000 in by_size and max(by_size) >= 100_000:
        deepest = max(by_size)
        summary["growth_1k_to_deepest"] = (
            by_size[deepest]["per_stage_us"] / by_size[1_000]["per_stage_us"]
        )
        summary["deepest"] = deepest
    summary["median_per_stage_us"] = statistics.median(r["per_stage_us"] for r in rows)
    emit(
        {"benchmark": "depth", "machine": machine(), "rows": rows, "summary": summary},
        args.json_path,
    )
    if args.plot:
        _plot(rows, args.plot)
    if args.max_growth is not None and len(rows) >= 2:
        growth = rows[-1]["per_stage_us"] / rows[0]["per_stage_us"]
        verdict = "ok" if growth <= args.max_growth else "TOO MUCH"
        progress(
            f"growth {rows[0]['stages']:,} -> {rows[-1]['stages']:,} stages: "
            f"{growth:.2f}x (limit {args.max_growth}x): {verdict}"
        )
        if growth > args.max_growth:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
