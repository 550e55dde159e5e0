"""Fraud detection: add a deep check when a transaction's score crosses a threshold.

Run: python examples/fraud_detection.py
"""

import random

import trio

from dagvisor import Pipeline, runtime, stage

THRESHOLD = 0.8


@stage
async def load_transactions(ctx):
    rng = random.Random(ctx.run_inputs["seed"])
    return [
        {
            "id": f"tx{i}",
            "amount": round(rng.uniform(5, 5000), 2),
            "country": rng.choice(["FR", "DE", "US", "NG", "BR"]),
        }
        for i in range(20)
    ]


@stage
async def score(ctx):
    tx = ctx.item
    risk = min(
        1.0, tx["amount"] / 5000 + (0.3 if tx["country"] in ("NG", "BR") else 0.0)
    )
    if risk > THRESHOLD:
        # A new pattern: this transaction gets a deep check before the decision.
        await ctx.add_stage(
            deep_check.named(f"deep_check[{tx['id']}]"),
            after=[ctx.name],
            before=["decide"],
            reason=f"{tx['id']} scored {risk:.2f} > {THRESHOLD}",
        )
    return {"id": tx["id"], "risk": round(risk, 2)}


@stage
async def deep_check(ctx):
    (scored,) = ctx.inputs.values()
    await trio.sleep(0.01)  # a slower model, an external service...
    return {"id": scored["id"], "blocked": scored["risk"] > 0.95}


@stage
async def fan_out(ctx):
    names = await ctx.expand(
        score,
        ctx.inputs["load_transactions"],
        key=lambda tx: tx["id"],
        reason="score each transaction",
    )
    for name in names:
        await ctx.add_edge(name, "decide", reason="decide after every score")


@stage
async def decide(ctx):
    blocked = sorted(
        v["id"]
        for k, v in ctx.inputs.items()
        if k.startswith("deep_check") and v["blocked"]
    )
    reviewed = sum(1 for k in ctx.inputs if k.startswith("deep_check"))
    return {"deep_checks": reviewed, "blocked": blocked}


pipeline = (
    Pipeline("fraud")
    .add(load_transactions)
    .add(fan_out, after=["load_transactions"])
    .add(decide, after=["fan_out"])
)


async def main() -> None:
    async with runtime() as rt:
        result = await rt.run(pipeline, inputs={"seed": 3})
    print("decision:", result.outputs["decide"])
    for record in result.audit:
        if record.kind == "add_stage":
            print("  ", record.requester, "->", record.added[0], ":", record.reason)


if __name__ == "__main__":
    trio.run(main)
