"""The live graph's core against a plain model: adding, wiring, ending and removing stages.

A plain sync state machine (no trio): every change the supervisor makes to
the graph, in any order, and after each the graph must agree with the model
on dependencies, dependents, counts and order. Removing dependents is
indexed for long lists; here lists are "long" from two entries on, so the
index is used, rebuilt and checked at every step.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dagvisor import StageState, stage
from dagvisor.supervisor import _dependents as dependents_module
from dagvisor.supervisor._graph import LiveGraph, Node

PENDING, SUCCEEDED = StageState.PENDING, StageState.SUCCEEDED


@stage
async def step(ctx):
    return 1


class GraphCore(RuleBasedStateMachine):
    searched = 1  # lists longer than one entry use the index

    def __init__(self) -> None:
        super().__init__()
        self.saved = dependents_module._SEARCHED
        dependents_module._SEARCHED = self.searched
        self.graph = LiveGraph()
        self.deps: dict[str, list[str]] = {}
        self.counter = 0
        self.rebuilt: set[str] = set()

    def teardown(self) -> None:
        dependents_module._SEARCHED = self.saved

    def _pending(self) -> list[str]:
        return [n for n in self.deps if self.graph.nodes[n].state is PENDING]

    def _reaches(self, start: str, target: str) -> bool:
        """Whether ``target`` waits for ``start``, directly or not (in the model)."""
        stack, seen = [target], set()
        while stack:
            for dep in self.deps[stack.pop()]:
                if dep == start:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return False

    @initialize(fan=st.integers(0, 6))
    def a_source_and_its_fan_out(self, fan: int) -> None:
        source = self.graph.add_node(step.named("src"), [])
        self.deps["src"] = []
        for i in range(fan):
            self.graph.add_node(step.named(f"f{i}"), [source])
            self.deps[f"f{i}"] = ["src"]

    @rule(data=st.data())
    def add_node(self, data: st.DataObject) -> None:
        names = list(self.deps)
        after = (
            data.draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
            if names
            else []
        )
        self.counter += 1
        name = f"n{self.counter}"
        nodes = self.graph.nodes
        self.graph.add_node(step.named(name), [nodes[n] for n in after])
        self.deps[name] = after

    @precondition(lambda self: self.deps)
    @rule(data=st.data())
    def add_edge(self, data: st.DataObject) -> None:
        pending = self._pending()
        if not pending:
            return
        up = data.draw(st.sampled_from(list(self.deps)), label="up")
        down = data.draw(st.sampled_from(pending), label="down")
        nodes = self.graph.nodes
        cycle = self.graph.cycle_path(nodes[up], nodes[down])
        assert (cycle is not None) == (up == down or self._reaches(down, up))
        if cycle is None and up not in self.deps[down]:
            self.graph.add_edge(nodes[up], nodes[down])
            self.deps[down].append(up)

    @precondition(lambda self: any(self.deps.values()))
    @rule(data=st.data())
    def remove_edge(self, data: st.DataObject) -> None:
        edges = [(dep, name) for name in self._pending() for dep in self.deps[name]]
        if not edges:
            return
        up, down = data.draw(st.sampled_from(edges))
        nodes = self.graph.nodes
        self.graph.remove_edge(nodes[up], nodes[down])
        self.deps[down].remove(up)

    @rule(data=st.data())
    def remove_node(self, data: st.DataObject) -> None:
        # As the supervisor does: a stage that has not started, whose
        # dependents (pending too) stay, waiting for one stage less.
        pending = self._pending()
        if not pending:
            return
        name = data.draw(st.sampled_from(pending))
        self.graph.remove_node(self.graph.nodes[name])
        del self.deps[name]
        for deps in self.deps.values():
            if name in deps:
                deps.remove(name)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        nodes = self.graph.nodes
        ready = [n for n in self._pending() if nodes[n].waiting == 0]
        if not ready:
            return
        node = nodes[data.draw(st.sampled_from(ready))]
        node.state = SUCCEEDED
        for child in node.dependents:
            child.waiting -= 1
        for dep in node.deps:  # the supervisor's cursor over ended dependents
            seen = dep.ended_dependents
            while seen < len(dep.dependents) and dep.dependents[seen].state.is_terminal:
                seen += 1
            dep.ended_dependents = seen

    @precondition(lambda self: self.deps)
    @rule(data=st.data())
    def rebuild_a_list(self, data: st.DataObject) -> None:
        # The supervisor rebuilds lists of dependents (replace_pending):
        # an index made before must not be trusted after.
        node = self.graph.nodes[data.draw(st.sampled_from(list(self.deps)))]
        rebuilt = list(node.dependents)
        random.Random(data.draw(st.integers(0, 9))).shuffle(rebuilt)
        node.dependents = rebuilt
        node.ended_dependents = 0
        self.rebuilt.add(node.name)  # its index, if any, is stale: never trusted

    @invariant()
    def the_graph_agrees_with_the_model(self) -> None:
        nodes = self.graph.nodes
        assert set(nodes) == set(self.deps)
        expected_dependents: dict[str, Counter[str]] = {n: Counter() for n in nodes}
        for name, deps in self.deps.items():
            for dep in deps:
                expected_dependents[dep][name] += 1
        for name, node in nodes.items():
            assert [dep.name for dep in node.deps] == self.deps[name]
            assert (
                Counter(child.name for child in node.dependents)
                == (expected_dependents[name])
            )
            assert node.readers == len(node.dependents)
            if node.state is PENDING:
                assert node.waiting == sum(
                    1 for dep in node.deps if dep.state is not SUCCEEDED
                )
            assert all(dep.order < node.order for dep in node.deps)
            ended = node.dependents[: node.ended_dependents]
            assert all(child.state.is_terminal for child in ended)
            if node.slots and name not in self.rebuilt:
                # Kept right by every removal: it indexes the list from the first.
                assert sorted(node.slots.values()) == list(range(len(node.slots)))
                assert all(node.dependents[pos] is c for c, pos in node.slots.items())


class GraphCoreSearched(GraphCore):
    """Lists searched as they always were, up to the default length."""

    searched = dependents_module._SEARCHED


TestGraphCore = GraphCore.TestCase
TestGraphCoreSearched = GraphCoreSearched.TestCase


@pytest.mark.parametrize("order", ["oldest first", "newest first", "shuffled"])
def test_removing_every_dependent_of_a_stage_in_any_order(order):
    graph = LiveGraph()
    source = graph.add_node(step.named("src"), [])
    children = [graph.add_node(step.named(f"c{i}"), [source]) for i in range(2000)]
    later = graph.add_node(step.named("later"), children[:3])  # a collector stays
    if order == "newest first":
        children.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(children)
    for child in children[:1000]:
        graph.remove_node(child)
    kept = {child.name for child in children[1000:]}
    assert {child.name for child in source.dependents} == kept
    assert source.readers == len(kept)
    for child in children[1000:]:
        graph.remove_node(child)
    assert source.dependents == []
    assert source.readers == 0
    assert later.deps == ()
    assert later.waiting == 0


@pytest.mark.parametrize("order", ["oldest first", "shuffled"])
def test_removing_n_dependents_compares_nodes_a_multiple_of_n_times(monkeypatch, order):
    # A count of work, not of time: list.remove compares the dependent with
    # every one before it (n * n / 4 comparisons for 2,000 removed in any
    # order but newest first); the index compares none.
    graph = LiveGraph()
    source = graph.add_node(step.named("src"), [])
    children = [graph.add_node(step.named(f"c{i}"), [source]) for i in range(2000)]
    if order == "shuffled":
        random.Random(3).shuffle(children)
    compared = 0

    def counting_eq(self, other):
        nonlocal compared
        compared += 1
        return self is other

    monkeypatch.setattr(Node, "__eq__", counting_eq)
    for child in children:
        graph.remove_node(child)
    assert source.dependents == []
    assert compared <= 40 * len(children)
