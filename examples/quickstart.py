"""Quick start: a pipeline that maps over data it just computed, then sums it.

Run it with ``python examples/quickstart.py`` (or ``make demo``).
"""

import trio

from dagvisor import Pipeline, runtime, stage


@stage
async def fetch(ctx):
    return [3, 1, 2]


@stage
async def score(ctx):
    return ctx.item * 10  # ctx.item: the value this stage was mapped over


@stage
async def total(ctx):
    return sum(ctx.inputs.values())  # outputs of all upstream stages


@stage
async def plan(ctx):
    items = ctx.inputs["fetch"]
    await ctx.expand(score, items, collect=total, reason="one score per item, summed")


pipeline = Pipeline("demo").add(fetch).add(plan, after=["fetch"])


async def main() -> None:
    async with runtime() as rt:
        result = await rt.run(pipeline)
    print("total:", result.outputs["total"])  # 60
    print("audit trail:")
    for record in result.audit:
        print("  ", record)


if __name__ == "__main__":
    trio.run(main)
