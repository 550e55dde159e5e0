"""Failure mode: cycle injection. A change that would close a cycle is refused."""

from __future__ import annotations

import random

import pytest

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.errors import CycleError
from dagvisor.supervisor._graph import LiveGraph


@stage
async def noop(ctx):
    return ctx.name


async def test_a_stage_closing_a_cycle_is_refused_with_the_path_and_the_run_goes_on():
    seen = {}

    @stage
    async def rewire(ctx):
        with pytest.raises(CycleError) as info:
            await ctx.add_edge("c", "b", reason="make b wait for c")
        seen["path"] = info.value.path
        return "rewired"

    pipeline = (
        Pipeline("p")
        .add(rewire)
        .add(noop.named("b"), after=["rewire"])
        .add(noop.named("c"), after=["b"])
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert seen["path"] == ("c", "b", "c")
    assert result.ok
    (record,) = result.audit
    assert not record.accepted
    assert record.error_type == "CycleError"
    assert record.version_before == record.version_after == 0
    assert result.states["c"] is StageState.SUCCEEDED


async def test_adding_a_stage_between_two_that_would_close_a_cycle_is_refused():
    @stage
    async def grow(ctx):
        with pytest.raises(CycleError) as info:
            await ctx.add_stage(
                noop.named("x"), after=["late"], before=["early"], reason="loop"
            )
        return info.value.path

    pipeline = (
        Pipeline("p")
        .add(grow)
        .add(noop.named("early"), after=["grow"])
        .add(noop.named("late"), after=["early"])
    )
    async with runtime() as rt:
        result = await rt.run(pipeline)
    assert result.outputs["grow"] == ("x", "early", "late", "x")
    assert "x" not in result.states


async def test_a_stage_cannot_wait_for_itself():
    @stage
    async def selfish(ctx):
        with pytest.raises(CycleError) as info:
            await ctx.add_stage(
                noop.named("x"), after=["y"], before=["y"], reason="both"
            )
        return info.value.path

    async with runtime() as rt:
        result = await rt.run(
            Pipeline("p").add(selfish).add(noop.named("y"), after=["selfish"])
        )
    assert result.outputs["selfish"] == ("x", "y", "x")


def _reaches(graph: LiveGraph, start, target) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node is target:
            return True
        for child in node.dependents:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return False


@pytest.mark.parametrize("seed", range(20))
def test_incremental_order_agrees_with_a_naive_reachability_check(seed):
    rng = random.Random(seed)
    graph = LiveGraph()
    nodes = [graph.add_node(noop.named(f"n{i}"), []) for i in range(30)]
    for _ in range(150):
        up, down = rng.sample(nodes, 2)
        cycle = graph.cycle_path(up, down)
        assert (cycle is not None) == _reaches(graph, down, up)
        if cycle is None and up not in down.deps:
            graph.add_edge(up, down)
        else:
            # The path is a real cycle through the new edge.
            assert cycle is None or (
                cycle[0] == cycle[-1] == up.name and cycle[1] == down.name
            )
        for node in nodes:  # the order is topological after every insertion
            assert all(dep.order < node.order for dep in node.deps)
    # Two nodes may share an order only if neither reaches the other.
    for a in nodes:
        for b in nodes:
            if a is not b and a.order == b.order:
                assert not _reaches(graph, a, b)


def test_a_cycle_check_visits_the_affected_region_not_the_graph():
    graph = LiveGraph()
    n = 100_000
    previous = []
    chain = []
    for i in range(n):
        node = graph.add_node(noop.named(f"s{i}"), previous)
        chain.append(node)
        previous = [node]
    side = graph.add_node(noop.named("side"), [])
    # An edge that agrees with the order needs no search at all.
    graph.last_region = 0
    assert graph.cycle_path(chain[10], side) is None
    assert graph.last_region == 0
    # An edge against the order searches only between the two ends.
    late = graph.add_node(noop.named("late"), [])
    assert graph.cycle_path(late, chain[n - 5]) is None
    assert graph.last_region <= 5
    graph.add_edge(late, chain[n - 5])
    assert all(dep.order < node.order for node in chain[n - 10 :] for dep in node.deps)


def test_inserting_before_an_early_stage_of_a_long_chain_visits_only_the_new_part():
    graph = LiveGraph()
    previous: list = []
    chain = []
    for i in range(100_000):
        node = graph.add_node(noop.named(f"c{i}"), previous)
        chain.append(node)
        previous = [node]
    gate = graph.add_node(noop.named("gate"), [])
    # "A deeper check before the decision": after the gate, before c1.
    for i in range(200):
        check = graph.add_node(noop.named(f"check{i}"), [gate], before=[chain[1]])
        graph.last_region = 0
        assert graph.cycle_path(check, chain[1]) is None
        graph.add_edge(check, chain[1])
        assert graph.last_region <= 4  # the check and the gate, not the chain
    assert graph.relabels <= 10  # the gap below c1 is used up now and then
    for node in [*chain[:5], gate, *(graph.nodes[f"check{i}"] for i in range(200))]:
        assert all(dep.order < node.order for dep in node.deps)
    assert chain[1].deps[0] is chain[0]


@pytest.mark.parametrize("seed", range(40))
def test_a_used_up_gap_relabels_the_graph_with_the_new_edge_in_it(monkeypatch, seed):
    from dagvisor.supervisor import _graph

    monkeypatch.setattr(_graph, "_GAP", 2)  # no room: every repair relabels
    rng = random.Random(seed)
    graph = LiveGraph()
    nodes = [graph.add_node(noop.named(f"n{i}"), []) for i in range(12)]
    for _ in range(60):
        up, down = rng.sample(nodes, 2)
        if graph.cycle_path(up, down) is None and up not in down.deps:
            graph.add_edge(up, down)
        for node in nodes:
            assert all(dep.order < node.order for dep in node.deps)
