"""Executor and declaration costs: what run_in ships, and what @stage costs.

* ``run_in``: per-call time of ``await ctx.run_in("process", noop)`` from a
  stage that sees a large upstream output (a dict of lists holding 160,000
  ints) against one that sees nothing: only the function and its arguments
  travel, so the two should cost the same.
* ``declare``: time per ``stage(name=...)(fn)`` on a new module-level
  function (the registry records each one).
* ``isolation``: what a process stage costs against a thread stage, per
  stage, with ten of them reading one upstream output of 0 to 100 MB (the
  process stage's view is pickled, piped to a worker and unpickled).

    python bench/executors.py
    python bench/executors.py --calls 200 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, progress


def noop() -> int:
    """A body for run_in: module level, so a worker can import it."""
    return 0


def _big() -> dict[str, list[int]]:
    return {f"k{i}": list(range(i * 4000, (i + 1) * 4000)) for i in range(40)}


def run_in(calls: int, repeat: int) -> list[dict[str, Any]]:
    """Per-call cost of run_in("process", noop), with and without a big input."""
    import trio

    from dagvisor import Pipeline, runtime, stage

    timings: dict[str, list[float]] = {"small": [], "big": []}

    @stage(name="source")
    async def source(ctx: Any) -> Any:
        return _big() if ctx.run_inputs["big"] else {}

    @stage(name="caller")
    async def caller(ctx: Any) -> float:
        await ctx.run_in("process", noop)  # the worker is started and warm
        start = time.perf_counter()
        for _ in range(calls):
            await ctx.run_in("process", noop)
        return (time.perf_counter() - start) / calls

    pipeline = Pipeline("run_in").add(source).add(caller, after=["source"])

    async def main() -> None:
        async with runtime() as rt:
            for _ in range(repeat):
                for kind in ("small", "big"):
                    result = await rt.run(pipeline, inputs={"big": kind == "big"})
                    timings[kind].append(result.outputs["caller"])

    trio.run(main)
    rows = []
    for kind, values in timings.items():
        rows.append(
            {
                "measure": f"run_in_process_{kind}_input",
                "per_call_ms": statistics.median(values) * 1e3,
                "per_call_ms_runs": [v * 1e3 for v in values],
            }
        )
        progress(f"run_in, {kind} input: {rows[-1]['per_call_ms']:.2f} ms a call")
    return rows


def measured_length(view: Any) -> int:
    """A stage body for the isolation measure: reads its input, does nothing else."""
    return len(view.inputs.get("payload", b""))


ISOLATION_SIZES = (0, 1_000_000, 10_000_000, 100_000_000)


def isolation(repeat: int, fan: int = 10) -> list[dict[str, Any]]:
    """Per-stage time of thread and process stages reading one output of each size."""
    import trio

    from dagvisor import Pipeline, runtime, stage

    @stage(name="payload")
    async def payload(ctx: Any) -> bytes:
        return bytes(ctx.run_inputs["size"])

    rows: list[dict[str, Any]] = []

    async def main() -> None:
        for executor in ("thread", "process"):
            reader = stage(executor=executor)(measured_length)
            pipeline = Pipeline("isolation").add(payload)
            for i in range(fan):
                pipeline = pipeline.add(reader.named(f"read{i}"), after=["payload"])
            for size in ISOLATION_SIZES:
                async with runtime() as rt:
                    await rt.run(pipeline, inputs={"size": 0})  # warm workers
                    per_stage = []
                    for _ in range(repeat):
                        start = time.perf_counter()
                        result = await rt.run(pipeline, inputs={"size": size})
                        per_stage.append((time.perf_counter() - start) / fan)
                        assert result.outputs["read0"] == size
                row = {
                    "measure": f"isolation_{executor}_{size // 1_000_000}MB",
                    "per_stage_ms": statistics.median(per_stage) * 1e3,
                    "per_stage_ms_runs": [v * 1e3 for v in per_stage],
                }
                rows.append(row)
                progress(
                    f"{executor} stage reading {size / 1e6:g} MB: "
                    f"{row['per_stage_ms']:.2f} ms a stage"
                )

    trio.run(main)
    return rows


def declare(count: int, repeat: int) -> list[dict[str, Any]]:
    """Time per stage(name=...)(fn) on new module-level functions."""
    from dagvisor import stage

    module = types.ModuleType("bench_declared")
    sys.modules["bench_declared"] = module
    per_call = []
    for round_ in range(repeat):
        source = "\n".join(
            f"async def f{round_}_{i}(ctx):\n    return {i}\n" for i in range(count)
        )
        exec(compile(source, "bench_declared", "exec"), module.__dict__)
        functions = iter([getattr(module, f"f{round_}_{i}") for i in range(count)])
        elapsed = timeit.timeit(
            lambda functions=functions: stage(name="declared")(next(functions)),
            number=count,
        )
        per_call.append(elapsed / count * 1e6)
    row = {
        "measure": "declare_stage",
        "per_declaration_us": min(per_call),
        "per_declaration_us_runs": per_call,
    }
    progress(f"@stage(name=...): {row['per_declaration_us']:.2f} µs (best of {repeat})")
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--declarations", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="run_in,declare,isolation")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    only = set(args.only.split(","))
    rows: list[dict[str, Any]] = []
    if "declare" in only:
        rows += declare(args.declarations, args.repeat)
    if "run_in" in only:
        rows += run_in(args.calls, args.repeat)
    if "isolation" in only:
        rows += isolation(args.repeat)
    emit({"benchmark": "executors", "machine": machine(), "rows": rows}, args.json_path)


if __name__ == "__main__":
    main()
