"""Pipeline versions against a plain model: sharing, branching, edges against the order.

Versions of one pipeline share their storage, and an edge added against
insertion order moves labels in it; every version ever made must still
read exactly as it did when it was made, and refuse exactly the cycles its
own edges would close.
"""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dagvisor import Pipeline, stage
from dagvisor.actors import _pipeline_store
from dagvisor.errors import CycleError, DuplicateStageError


@stage
async def step(ctx):
    return 1


NAMES = [f"s{i}" for i in range(8)]


class Model:
    """A pipeline as plain data: names in insertion order, dependencies by name."""

    def __init__(self, order: list[str], deps: dict[str, tuple[str, ...]]) -> None:
        self.order = order
        self.deps = deps

    def added(self, name: str, after: tuple[str, ...]) -> Model:
        return Model([*self.order, name], {**self.deps, name: after})

    def wired(self, up: str, down: str) -> Model:
        return Model(self.order, {**self.deps, down: (*self.deps[down], up)})

    def depends_on(self, stage_name: str, ancestor: str) -> bool:
        """Whether ``stage_name`` waits for ``ancestor``, directly or not."""
        seen, stack = set(), [stage_name]
        while stack:
            for dep in self.deps[stack.pop()]:
                if dep == ancestor:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return False


class PipelineVersions(RuleBasedStateMachine):
    gap = _pipeline_store.GAP

    def __init__(self) -> None:
        super().__init__()
        self.saved_gap = _pipeline_store.GAP
        _pipeline_store.GAP = self.gap
        self.versions: list[tuple[Pipeline, Model]] = []

    def teardown(self) -> None:
        _pipeline_store.GAP = self.saved_gap

    @initialize()
    def empty(self) -> None:
        self.versions.append((Pipeline("p"), Model([], {})))

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def add(self, data: st.DataObject, name: str) -> None:
        pipeline, model = data.draw(st.sampled_from(self.versions), label="version")
        if name in model.deps:
            with pytest.raises(DuplicateStageError):
                pipeline.add(step.named(name))
            return
        after = tuple(
            data.draw(st.lists(st.sampled_from(model.order), unique=True, max_size=3))
            if model.order
            else ()
        )
        added = pipeline.add(step.named(name), after=list(after))
        self.versions.append((added, model.added(name, after)))

    @precondition(lambda self: any(len(m.order) >= 2 for _, m in self.versions))
    @rule(data=st.data())
    def add_edge(self, data: st.DataObject) -> None:
        pipeline, model = data.draw(
            st.sampled_from([v for v in self.versions if len(v[1].order) >= 2]),
            label="version",
        )
        up = data.draw(st.sampled_from(model.order), label="up")
        down = data.draw(st.sampled_from(model.order), label="down")
        if up in model.deps[down]:
            assert pipeline.add_edge(up, down) is pipeline
            return
        if up == down or model.depends_on(up, down):
            with pytest.raises(CycleError) as info:
                pipeline.add_edge(up, down)
            path = info.value.path
            assert path[0] == up
            assert path[1] == down
            assert path[-1] == up
            for earlier, later in itertools.pairwise(path[1:]):
                assert earlier in model.deps[later]  # each link is a real dependency
            return
        wired = pipeline.add_edge(up, down)
        self.versions.append((wired, model.wired(up, down)))

    @invariant()
    def every_version_reads_as_it_was_made(self) -> None:
        for pipeline, model in self.versions:
            assert list(pipeline) == model.order
            assert len(pipeline) == len(model.order)
            for name in model.order:
                assert pipeline.dependencies(name) == model.deps[name]
            assert sorted(pipeline.edges()) == sorted(
                (dep, name) for name in model.order for dep in model.deps[name]
            )
            placed: set[str] = set()
            for spec, deps in pipeline.entries():
                assert deps == model.deps[spec.name]
                assert placed.issuperset(deps)
                placed.add(spec.name)
            assert placed == set(model.order)


class PipelineVersionsWithNarrowGaps(PipelineVersions):
    """Gaps of two labels: moves soon use them up, then every stage is relabelled."""

    gap = 2


class PipelineVersionsWithoutGaps(PipelineVersions):
    """No room between labels: every move relabels every stage."""

    gap = 1


TestPipelineVersions = PipelineVersions.TestCase
TestPipelineVersionsWithNarrowGaps = PipelineVersionsWithNarrowGaps.TestCase
TestPipelineVersionsWithoutGaps = PipelineVersionsWithoutGaps.TestCase


def _chain(count: int) -> Pipeline:
    return Pipeline.chain((step.named(f"c{i}") for i in range(count)), name="long")


def test_an_edge_costs_what_it_touches_not_the_pipeline():
    # Allocation is a measure of work that does not depend on the clock:
    # copying the 100,000-stage pipeline's lists and index once is megabytes.
    pipeline = _chain(100_000).add(step.named("side"))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        wired = pipeline.add_edge("c5", "side")  # along the order
        against = wired.add_edge("side", "c99999")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000
    assert against.dependencies("c99999") == ("c99998", "side")
    assert pipeline.dependencies("side") == ()  # the older version is untouched
    with pytest.raises(CycleError):
        against.add_edge("c99999", "c5")


def test_a_version_being_read_while_a_newer_one_is_made_reads_as_it_was():
    def three() -> Pipeline:
        pipeline = Pipeline("p").add(step.named("a"))
        return pipeline.add(step.named("b"), after=["a"]).add(step.named("c"))

    pipeline, entries, newer = three(), [], None
    for spec, deps in pipeline.entries():
        entries.append((spec.name, deps))
        if newer is None:  # the newest version's store changes under the loop
            newer = pipeline.add_edge("a", "c").add_edge("b", "c")
    assert entries == [("a", ()), ("b", ("a",)), ("c", ())]
    assert newer.dependencies("c") == ("a", "b")
    pipeline, edges = three(), []
    for edge in pipeline.edges():
        edges.append(edge)
        pipeline.add_edge("a", "c")  # the first time, on the store being read
    assert edges == [("a", "b")]
