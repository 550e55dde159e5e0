"""Graph pictures: Mermaid and DOT, with states and run-time stages marked."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import RunFailed


@stage
async def ok(ctx):
    return 1


@stage
async def boom(ctx):
    raise ValueError("no")


@stage
async def grow(ctx):
    await ctx.add_stage(
        ok.named('odd "name"'), after=["grow"], reason="added at run time"
    )


async def _result():
    pipeline = (
        Pipeline("pic").add(grow).add(boom).add(ok.named("after_boom"), after=["boom"])
    )
    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    return info.value.result


async def test_mermaid_marks_states_and_stages_added_at_run_time():
    text = (await _result()).to_mermaid()
    assert text.startswith('---\ntitle: "pic"\n---\nflowchart TD\n')
    assert re.search(r'n\d+\["grow"\]:::succeeded', text)
    assert re.search(r'n\d+\["boom"\]:::failed', text)
    assert re.search(r'n\d+\["after_boom"\]:::upstream_failed', text)
    # Added at run time: rounded, and the quote in its name escaped.
    assert re.search(r'n\d+\("odd #34;name#34;"\):::succeeded', text)
    assert text.count("-->") == 2
    assert "classDef failed fill:#ffd6d6" in text


async def test_dot_marks_states_and_stages_added_at_run_time():
    text = (await _result()).to_dot()
    assert text.startswith('digraph "pic" {')
    assert text.rstrip().endswith("}")
    labels = re.findall(r'^    (n\d+) \[label="((?:[^"\\]|\\.)*)"', text, re.M)
    node = {label: node for node, label in labels}
    odd = 'odd \\"name\\"'  # the quotes in its name escaped
    assert set(node) == {"grow", "boom", "after_boom", odd}
    assert f'{node["boom"]} [label="boom", fillcolor="#ffd6d6"' in text
    # Added at run time: dashed.
    assert (
        f'{node[odd]} [label="{odd}", fillcolor="#d4f7d4", color="#2e8b2e", '
        'style="rounded,filled,dashed"'
    ) in text
    assert f"{node['grow']} -> {node[odd]};" in text
    assert f"{node['boom']} -> {node['after_boom']};" in text


async def test_a_live_run_draws_its_current_graph():
    gate = trio.Event()

    @stage
    async def held(ctx):
        await gate.wait()

    async with runtime() as rt:
        run = await rt.start(Pipeline("live").add(held).add(ok, after=["held"]))
        await trio.testing.wait_all_tasks_blocked()
        text = run.to_mermaid()
        gate.set()
        await run.wait()
    assert re.search(r'n\d+\["held"\]:::running', text)
    assert re.search(r'n\d+\["ok"\]:::pending', text)
