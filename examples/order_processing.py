"""Order processing: a variable number of steps, mapped from the order itself.

Run: python examples/order_processing.py
"""

import trio

from dagvisor import Pipeline, runtime, stage


@stage
async def receive_order(ctx):
    return {
        "id": "ord-1042",
        "lines": [
            {"sku": "KB-01", "qty": 2, "warehouse": "lyon"},
            {"sku": "MS-07", "qty": 1, "warehouse": "lyon"},
            {"sku": "HD-22", "qty": 4, "warehouse": "gdansk"},
        ],
    }


@stage(retries=2, backoff=0.01)
async def reserve(ctx):
    line = ctx.item
    return {"sku": line["sku"], "reserved": line["qty"], "warehouse": line["warehouse"]}


@stage
async def ship(ctx):
    warehouse = ctx.item
    parcels = [v for v in ctx.inputs.values() if v["warehouse"] == warehouse]
    return {"warehouse": warehouse, "parcels": len(parcels)}


@stage
async def plan(ctx):
    order = ctx.inputs["receive_order"]
    reservations = await ctx.expand(
        reserve,
        order["lines"],
        key=lambda line: line["sku"],
        reason="one reservation per line",
    )
    warehouses = sorted({line["warehouse"] for line in order["lines"]})
    shipments = await ctx.expand(
        ship,
        warehouses,
        key=str,
        after=reservations,
        reason="one shipment per warehouse",
    )
    await ctx.add_stage(
        invoice, after=shipments, reason="invoice once everything shipped"
    )


@stage
async def invoice(ctx):
    return {"shipments": sorted(s["warehouse"] for s in ctx.inputs.values())}


pipeline = Pipeline("orders").add(receive_order).add(plan, after=["receive_order"])


async def main() -> None:
    async with runtime() as rt:
        result = await rt.run(pipeline)
    print("stages run:", sorted(result.states))
    print("invoice:", result.outputs["invoice"])


if __name__ == "__main__":
    trio.run(main)
