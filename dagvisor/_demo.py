"""``dagvisor demo``: a quality-control line that changes itself while it runs."""

from __future__ import annotations

import random

import trio

from dagvisor.actors import Pipeline, StageContext, stage
from dagvisor.supervisor import StageFinished, runtime

__all__ = ["main"]


@stage
async def sample(ctx: StageContext) -> list[float]:
    rng = random.Random(ctx.run_inputs.get("seed", 7))
    return [round(rng.uniform(0.5, 1.0), 3) for _ in range(8)]


@stage
async def inspect_sample(ctx: StageContext) -> dict[str, object]:
    await trio.sleep(0.01)
    return {"value": ctx.item, "ok": ctx.item < 0.8}


@stage
async def reinspect(ctx: StageContext) -> bool:
    await trio.sleep(0.01)
    return True


@stage
async def report(ctx: StageContext) -> dict[str, int]:
    results = [v for v in ctx.inputs.values() if isinstance(v, dict)]
    return {"inspected": len(results), "failed": sum(1 for r in results if not r["ok"])}


@stage
async def plan(ctx: StageContext) -> None:
    values = ctx.inputs["sample"]
    inspections = await ctx.expand(
        inspect_sample, values, reason="one inspection per item"
    )
    await ctx.add_stage(report, after=inspections, reason="summarise the inspections")
    await ctx.add_stage(
        escalate,
        after=inspections,
        before=["report"],
        reason="re-inspect what fails QC",
    )


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


async def _main() -> int:
    pipeline = Pipeline("qc-line").add(sample).add(plan, after=["sample"])
    async with runtime() as rt:
        run = await rt.start(pipeline, inputs={"seed": 7})
        events = run.events()
        async with trio.open_nursery() as nursery:

            async def show_progress() -> None:
                done = 0
                async for event in events:
                    if isinstance(event, StageFinished):
                        done += 1
                        print(f"  [{done:>3}] {event.stage}: {event.state}")

            nursery.start_soon(show_progress)
            result = await run.wait()
    print(f"\nrun {result.run_id}: {result.status}, {result.stats.stages} stages")
    print("report:", result.outputs["report"])
    print("audit trail:")
    for record in result.audit:
        print("  ", record)
    return 0


def main() -> int:
    """Run the demo; return the exit code."""
    return trio.run(_main)
