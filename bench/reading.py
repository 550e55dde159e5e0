"""What the reading commands cost on a large journal: `show`, `lineage RUN STAGE`, `show RUN --output STAGE`.

python bench/reading.py                         # 200,000 stages a run
python bench/reading.py --stages 20000 --json out.json
python bench/reading.py --journal big.db        # build it once, measure again later
python bench/reading.py --commands lineage,output   # only some commands

The journal holds two runs of ``--stages`` stages each:

* ``chain``: a pipeline of that many stages in a line (`Pipeline.chain`),
  so its pipeline record is large.
* ``fanout``: one stage maps that many stages at run time (`ctx.expand`),
  none of which another consumes: every one is a final output, and the
  change that added them is large.

Each command runs as ``python -m dagvisor ...`` in a fresh process, as a user
runs it; its wall time and peak RSS (the kernel's ``ru_maxrss`` of that
process, from ``wait4``) are what is reported, with the size of what it
printed. Building the journal is not measured.
"""

from __future__ import annotations

import argparse
import os
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
async def link(ctx: Any) -> int:
    return sum(ctx.inputs.values()) + 1


@stage
async def cell(ctx: Any) -> int:
    item: int = ctx.item
    return item * 2


@stage
async def spread(ctx: Any) -> None:
    await ctx.expand(cell, range(ctx.run_inputs["stages"]), reason="one per item")


def build(path: Path, stages: int) -> dict[str, str]:
    """Write the two runs; their ids by shape."""

    async def main() -> dict[str, str]:
        ids = {}
        async with runtime(journal=path) as rt:
            chain = Pipeline.chain(link.named(f"c{i}") for i in range(stages))
            ids["chain"] = (await rt.run(chain)).run_id
            fan = Pipeline("fanout").add(spread)
            ids["fanout"] = (await rt.run(fan, inputs={"stages": stages})).run_id
        return ids

    return trio.run(main)


def existing(path: Path) -> dict[str, str]:
    with Journal(path, readonly=True) as journal:
        runs = journal.runs()
    return {
        ("fanout" if run["name"] == "fanout" else "chain"): run["run_id"]
        for run in runs
    }


def measure(args: list[str]) -> dict[str, Any]:
    """Run ``python -m dagvisor ARGS`` once, in a fresh process: wall time, its
    own peak RSS (``wait4``), and the size of what it printed."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: its output to the files, then the command
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                os.execv(sys.executable, [sys.executable, "-m", "dagvisor", *args])
            finally:
                os._exit(127)
        _, status, usage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - start
        out.seek(0)
        text = out.read()
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(
                f"dagvisor {' '.join(args)} failed: {err.read().decode()[-500:]}"
            )
    return {
        "seconds": round(elapsed, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stdout_bytes": len(text),
        "stdout_lines": text.count(b"\n"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=200_000)
    parser.add_argument("--journal", help="reuse (or build once) this journal")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--commands",
        default="show,lineage,output",
        help="comma-separated, from show, lineage, output (show RUN --output STAGE)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.journal or Path(tmp) / "runs.db")
        if path.exists():
            ids = existing(path)
        else:
            progress(f"building a journal of 2 runs of {args.stages:,} stages")
            start = time.perf_counter()
            ids = build(path, args.stages)
            progress(f"built in {time.perf_counter() - start:.1f} s")
        middle = args.stages // 2
        commands = {
            "chain": {
                "show": ["show", ids["chain"]],
                "lineage": ["lineage", ids["chain"], f"c{middle}"],
                "output": ["show", ids["chain"], "--output", f"c{middle}"],
            },
            "fanout": {
                "show": ["show", ids["fanout"]],
                "lineage": ["lineage", ids["fanout"], f"cell[{middle}]"],
                "output": ["show", ids["fanout"], "--output", f"cell[{middle}]"],
            },
        }
        chosen = args.commands.split(",")
        figures: dict[str, Any] = {
            "machine": machine(),
            "stages": args.stages,
            "journal_bytes": path.stat().st_size,
        }
        for shape, wanted in commands.items():
            for name, command in wanted.items():
                if name not in chosen:
                    continue
                runs = [
                    measure([*command, "--journal", str(path)])
                    for _ in range(args.repeat)
                ]
                best = min(runs, key=lambda run: run["seconds"])
                figures[f"{shape}:{name}"] = {
                    **best,
                    "seconds_all": [run["seconds"] for run in runs],
                }
                progress(f"{shape} {name}: {best}")
        emit(figures, args.json)


if __name__ == "__main__":
    main()
