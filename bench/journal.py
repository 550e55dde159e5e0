"""Per-stage cost of the SQLite journal: a no-op chain with the journal off and on.

python bench/journal.py                 # 10,000 stages
python bench/journal.py --stages 100000 --json out.json

Also times reading the journaled run back (`Journal.result`): the replay a
resume does before anything runs again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import emit, machine, progress

from dagvisor import Journal, Pipeline, runtime, stage


@stage
async def step(ctx: Any) -> int:
    return sum(ctx.inputs.values()) + 1


def measure_replay(path: Path) -> tuple[float, int]:
    """Seconds to read the run back (the replay a resume does) and its stages."""
    journal = Journal(path, readonly=True)
    try:
        (run,) = journal.runs()
        start = time.perf_counter()
        result = journal.result(run["run_id"])
        elapsed = time.perf_counter() - start
    finally:
        journal.close()
    return elapsed, len(result.states)


def measure(stages: int, journal: Path | None) -> float:
    pipeline = Pipeline.chain(
        (step.named(f"s{i}") for i in range(stages)), name="journal"
    )

    async def main() -> float:
        async with runtime(journal=journal) as rt:
            start = time.perf_counter()
            result = await rt.run(pipeline)  # returns once the journal is committed
            elapsed = time.perf_counter() - start
            assert result.outputs[f"s{stages - 1}"] == stages
            return elapsed

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=10_000)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, journal in (("off", None), ("on", Path(tmp) / "runs.db")):
            progress(f"{args.stages:,}-stage chain, journal {label}")
            elapsed = measure(args.stages, journal)
            row = {
                "journal": label,
                "stages": args.stages,
                "run_s": elapsed,
                "per_stage_us": elapsed / args.stages * 1e6,
            }
            progress(f"  {row['per_stage_us']:.1f} µs/stage")
            rows.append(row)
            if journal is not None:
                progress("  reading the run back from the journal (a resume's replay)")
                replay_s, replayed = measure_replay(journal)
                assert replayed == args.stages
                rows.append(
                    {
                        "journal": "replay",
                        "stages": args.stages,
                        "run_s": replay_s,
                        "per_stage_us": replay_s / args.stages * 1e6,
                    }
                )
                progress(f"  {replay_s / args.stages * 1e6:.1f} µs/stage")
    emit({"benchmark": "journal", "machine": machine(), "rows": rows}, args.json_path)


if __name__ == "__main__":
    main()
