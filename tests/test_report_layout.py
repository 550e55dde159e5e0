"""The report's graph in a real browser: laid out, wrapped, grouped, legible.

A 44-stage batch chain (40 batches, 4 checks added while it ran) must show
its added checks on the first screen, and a 10,000-stage run must draw its
groups, not its stages. Checked in headless chromium: where the boxes are
drawn (their boxes on screen), and a screenshot's size and pixels.
"""

from __future__ import annotations

import itertools
import json
import re

from browser import dump_dom, screenshot, where_drawn

from dagvisor import Pipeline, runtime, stage
from dagvisor.supervisor._assets import DAGRE_VERSION

SUSPICIOUS = (6, 17, 25, 33)
WINDOW = {"width": 1280, "height": 900}


@stage
async def batch(ctx):
    number = ctx.params["batch"]
    if number in SUSPICIOUS:
        await ctx.add_stage(
            check.named(f"check_{number:02d}", params={"batch": number, "limit": 0.9}),
            after=[ctx.name],
            before=[f"batch_{number + 1:02d}"],
            reason=f"batch {number} scored above 0.9",
        )
    return {"batch": number, "rows": 1000 + number, "score": round(number / 40, 3)}


@stage
async def check(ctx):
    return {"checked": ctx.name, "blocked": 2}


async def _batch_chain():
    pipeline = Pipeline("batches").add(batch.named("batch_00", params={"batch": 0}))
    for i in range(1, 40):
        pipeline = pipeline.add(
            batch.named(f"batch_{i:02d}", params={"batch": i}),
            after=[f"batch_{i - 1:02d}"],
        )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.stats.stages == 44
    return result


async def test_the_checks_added_to_a_44_stage_chain_are_seen_without_scrolling(
    tmp_path,
):
    result = await _batch_chain()
    report = tmp_path / "batches.html"
    report.write_text(result.to_html(), encoding="utf-8")
    drawn = where_drawn(report, "#dag g.stage", **WINDOW)
    stages = drawn["found"]
    assert isinstance(stages, list)
    checks = [s for s in stages if "dynamic" in s["cls"]]
    assert sorted(s["text"] for s in checks) == [f"check_{n:02d}" for n in SUSPICIOUS]
    # Every stage is drawn on the first screen, large enough to read.
    assert len(stages) == 44
    for box in stages:
        assert 0 <= box["left"] < box["right"] <= drawn["width"], box
        assert 0 <= box["top"] < box["bottom"] <= drawn["height"], box
        assert box["bottom"] - box["top"] >= 16, box  # text of 11 px or more
    # Wrapped: the chain uses several rows, not one 8,000 px line.
    rows = {round(box["top"]) for box in stages}
    assert len(rows) >= 4

    shot = screenshot(report, tmp_path / "batches.png", **WINDOW)
    assert (shot.width, shot.height) == (1280, 900)
    # The added checks' mark (a violet badge) is on the screen, once per check.
    for box in checks:
        area = (
            int(box["left"]) - 2,
            int(box["top"]) - 8,
            int(box["right"]) + 8,
            int(box["bottom"]) + 2,
        )
        assert shot.count(area, _violet) >= 12, box
    # And the graph is drawn, not blank: each quarter of the drawn area has ink.
    left = int(min(b["left"] for b in stages))
    top = int(min(b["top"] for b in stages))
    right = int(max(b["right"] for b in stages))
    bottom = int(max(b["bottom"] for b in stages))
    mid_x, mid_y = (left + right) // 2, (top + bottom) // 2
    for quarter in (
        (left, top, mid_x, mid_y),
        (mid_x, top, right, mid_y),
        (left, mid_y, mid_x, bottom),
        (mid_x, mid_y, right, bottom),
    ):
        assert shot.count(quarter, _ink) > 500, quarter


def _violet(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return b > 150 and r > 90 and g < 90


def _ink(rgb: tuple[int, int, int]) -> bool:
    return sum(rgb) < 600  # not white, not the lightest greys


@stage
async def load(ctx):
    return list(range(50))


@stage
async def clean(ctx):
    return "cleaned"


@stage
async def partition(ctx):
    part = ctx.item
    names = await ctx.expand(
        item,
        range(197),
        collect=merge.named(f"merge[{part}]"),
        reason=f"the rows of partition {part}",
    )
    return len(names)


@stage
async def item(ctx):
    return ctx.item * 2


@stage
async def merge(ctx):
    return sum(ctx.inputs.values())


@stage
async def plan(ctx):
    await ctx.expand(partition, ctx.inputs["load"], reason="one per partition")


async def test_a_10000_stage_run_draws_its_groups_and_details_on_demand(tmp_path):
    pipeline = Pipeline("wide").add(load).add(plan, after=["load"])
    pipeline = pipeline.add(clean.named("clean_00"), after=["load"])
    for i in range(1, 48):
        pipeline = pipeline.add(
            clean.named(f"clean_{i:02d}"), after=[f"clean_{i - 1:02d}"]
        )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    # load, plan, a 48-stage chain, 50 partitions of 197 items and a merge each
    assert result.stats.stages == 2 + 48 + 50 + 50 * 198 == 10_000
    page = result.to_html()
    report = tmp_path / "wide.html"
    report.write_text(page, encoding="utf-8")
    dom, console = dump_dom(report)
    assert console == []
    assert 'data-ready="yes"' in dom
    drawn = where_drawn(report, "#dag [data-box]", **WINDOW)
    labels = [box["shown"] for box in drawn["found"]]
    # The summary level: a handful of boxes, the 50 expansions of each kind
    # as one group each, the chain as one block.
    assert len(labels) == 6, labels
    assert "item[…]9,850 mapped in 50 expansions" in labels
    assert "merge[…]50 added" in labels
    assert "partition[…]50 mapped" in labels
    # All of it on the first screen, legible.
    for box in drawn["found"]:
        assert 0 <= box["left"] < box["right"] <= drawn["width"], box
        assert 0 <= box["top"] < box["bottom"] <= drawn["height"], box
        assert box["bottom"] - box["top"] >= 16, box
    # The detail is in the page, bounded: some stages with their outputs.
    data = re.search(
        r'<script id="graph-data" type="application/json">(.*?)</script>',
        page,
        re.DOTALL,
    )
    assert data is not None
    graph = json.loads(data.group(1))
    assert 0 < len(graph["stages"]) <= 2_000
    shot = screenshot(report, tmp_path / "wide.png", **WINDOW)
    assert (shot.width, shot.height) == (1280, 900)
    # On demand: a click on the group lists some of its stages with their outputs.
    (items,) = (i for i, box in enumerate(graph["boxes"]) if box["label"] == "item[…]")
    drawn = where_drawn(
        report, "#dag-details tbody tr", clicks=(f'[data-box="{items}"]',), **WINDOW
    )
    rows = [row["shown"] for row in drawn["found"]]
    assert len(rows) == 20
    shape = (
        r"item\[\d+\.\d+\]succeeded[\d.]+\d+#\d+ change_set from partition\[\d+\]: .*"
    )
    assert all(re.fullmatch(shape, row) for row in rows), rows
    assert "Listed: 20 of 9,850 stages" in drawn["details"]


async def test_the_graph_zooms_and_lists_a_stage_on_demand(tmp_path):
    result = await _batch_chain()
    report = tmp_path / "batches.html"
    report.write_text(result.to_html(), encoding="utf-8")
    before = where_drawn(report, "#dag", **WINDOW)
    assert before["layout"] == f"dagre {DAGRE_VERSION}"
    after = where_drawn(
        report, "#dag", clicks=('button[title="zoom in"]',) * 2, **WINDOW
    )
    assert (
        after["svg"][0] == round(before["svg"][0] * 1.25 * 1.25)
        or abs(after["svg"][0] - before["svg"][0] * 1.5625) <= 2
    )
    check = where_drawn(
        report,
        "#dag-details tbody td",
        clicks=("#dag g.stage.dynamic",),
        **WINDOW,
    )
    cells = [cell["shown"] for cell in check["found"]]
    assert cells[0] == "check_06"
    assert cells[1] == "succeeded"
    assert '{"batch": 6, "limit": 0.9}' in cells  # its parameters
    assert "{'checked': 'check_06', 'blocked': 2}" in cells  # its output
    assert "#0 add_stage from batch_06: batch 6 scored above 0.9" in cells


@stage
async def step(ctx):
    number = ctx.params["batch"]
    if number + 1 < 30:
        await ctx.add_stage(
            check.named(f"check_{number:02d}", params={"batch": number}),
            after=[ctx.name],
            before=[f"batch_{number + 1:02d}"],
            reason="every batch is checked",
        )
    return number


async def test_a_chain_checked_at_every_stage_is_folded_into_columns(tmp_path):
    pipeline = Pipeline("deep").add(step.named("batch_00", params={"batch": 0}))
    for i in range(1, 30):
        pipeline = pipeline.add(
            step.named(f"batch_{i:02d}", params={"batch": i}),
            after=[f"batch_{i - 1:02d}"],
        )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.stats.stages == 59  # no straight chain: 59 layers deep
    report = tmp_path / "deep.html"
    report.write_text(result.to_html(), encoding="utf-8")
    drawn = where_drawn(report, "#dag g.stage, #drawn", **WINDOW)
    note, *stages = drawn["found"]  # in document order
    assert len(stages) == 59
    assert re.search(r"folded into \d+ columns", note["shown"])
    for box in stages:
        assert 0 <= box["left"] < box["right"] <= drawn["width"], box
        assert 0 <= box["top"] < box["bottom"] <= drawn["height"], box
        assert box["bottom"] - box["top"] >= 16, box
    # Each column reads top to bottom: batch n+1 is below batch n, or
    # starts the next column, to its right.
    batches = [box for box in stages if box["text"].startswith("batch_")]
    columns = 1
    for before, after in itertools.pairwise(batches):
        if after["top"] < before["top"]:
            assert after["left"] > before["right"]
            columns += 1
    assert columns >= 3


@stage
async def source(ctx):
    return ctx.name


async def test_many_pipeline_stages_named_alike_are_one_box(tmp_path):
    pipeline = Pipeline("sources")
    for i in range(1_000):
        pipeline = pipeline.add(source.named(f"src_{i}"))
    async with runtime() as rt:
        result = await rt.run(pipeline)
    page = result.to_html()
    report = tmp_path / "sources.html"
    report.write_text(page, encoding="utf-8")
    drawn = where_drawn(report, "#dag [data-box]", **WINDOW)
    assert [box["shown"] for box in drawn["found"]] == ["src…1,000 stages"]


async def test_hundreds_of_unlike_stages_in_one_layer_are_folded_into_strips(tmp_path):
    pipeline = Pipeline("wide layer")
    for i in range(150):
        pipeline = pipeline.add(source.named(f"in{i}x")).add(
            source.named(f"out{i}y"), after=[f"in{i}x"]
        )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    report = tmp_path / "layer.html"
    report.write_text(result.to_html(), encoding="utf-8")
    drawn = where_drawn(report, "#drawn, #dag g.stage", **WINDOW)
    note, *stages = drawn["found"]
    assert len(stages) == 300
    assert re.search(r"folded into \d+ strips", note["shown"])
    assert all(box["bottom"] - box["top"] >= 16 for box in stages)
    on_screen = [
        box
        for box in stages
        if box["right"] <= drawn["width"] and box["bottom"] <= drawn["height"]
    ]
    # Not one row of 300 boxes: four strips or more on the first screen.
    assert len({round(box["top"]) for box in on_screen}) >= 8
    assert len(on_screen) >= 100
