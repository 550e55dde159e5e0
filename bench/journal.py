"""Per-stage cost of the SQLite journal: a no-op chain with the journal off and on.

python bench/journal.py                 # 10,000 stages
python bench/journal.py --stages 100000 --json out.json
python bench/journal.py --modes off,on    # only some modes

Each mode runs in a fresh process, so its memory figures are its own:

* ``off``: no journal.
* ``on``: a journal, every stage kept in memory (``retain_outputs="all"``).
* ``on+drop``: a journal with ``retain_outputs="journal"``: finished stages
  leave memory once their dependents have ended.
* ``replay``: reading the journaled run back (`Journal.result`), the replay a
  resume does before anything runs again.
* ``grown:on`` and ``grown:on+drop``: a chain that grows while it runs (each
  stage adds the next), journaled, keeping every stage or dropping the
  finished ones. A static pipeline's graph is built whole when its run
  starts, so dropping cannot lower its peak; a graph that grows can.
* ``grown:off``: the same growing chain without a journal, the yardstick
  of ``grown:on`` (measure both in one invocation: ``--modes grown:off,grown:on``).
* ``grown:thread`` and ``on:thread``: ``grown:on`` and ``on`` with the
  journal's writer in a thread of the run's process (``Journal(writer="thread")``)
  rather than a process of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import trio
from _common import RssSampler, emit, machine, progress

from dagvisor import Journal, Pipeline, runtime, stage

CPU = [0.0]  # seconds of process CPU time the measured part took
WRITER_CPU = [0.0]  # seconds of CPU time the journal writer's process took meanwhile


def _children_cpu() -> float:
    """CPU seconds this process's live children (the journal writer) have used."""
    total = 0.0
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


MODES = (
    "off",
    "on",
    "on+drop",
    "replay",
    "grown:off",
    "grown:on",
    "grown:on+drop",
    "grown:thread",
    "on:thread",
)


@stage
async def grow(ctx: Any) -> int:
    """A chain that grows as it runs: each stage adds the next one."""
    index = int(ctx.name[1:])
    if index + 1 < ctx.run_inputs["stages"]:
        await ctx.add_stage(
            grow.named(f"g{index + 1}"), after=[ctx.name], reason="the next step"
        )
    return index


@stage
async def step(ctx: Any) -> int:
    return sum(ctx.inputs.values()) + 1


def _journal(mode: str, path: Path) -> Journal | None:
    if mode in ("off", "grown:off"):
        return None
    return Journal(path, writer="thread" if mode.endswith(":thread") else "process")


def _child(mode: str, stages: int, path: Path) -> dict[str, Any]:
    if mode not in ("off", "grown:off") and not path.exists():
        # The file is made before the clock starts: what is timed is the
        # stages, not creating a journal (once per file, a few ms).
        with Journal(path):
            pass
    gc.collect()
    with RssSampler() as rss:
        if mode == "replay":
            with Journal(path, readonly=True) as journal:
                (run,) = journal.runs()
                start, cpu = time.perf_counter(), time.process_time()
                result = journal.result(run["run_id"])
                elapsed = time.perf_counter() - start
                CPU[0] = time.process_time() - cpu
            built = rss.baseline
            if len(result.states) != stages:
                raise SystemExit(f"replayed {len(result.states)} stages, not {stages}")
        elif mode.startswith("grown:"):
            built = rss.baseline

            async def grown() -> float:
                async with runtime(
                    journal=_journal(mode, path),
                    retain_outputs="journal" if mode.endswith("drop") else "all",
                ) as rt:
                    start, cpu = time.perf_counter(), time.process_time()
                    writer = _children_cpu()
                    result = await rt.run(
                        Pipeline("grown").add(grow.named("g0")),
                        inputs={"stages": stages},
                    )
                    elapsed = time.perf_counter() - start
                    CPU[0] = time.process_time() - cpu
                    WRITER_CPU[0] = _children_cpu() - writer
                    if result.stats.stages != stages:
                        raise SystemExit("wrong result")
                    return elapsed

            elapsed = trio.run(grown)
        else:
            pipeline = Pipeline.chain(
                (step.named(f"s{i}") for i in range(stages)), name="journal"
            )
            built = rss.rss()

            async def main() -> float:
                async with runtime(
                    journal=_journal(mode, path),
                    retain_outputs="journal" if mode == "on+drop" else "all",
                ) as rt:
                    start, cpu = time.perf_counter(), time.process_time()
                    writer = _children_cpu()
                    result = await rt.run(pipeline)  # returns once committed
                    elapsed = time.perf_counter() - start
                    CPU[0] = time.process_time() - cpu
                    WRITER_CPU[0] = _children_cpu() - writer
                    if result.outputs[f"s{stages - 1}"] != stages:
                        raise SystemExit("wrong result")
                    return elapsed

            elapsed = trio.run(main)
    return {
        "mode": mode,
        "stages": stages,
        "run_s": elapsed,
        "per_stage_us": elapsed / stages * 1e6,
        # CPU time of the run's process while the run went: steadier than wall
        # time when other work shares the cores. The journal writer's own
        # process (`Journal(writer="process")`) is counted apart.
        "cpu_per_stage_us": CPU[0] / stages * 1e6,
        "writer_cpu_per_stage_us": WRITER_CPU[0] / stages * 1e6,
        "rss_growth_mb": (rss.peak - rss.baseline) / 2**20,
        "bytes_per_stage": (rss.peak - rss.baseline) / stages,
        # What running took beyond the pipeline itself (built before the run).
        "run_bytes_per_stage": (rss.peak - built) / stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=10_000)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {', '.join(MODES)} (replay needs on)",
    )
    parser.add_argument(
        "--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        mode, path = args.child
        print(json.dumps(_child(mode, args.stages, Path(path))))
        return
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            # "replay" reads the journal "on" wrote; "on+drop" writes its own.
            path = Path(tmp) / (
                "runs.db"
                if mode in ("on", "replay")
                else f"{mode.replace(':', '-')}.db"
            )
            progress(f"{args.stages:,}-stage chain, {mode}")
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--stages",
                    str(args.stages),
                    "--child",
                    mode,
                    str(path),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout)
            progress(
                f"  {row['per_stage_us']:.1f} µs/stage "
                f"({row['cpu_per_stage_us']:.1f} µs of CPU), "
                f"{row['bytes_per_stage']:.0f} B/stage held at the peak, "
                f"{row['run_bytes_per_stage']:.0f} of them by the run"
            )
            rows.append(row)
    emit({"benchmark": "journal", "machine": machine(), "rows": rows}, args.json_path)


if __name__ == "__main__":
    main()
