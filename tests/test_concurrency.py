"""Failure mode: concurrency violation. Many stages change the graph at once."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.lowlevel

from dagvisor import Pipeline, StageState, runtime, stage
from dagvisor.actors import default_registry
from dagvisor.errors import (
    CycleError,
    DagvisorError,
    StageStateError,
    UnknownStageError,
)
from dagvisor.supervisor import Journal


@stage
async def leaf(ctx):
    return ctx.name


@pytest.mark.parametrize("journaled", [False, True])
async def test_a_thousand_stages_change_the_graph_at_once(journaled, tmp_path):
    n = 1000
    refusals: dict[str, type[DagvisorError]] = {}
    accepted: set[str] = set()

    @stage
    async def mutator(ctx):
        i = int(ctx.name[1:])
        rng = random.Random(i)
        await trio.lowlevel.checkpoint()
        # A stage of its own, after itself: always valid.
        name = await ctx.add_stage(
            leaf.named(f"leaf{i}"), after=[ctx.name], reason="mine"
        )
        accepted.add(name)
        # An edge between two other leaves: valid or a cycle, depending on
        # what the others did first; the supervisor decides in arrival order.
        j, k = rng.randrange(n), rng.randrange(n)
        for up, down in ((f"leaf{j}", f"leaf{k}"), (f"leaf{k}", f"leaf{j}")):
            try:
                await ctx.add_edge(up, down, reason="wire leaves")
                accepted.add(f"{up}->{down}")
            except DagvisorError as exc:
                refusals[f"{ctx.name}:{up}->{down}"] = type(exc)

    pipeline = Pipeline("stress")
    for i in range(n):
        pipeline = pipeline.add(mutator.named(f"m{i}"))
    default_registry.register(mutator.fn, name="tests.concurrency.mutator")  # a closure
    async with runtime(journal=tmp_path / "runs.db" if journaled else None) as rt:
        result = await rt.run(pipeline)
    if journaled:  # every request is in the journal too, in the audit's order
        journal = Journal(tmp_path / "runs.db")
        try:
            changes = [
                p for _, kind, p in journal.events(result.run_id) if kind == "change"
            ]
        finally:
            journal.close()
        assert [c["seq"] for c in changes] == [r.seq for r in result.audit]
        assert [c["accepted"] for c in changes] == [r.accepted for r in result.audit]

    # Every stage ended, successfully.
    assert result.ok
    assert all(state is StageState.SUCCEEDED for state in result.states.values())
    assert len(result.states) == 2 * n
    # Every request is in the audit, in order, with consecutive numbers, and
    # versions only move forward by one per effective change.
    audit = result.audit
    assert [r.seq for r in audit] == list(range(len(audit)))
    assert len(audit) == n + 2 * n
    version = 0
    for record in audit:
        assert record.version_before == version
        version = record.version_after
        assert version - record.version_before in (0, 1)
    # Every refusal was reported to its requester, and is in the audit.
    refused = [r for r in audit if not r.accepted]
    assert len(refused) == len(refusals)
    # A leaf may not exist yet, may have started already, or the edge may
    # close a cycle; nothing else can go wrong.
    assert set(refusals.values()) <= {CycleError, StageStateError, UnknownStageError}
    assert CycleError in set(refusals.values())
    seen_types = Counter(t.__name__ for t in refusals.values())
    assert Counter(r.error_type for r in refused) == seen_types
    # The final graph is acyclic: replay the accepted edges in audit order.
    edges: dict[str, set[str]] = {}
    for record in audit:
        if record.accepted:
            for up, down in record.edges:
                edges.setdefault(up, set()).add(down)
    _assert_acyclic(edges)


def _assert_acyclic(edges: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in edges:
        if root in state:
            continue
        stack = [(root, iter(edges.get(root, ())))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                raise AssertionError(f"cycle through {child}")
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(edges.get(child, ()))))
