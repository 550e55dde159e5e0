"""The HTML run report: its content, large graphs, and a real headless browser."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import trio

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import RunFailed
from dagvisor.supervisor import Journal


@stage
async def sample(ctx):
    return [0.5, 0.9, 0.7, 0.95]


@stage
async def inspect_item(ctx):
    return {"value": ctx.item, "ok": ctx.item < 0.8}


@stage
async def plan(ctx):
    names = await ctx.expand(inspect_item, ctx.inputs["sample"], reason="one per item")
    await ctx.add_stage(summary, after=names, reason="summarise")


@stage
async def summary(ctx):
    return sum(1 for v in ctx.inputs.values() if not v["ok"])


@stage
async def broken(ctx):
    raise ValueError("sensor offline")


@stage
async def link(ctx):
    return 1


PIPELINE = (
    Pipeline("qc").add(sample).add(plan, after=["sample"]).add(broken, after=["sample"])
)


async def _failed_result(journal=None):
    async with runtime(
        on_failure="continue", monitor_interval=0.001, journal=journal
    ) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(PIPELINE)
    return info.value.result


def graph_of(page: str) -> dict:
    """The graph view's data in a report."""
    found = re.search(
        r'<script id="graph-data" type="application/json">(.*?)</script>',
        page,
        re.DOTALL,
    )
    assert found is not None
    return json.loads(found.group(1))


def drawn_boxes(page: str) -> dict[str, dict]:
    """The boxes of a report's graph by their full label."""
    return {
        f"{box['label']} {box['note']}".strip(): box for box in graph_of(page)["boxes"]
    }


async def test_the_report_shows_graph_changes_failures_and_memory():
    result = await _failed_result()
    page = result.to_html()
    assert page.startswith("<!DOCTYPE html>")
    for section in ("summary", "graph", "timeline-section", "changes-section"):
        assert f'id="{section}"' in page
    # Stages added at run time are marked; the mapped group is one box.
    boxes = drawn_boxes(page)
    group = boxes["inspect_item[…] 4 mapped"]
    assert (group["kind"], group["state"], group["added"]) == ("group", "succeeded", 4)
    assert boxes["summary"]["added"] == 1
    assert boxes["sample"]["added"] == 0
    # Its stages are listed with their outputs.
    graph = graph_of(page)
    listed = {graph["stages"][i]["name"]: graph["stages"][i] for i in group["stages"]}
    assert listed["inspect_item[1]"]["output"] == "{'value': 0.9, 'ok': False}"
    (broken_stage,) = (s for s in graph["stages"] if s["name"] == "broken")
    assert broken_stage["error"] == "ValueError: sensor offline"
    # Who changed the graph, and why.
    assert "<td>plan</td><td>expand</td>" in page
    assert "<td>summarise</td>" in page
    # The failure with its traceback.
    assert "broken: ValueError" in page
    assert "raise ValueError(&quot;sensor offline&quot;)" in page
    assert 'id="memory"' in page
    # Self-contained: nothing is fetched at view time.
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "@import" not in page


async def test_a_report_read_back_from_the_journal(tmp_path):
    result = await _failed_result(journal=tmp_path / "runs.db")
    with Journal(tmp_path / "runs.db", readonly=True) as journal:
        stored = journal.result(result.run_id)
    page = stored.to_html()
    assert "inspect_item[…] 4 mapped" in drawn_boxes(page)
    assert "raise ValueError(&quot;sensor offline&quot;)" in page
    assert 'id="memory"' in page  # the samples were journaled
    assert stored.stats.peak_rss == result.stats.peak_rss
    assert len(stored.stats.memory) == len(result.stats.memory)


async def test_a_report_of_a_hundred_thousand_stages_stays_small(tmp_path):
    @stage
    async def fan(ctx):
        names = await ctx.expand(link, range(100_000), reason="wide")
        await ctx.add_stage(summary_of_links, after=names, reason="join")

    pipeline = Pipeline("wide").add(fan).add(link.named("c0"))
    for i in range(1, 2_000):
        pipeline = pipeline.add(link.named(f"c{i}"), after=[f"c{i - 1}"])
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.stats.stages == 102_002
    page = result.to_html()
    print(f"report of {result.stats.stages:,} stages: {len(page.encode()):,} bytes")
    assert len(page.encode()) < 200_000
    # fan, the group, the join, the chain
    assert sorted(drawn_boxes(page)) == [
        "c0 … c1999 chain of 2,000",
        "fan",
        "link[…] 100,000 mapped",
        "summary_of_links",
    ]
    assert "running</text>" in page  # concurrency over time, not 100,000 bars
    if _chromium_or_none() is not None:
        report = tmp_path / "wide.html"
        report.write_text(page, encoding="utf-8")
        dom = await _open_in_browser(report, tmp_path / "wide.png")
        assert 'data-ready="yes"' in dom
        assert "4 boxes for 102,002 stages" in dom


@stage
async def summary_of_links(ctx):
    return len(ctx.inputs)


def _chromium_or_none() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium() -> str:
    found = _chromium_or_none()
    if found is not None:
        return found
    pytest.skip(
        "no chromium on this machine: `make test` installs Debian's chromium "
        "when it can (apt-get as root); install it to run this test"
    )


async def _open_in_browser(report, screenshot) -> str:
    """Load ``report`` in headless chromium; its DOM after the scripts ran.

    Fails on any message the page wrote to the console; saves a screenshot.
    """
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu"]
    with trio.fail_after(120):
        dumped = await trio.run_process(
            [
                *common,
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                report.as_uri(),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    errors = dumped.stderr.decode(errors="replace")
    assert dumped.returncode == 0, errors
    console = [line for line in errors.splitlines() if ":CONSOLE" in line]
    assert console == []
    window = ["--window-size=1200,1600", f"--screenshot={screenshot}"]
    with trio.fail_after(120):
        shot = await trio.run_process(
            [*common, *window, report.as_uri()],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
    return dumped.stdout.decode()


async def test_the_report_renders_in_a_headless_browser(tmp_path):
    result = await _failed_result()
    report = tmp_path / "report.html"
    report.write_text(result.to_html(), encoding="utf-8")
    dom = await _open_in_browser(report, tmp_path / "report.png")
    assert 'data-ready="yes"' in dom  # the script ran to its end
    assert "data-errors" not in dom
    assert re.search(r'id="drawn">\d+ boxes for 8 stages<', dom)
    assert dom.count('<g class="stage') >= 5
    for section in ("summary", "graph", "timeline", "changes", "failures"):
        assert f'id="{section}' in dom
