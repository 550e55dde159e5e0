"""Quality control: re-inspect every sample that fails, before the report.

Run: python examples/quality_control.py
"""

import random

import trio

from dagvisor import Pipeline, runtime, stage

TOLERANCE = 0.05


@stage
async def measure_batch(ctx):
    rng = random.Random(ctx.run_inputs["seed"])
    return [round(rng.gauss(10.0, 0.4), 3) for _ in range(12)]


@stage
async def inspect(ctx):
    deviation = abs(ctx.item - 10.0) / 10.0
    if deviation > TOLERANCE:
        await ctx.add_stage(
            reinspect.named(f"reinspect[{ctx.key}]"),
            after=[ctx.name],
            before=["report"],
            reason=f"sample {ctx.key} off by {deviation:.1%}",
        )
    return {"sample": ctx.key, "value": ctx.item, "pass": deviation <= TOLERANCE}


@stage
async def reinspect(ctx):
    (first,) = ctx.inputs.values()
    return {
        "sample": first["sample"],
        "confirmed_fail": abs(first["value"] - 10.0) > 0.6,
    }


@stage
async def plan(ctx):
    async with ctx.changes(
        reason="inspect every sample; the report covers them all"
    ) as batch:
        for name in batch.expand(inspect, ctx.inputs["measure_batch"]):
            batch.add_edge(name, "report")


@stage
async def report(ctx):
    first_pass = [v for k, v in ctx.inputs.items() if k.startswith("inspect")]
    second = [v for k, v in ctx.inputs.items() if k.startswith("reinspect")]
    return {
        "samples": len(first_pass),
        "failed_first_pass": sum(not v["pass"] for v in first_pass),
        "confirmed_failures": sum(v["confirmed_fail"] for v in second),
    }


pipeline = (
    Pipeline("qc")
    .add(measure_batch)
    .add(plan, after=["measure_batch"])
    .add(report, after=["plan"])
)


async def main() -> None:
    async with runtime() as rt:
        result = await rt.run(pipeline, inputs={"seed": 11})
    print("report:", result.outputs["report"])
    print(result.to_mermaid())


if __name__ == "__main__":
    trio.run(main)
