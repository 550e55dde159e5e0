"""``dagvisor demo``: a quality-control line that changes itself while it runs."""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from pathlib import Path

import trio

from dagvisor._cli_io import shell_command, write_file
from dagvisor._cli_run import progress_display
from dagvisor.actors import Pipeline, StageContext, stage
from dagvisor.supervisor import runtime

__all__ = ["main"]


@stage
async def sample(ctx: StageContext) -> list[float]:
    rng = random.Random(ctx.run_inputs.get("seed", 7))
    return [round(rng.uniform(0.5, 1.0), 3) for _ in range(8)]


@stage
async def inspect_sample(ctx: StageContext) -> dict[str, object]:
    await trio.sleep(0.2 + ctx.item / 2)  # an instrument takes its time
    return {"value": ctx.item, "ok": ctx.item < 0.8}


@stage
async def reinspect(ctx: StageContext) -> bool:
    await trio.sleep(0.4)
    return True


@stage
async def report(ctx: StageContext) -> dict[str, int]:
    results = [v for v in ctx.inputs.values() if isinstance(v, dict)]
    return {"inspected": len(results), "failed": sum(1 for r in results if not r["ok"])}


@stage
async def plan(ctx: StageContext) -> None:
    values = ctx.inputs["sample"]
    # One change: the report and the escalation exist before any inspection
    # starts, so nothing can end before they are wired in.
    async with ctx.changes(
        reason="inspect every item, re-inspect what fails QC, then report"
    ) as batch:
        inspections = batch.expand(inspect_sample, values)
        batch.add_stage(report, after=inspections)
        batch.add_stage(escalate, after=inspections, before=["report"])


@stage
async def escalate(ctx: StageContext) -> int:
    failed = [
        name for name, v in ctx.inputs.items() if isinstance(v, dict) and not v["ok"]
    ]
    for name in failed:
        await ctx.add_stage(
            reinspect.named(f"reinspect:{name}"),
            after=[name],
            before=["report"],
            reason=f"{name} failed QC: inspect it again before the report",
        )
    return len(failed)


async def _main(directory: Path) -> int:
    journal = directory / "demo.db"
    pipeline = Pipeline("qc-line").add(sample).add(plan, after=["sample"])
    show, close = progress_display(sys.stderr)
    print(f"journal: {journal}")
    async with runtime(journal=journal, on_progress=show, monitor_interval=0.1) as rt:
        run = await rt.start(pipeline, inputs={"seed": 7})
        try:
            result = await run.wait()
        finally:
            close()
    print(
        f"\nrun {result.run_id}: {result.status}, {result.stats.stages} stages, "
        f"{result.stats.added} added while it ran"
    )
    print("report:", result.outputs["report"])
    print("\nfinal graph (stages added at run time are marked +):")
    for name, state in result.states.items():
        origin = result.origins[name]
        mark = "+" if origin is not None else " "
        why = "" if origin is None else f"  <- {origin.requester}: {origin.reason}"
        print(f"  {mark} {name:<32} {state.value:<10}{why}")
    print("\naudit trail:")
    for record in result.audit:
        print("  ", record)
    report = write_file(
        directory / f"report-{result.run_id[:8]}.html", result.to_html()
    )
    print(f"\nHTML report: {report}")
    # The command as this shell can run it (a fresh .venv is not on PATH),
    # quoted for pasting whatever the paths hold.
    command = (
        ["dagvisor"] if shutil.which("dagvisor") else [sys.executable, "-m", "dagvisor"]
    )
    short = result.run_id[:8]
    print("look again with:")
    for verb in ("show", "audit", "report"):
        print(f"  {shell_command([*command, verb, short, '--journal', str(journal)])}")
    lineage = [*command, "lineage", short, "report", "--journal", str(journal)]
    print(f"  {shell_command(lineage)}")
    return 0


def main(directory: str | None = None) -> int:
    """Run the demo, journaled in ``directory`` (a new temporary one by default)."""
    where = (
        Path(directory)
        if directory
        else Path(tempfile.mkdtemp(prefix="dagvisor-demo-"))
    )
    where.mkdir(parents=True, exist_ok=True)
    return trio.run(_main, where)
