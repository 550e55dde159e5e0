"""The immutable pipeline model: building, validation, long chains."""

from __future__ import annotations

import sys

import pytest

from dagvisor import Pipeline, compose, stage
from dagvisor.errors import CycleError, DuplicateStageError, UnknownStageError


@stage
async def a(ctx):
    return 1


@stage
async def b(ctx):
    return 2


@stage
async def c(ctx):
    return 3


def test_add_returns_a_new_pipeline_and_leaves_the_old_one_alone():
    empty = Pipeline("p")
    one = empty.add(a)
    two = one.add(b, after=["a"])
    assert len(empty) == 0
    assert list(one) == ["a"]
    assert list(two) == ["a", "b"]
    assert two.dependencies("b") == ("a",)
    assert "b" not in one
    with pytest.raises(AttributeError, match="immutable"):
        two.name = "other"  # type: ignore[misc]


def test_branching_from_an_older_version_does_not_leak_between_branches():
    base = Pipeline("p").add(a)
    left = base.add(b, after=["a"])
    right = base.add(c, after=["a"])
    assert list(left) == ["a", "b"]
    assert list(right) == ["a", "c"]
    # The same name may be added on each branch.
    assert list(right.add(b)) == ["a", "c", "b"]
    assert list(left) == ["a", "b"]
    assert "c" not in left


def test_after_accepts_names_specs_and_a_single_name():
    p = Pipeline("p").add(a).add(b, after=a).add(c, after="b")
    assert p.dependencies("b") == ("a",)
    assert p.dependencies("c") == ("b",)
    assert list(p.edges()) == [("a", "b"), ("b", "c")]


def test_unknown_dependency_names_the_stage_and_the_fix():
    with pytest.raises(UnknownStageError) as info:
        Pipeline("demo").add(b, after=["x"])
    assert info.value.name == "x"
    assert info.value.referrer == "b"
    assert "stage 'b' depends on 'x', which is not in pipeline 'demo'" in str(
        info.value
    )
    assert "add 'x' first" in str(info.value)


def test_duplicate_names_are_refused():
    with pytest.raises(DuplicateStageError) as info:
        Pipeline("p").add(a).add(a)
    assert info.value.name == "a"


def test_self_dependency_is_a_cycle():
    with pytest.raises(CycleError) as info:
        Pipeline("p").add(a, after=["a"])
    assert info.value.path == ("a", "a")


def test_add_edge_refuses_a_cycle_and_names_it():
    p = Pipeline("p").add(a).add(b, after=["a"]).add(c, after=["b"])
    with pytest.raises(CycleError) as info:
        p.add_edge("c", "a")
    assert info.value.path == ("c", "a", "b", "c")
    assert "'c' -> 'a' -> 'b' -> 'c'" in str(info.value)
    # The pipeline is unchanged.
    assert p.dependencies("a") == ()


def test_add_edge_out_of_insertion_order_still_runs_in_dependency_order():
    p = Pipeline("p").add(a).add(b).add_edge("b", "a")
    order = [spec.name for spec, _ in p.entries()]
    assert order.index("b") < order.index("a")


def test_compose_merges_and_refuses_clashes():
    one = Pipeline("one").add(a).add(b, after=["a"])
    two = Pipeline("two").add(c)
    merged = compose(one, two)
    assert merged.name == "one+two"
    assert sorted(merged) == ["a", "b", "c"]
    wired = merged.add_edge("b", "c")
    assert wired.dependencies("c") == ("b",)
    with pytest.raises(DuplicateStageError) as info:
        compose(one, Pipeline("three").add(a))
    assert "pipeline 'one'" in str(info.value)
    assert "pipeline 'three'" in str(info.value)


def test_chain_from_a_generator_of_a_million_stages_under_the_default_recursion_limit():
    assert sys.getrecursionlimit() <= 1000
    n = 1_000_000
    p = Pipeline.chain((a.named(f"s{i}") for i in range(n)), name="deep")
    assert len(p) == n
    assert p.dependencies("s999999") == ("s999998",)
    # A cycle check across the whole chain is iterative too.
    with pytest.raises(CycleError) as info:
        p.add_edge("s999999", "s0")
    assert len(info.value.path) == n + 1


def test_chain_refuses_duplicates_and_non_stages():
    with pytest.raises(DuplicateStageError):
        Pipeline.chain([a, a])
    with pytest.raises(TypeError, match="@stage"):
        Pipeline.chain([a, "b"])  # type: ignore[list-item]


def test_add_needs_a_stage():
    async def not_a_stage(ctx):
        return 1

    with pytest.raises(TypeError, match="@stage"):
        Pipeline("p").add(not_a_stage)  # type: ignore[arg-type]
