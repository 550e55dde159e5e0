"""Store sales: a CSV into pandas, a price model per region, an HTML report out.

Run: python examples/store_sales.py  (needs pip install 'dagvisor[data]')

The day's sales (a CSV made on the spot with numpy: 4 regions, 90 days)
are loaded with pandas, cleaned, and one least-squares fit per region
(units sold against price) is mapped over the regions found in the data,
with a collecting report. Runs are journaled with the ``data`` codec: the
DataFrames go to the journal as Arrow, the fits as JSON, and ``dagvisor
show RUN --output regions --journal ...`` prints them from the journal
without this file. The raw load is ``persist=False``: the CSV is the
source of truth, so the journal keeps only the cleaned frame (a resume
reads the CSV again if a stage still needs it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import trio

from dagvisor import Journal, Pipeline, runtime, stage

REGIONS = {"north": -2.0, "south": -1.2, "east": -0.6, "west": -1.6}


def write_sales_csv(path: Path, days: int = 90, seed: int = 7) -> None:
    """Fake sales: units fall with price, at a slope of its own in each region."""
    rng = np.random.default_rng(seed)
    rows = []
    for region, slope in REGIONS.items():
        price = rng.uniform(5.0, 15.0, days).round(2)
        units = (120 + slope * price * 3 + rng.normal(0, 3, days)).round()
        units[rng.integers(0, days, 3)] = np.nan  # a few days the till was down
        rows.append(
            pd.DataFrame(
                {
                    "day": pd.date_range("2026-01-01", periods=days),
                    "region": region,
                    "price": price,
                    "units": units,
                }
            )
        )
    pd.concat(rows).to_csv(path, index=False)


@stage(persist=False)  # the CSV is the source: not copied into the journal
def extract(ctx) -> pd.DataFrame:
    return pd.read_csv(ctx.run_inputs["csv"], parse_dates=["day"])


@stage
def clean(ctx) -> pd.DataFrame:
    sales = ctx.inputs["extract"].dropna(subset=["units"])
    return sales.assign(revenue=sales["price"] * sales["units"])


@stage
async def plan(ctx) -> None:
    regions = sorted(ctx.inputs["clean"]["region"].unique().tolist())
    await ctx.expand(
        fit_region,
        regions,
        key=str,
        after=["clean"],  # each fit reads the cleaned frame
        collect=report,
        reason="one model per region",
    )


@stage
def fit_region(ctx) -> dict:
    sales = ctx.inputs["clean"]
    sales = sales[sales["region"] == ctx.item]
    design = np.column_stack([np.ones(len(sales)), sales["price"].to_numpy()])
    target = sales["units"].to_numpy()
    (intercept, slope), *_ = np.linalg.lstsq(design, target, rcond=None)
    predicted = design @ np.array([intercept, slope])
    r2 = 1 - ((target - predicted) ** 2).sum() / ((target - target.mean()) ** 2).sum()
    return {
        "region": ctx.item,
        "units_per_price_unit": round(float(slope), 2),
        "intercept": round(float(intercept), 1),
        "r2": round(float(r2), 3),
        "days": len(sales),
    }


@stage
def regions(ctx) -> pd.DataFrame:
    sales = ctx.inputs["clean"]
    return sales.groupby("region", as_index=False).agg(
        days=("day", "nunique"), units=("units", "sum"), revenue=("revenue", "sum")
    )


@stage
def report(ctx) -> dict:
    fits = [v for k, v in ctx.inputs.items() if k.startswith("fit_region")]
    steepest = min(fits, key=lambda fit: fit["units_per_price_unit"])
    return {"regions": len(fits), "most_price_sensitive": steepest["region"]}


PIPELINE = (
    Pipeline("store_sales")
    .add(extract)
    .add(clean, after=["extract"])
    .add(plan, after=["clean"])
    .add(regions, after=["clean"])
)


async def main(folder: Path) -> None:
    csv = folder / "sales.csv"
    write_sales_csv(csv)
    journal = folder / "sales.db"
    async with runtime(journal=journal, codec="data") as rt:
        result = await rt.run(PIPELINE, inputs={"csv": str(csv)})
    print("report:", result.outputs["report"])
    for name in sorted(result.outputs):
        if name.startswith("fit_region"):
            fit = result.outputs[name]
            print(
                f"  {fit['region']}: {fit['units_per_price_unit']} units per 1.00 (r2 {fit['r2']})"
            )
    page = folder / "sales-report.html"
    page.write_text(result.to_html(), encoding="utf-8")
    print(f"HTML report: {page}")
    # The journal alone: no code of this file is needed to read it back.
    with Journal(journal, readonly=True) as stored:
        again = stored.result(result.run_id)
    print("from the journal:")
    print(again.outputs["regions"].to_string(index=False))
    print("raw load journaled:", "extract" in again.outputs)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))
