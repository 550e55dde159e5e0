"""The run's core and its changes, driven without an event loop.

`RunCore` (the live graph and its counters) and `Changes` (serving requests)
are plain synchronous code: no trio, no I/O. These tests build them by hand,
serve requests and end stages in a plain function, and check the effects:
what became ready, what was recorded, what a refusal left untouched.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Pipeline, StageState, stage
from dagvisor.actors._messages import AddEdge, AddStage, ChangeSet, ReplySlot
from dagvisor.errors import CycleError, UnknownStageError
from dagvisor.supervisor._audit import AuditLog
from dagvisor.supervisor._changes import Changes
from dagvisor.supervisor._core import RunCore
from dagvisor.supervisor._events import EventLog
from dagvisor.supervisor._graph import LiveGraph
from dagvisor.supervisor._retention import Retention


@stage
async def step(ctx):
    return 1


def _core(pipeline: Pipeline) -> tuple[RunCore, Changes, list]:
    graph, roots = LiveGraph.from_pipeline(pipeline)
    audit = AuditLog()
    clock = itertools.count()
    core = RunCore(
        "r",
        graph,
        audit,
        Retention(graph, audit, "all"),
        EventLog(),
        None,
        lambda: float(next(clock)),
    )
    return core, Changes(core, "run 'r'"), roots


def _add(name: str, after=(), before=()) -> AddStage:
    return AddStage(
        spec=step.named(name),
        after=tuple(after),
        before=tuple(before),
        reason="test",
        requester="t",
        reply=ReplySlot(),
    )


def test_a_chain_runs_through_the_core_without_an_event_loop():
    core, _, roots = _core(Pipeline.chain(step.named(f"s{i}") for i in range(3)))
    assert [node.name for node in roots] == ["s0"]
    order = []
    ready = list(roots)
    while ready:
        node = ready.pop(0)
        core.start(node)
        order.append(node.name)
        core.finish(node, StageState.SUCCEEDED, core.now())
        ready, core.ready = core.ready, []
    assert order == ["s0", "s1", "s2"]
    assert (core.unfinished, core.done, core.running) == (0, 3, 0)


def test_an_accepted_change_is_recorded_and_what_it_made_ready_is_left_to_start():
    core, changes, roots = _core(Pipeline("p").add(step.named("a")))
    (a,) = roots
    core.start(a)
    request = _add("b", after=["a"])
    change = changes.serve(request)
    assert change is not None
    assert change.added == ["b"]
    assert request.reply.answered
    assert core.version == 1
    assert [r.kind for r in core.audit] == ["add_stage"]
    core.finish(a, StageState.SUCCEEDED, core.now())
    assert [node.name for node in core.ready] == ["b"]


def test_a_refused_change_set_is_undone_whole_and_the_version_stays():
    core, changes, _ = _core(Pipeline("p").add(step.named("a")).add(step.named("z")))
    batch = ChangeSet(
        parts=(
            _add("b", after=["a"]),
            _add("c", after=["b"]),
            AddEdge(
                upstream="c",
                downstream="a",
                reason="r",
                requester="t",
                reply=ReplySlot(),
            ),
        ),
        reason="three parts, the last closes a cycle",
        requester="t",
        reply=ReplySlot(),
    )
    assert changes.serve(batch) is None
    assert set(core.graph.nodes) == {"a", "z"}
    assert core.version == 0
    assert core.unfinished == 2
    assert core.graph.nodes["a"].dependents == []
    (record,) = core.audit
    assert (record.accepted, record.error_type) == (False, CycleError.__name__)
    assert changes.serve(_add("d", after=["missing"])) is None
    assert core.audit[1].error_type == UnknownStageError.__name__


def test_a_failure_settles_everything_after_it_in_one_step():
    core, _, roots = _core(Pipeline.chain(step.named(f"s{i}") for i in range(1000)))
    (first,) = roots
    core.start(first)
    core.finish(first, StageState.FAILED, core.now())
    states = {node.state for node in core.graph}
    assert states == {StageState.FAILED, StageState.UPSTREAM_FAILED}
    assert (core.unfinished, core.done, core.failed) == (0, 1000, 1)
    assert core.ready == []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_pending_stages_are_found_without_looking_at_ended_ones(data):
    # Random graphs ended in random ways: the walk from the started and the
    # ready stages finds exactly the pending ones, in topological order.
    size = data.draw(st.integers(1, 12))
    pipeline = Pipeline("g")
    for i in range(size):
        after = data.draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        trigger = data.draw(st.sampled_from(["all_succeeded", "none_failed"]))
        spec = step.named(f"s{i}").options(trigger=trigger)
        pipeline = pipeline.add(spec, after=[f"s{j}" for j in sorted(after)])
    core, _, roots = _core(pipeline)
    ready = list(roots)
    ends = [StageState.SUCCEEDED, StageState.FAILED, StageState.SKIPPED]
    while True:
        for node in ready:  # as the supervisor does: every ready stage starts
            if node.state is StageState.PENDING:
                core.start(node)
        ready, core.ready = core.ready, []
        if ready:
            continue
        pending = [node for node in core.graph if node.state is StageState.PENDING]
        assert core.pending_stages() == sorted(pending, key=lambda n: n.order)
        running = list(core.started)
        if not running and not pending:
            break
        choices = [(node, state) for node in running for state in ends]
        choices += [(node, StageState.CANCELLED) for node in pending]
        node, state = data.draw(st.sampled_from(choices))
        core.finish(node, state, core.now())
        ready, core.ready = core.ready, []
    assert core.running == 0
