"""What a journaled run keeps in memory with ``retain_outputs="journal"``.

    python bench/retention.py                 # a few minutes
    python bench/retention.py --json out.json

Each measure runs in a fresh process, so its memory figures are its own:

* ``batches``: 20 batches, each mapping 100 stages over items of 100 KB
  (200 MB of items in all) and collecting them in a fan-in stage that stays
  in memory (a result of the run). Peak RSS growth with every stage kept
  (``all``) and with finished stages dropped (``journal``).
* ``grown``: a chain that grows while it runs (each stage adds the next),
  at two lengths: the bytes each stage adds to the peak RSS, which should
  not depend on the length when finished stages are dropped.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import RssSampler, emit, machine, progress

from dagvisor import Pipeline, runtime, stage

BATCHES, ITEMS, ITEM_BYTES = 20, 100, 100_000


@stage
async def batch(ctx: Any) -> int:
    index = int(ctx.name[1:])
    items = [bytes([index % 256]) * ITEM_BYTES for _ in range(ITEMS)]
    await ctx.expand(
        item.named(f"i{ctx.name}"),
        items,
        collect=collect.named(f"c{ctx.name}"),
        reason="one stage per item, then their sum",
    )
    return index


@stage
async def item(ctx: Any) -> int:
    return len(ctx.item)


@stage
async def collect(ctx: Any) -> int:
    return sum(ctx.inputs.values())


@stage
async def grow(ctx: Any) -> int:
    index = int(ctx.name[1:])
    if index + 1 < ctx.run_inputs["stages"]:
        await ctx.add_stage(
            grow.named(f"g{index + 1}"), after=[ctx.name], reason="the next step"
        )
    return index


def _child(measure: str, retain: str, stages: int, path: Path) -> dict[str, Any]:
    gc.collect()
    with RssSampler() as rss:

        async def main() -> tuple[float, int]:
            async with runtime(journal=path, retain_outputs=retain) as rt:  # type: ignore[arg-type]
                start = time.perf_counter()
                if measure == "batches":
                    pipeline = Pipeline.chain(
                        batch.named(f"b{i}") for i in range(BATCHES)
                    )
                    result = await rt.run(pipeline)
                else:
                    result = await rt.run(
                        Pipeline("grown").add(grow.named("g0")),
                        inputs={"stages": stages},
                    )
                return time.perf_counter() - start, result.stats.stages

        elapsed, ran = trio.run(main)
    growth = rss.peak - rss.baseline
    return {
        "measure": measure,
        "retain_outputs": retain,
        "stages": ran,
        "run_s": elapsed,
        "rss_growth_mb": growth / 2**20,
        "bytes_per_stage": growth / ran,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--grown", default="20000,100000", help="chain lengths")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure, retain, stages, path = args.child
        print(json.dumps(_child(measure, retain, int(stages), Path(path))))
        return
    runs = [("batches", retain, 0) for retain in ("all", "journal")]
    runs += [("grown", "journal", int(n)) for n in args.grown.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (measure, retain, stages) in enumerate(runs):
            progress(f"{measure}, retain_outputs={retain!r} {stages or ''}")
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    measure,
                    retain,
                    str(stages),
                    str(Path(tmp) / f"{index}.db"),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout)
            progress(
                f"  {row['stages']:,} stages, {row['run_s']:.1f} s, peak RSS growth "
                f"{row['rss_growth_mb']:.0f} MB ({row['bytes_per_stage']:.0f} B/stage)"
            )
            rows.append(row)
    emit(
        {
            "benchmark": "retention",
            "machine": machine(),
            "items_total_mb": BATCHES * ITEMS * ITEM_BYTES / 2**20,
            "rows": rows,
        },
        args.json_path,
    )


if __name__ == "__main__":
    main()
