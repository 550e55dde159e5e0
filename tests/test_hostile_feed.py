"""The event stream's text against hostile stage names and random runs.

A run's stage events are kept as plain records and encoded for the event
stream in batches; whatever the names (quotes, newlines, markup, lone
surrogates, any code point), the stream says what `Run.events` says, event
for event, in order.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from control_helpers import served, sse_events
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import hostile_stage_names, small_pipelines

from dagvisor import Pipeline, stage
from dagvisor.actors import StageState
from dagvisor.supervisor._control._feed import kept_text
from dagvisor.supervisor._control._forms import dumps, event_form
from dagvisor.supervisor._events import (
    EVENT,
    EventLog,
    EventsLost,
    StageFinished,
    StageQueued,
    StageStarted,
    as_events,
)

MOVES = [state.value for state in StageState if state is not StageState.PENDING]


def _normal(form: tuple[str, dict[str, Any]]) -> tuple[str, Any]:
    """An event's form as the stream's client decodes it."""
    name, data = form
    return name, json.loads(dumps(data))


# A stage's move, or an event kept as its object, as `EventLog.take` gives them.
kept_events = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(MOVES), hostile_stage_names(), st.floats(0, 1e9)),
        st.tuples(
            st.just(EVENT),
            st.one_of(
                st.builds(StageStarted, hostile_stage_names(), st.floats(0, 1e9)),
                st.builds(StageQueued, hostile_stage_names(), st.floats(0, 1e9)),
                st.builds(
                    StageFinished,
                    hostile_stage_names(),
                    st.sampled_from(list(StageState)),
                    st.floats(0, 1e9),
                ),
            ),
            st.just(0.0),
        ),
    ),
    max_size=30,
)


@given(events=kept_events, lost=st.none() | st.integers(1, 10**9))
def test_kept_events_are_encoded_as_their_events(events, lost):
    # Moves and event objects, mixed in any order, after a loss or not:
    # the text is each event's form, in order, and ASCII only.
    if lost is not None:
        events = [(EVENT, EventsLost(lost), 0.0), *events]
    kept = [item for event in events for item in event]
    text = kept_text(kept)
    assert text.isascii()
    assert sse_events(text) == [_normal(event_form(e)) for e in as_events(kept)]
    assert len(as_events(kept)) == len(events)


@given(
    moves=st.lists(
        st.tuples(hostile_stage_names(), st.sampled_from(MOVES), st.floats(0, 1e9)),
        max_size=20,
    )
)
def test_a_reader_of_the_log_gets_the_event_objects(moves):
    # What `Run.events` yields is unchanged: the event objects, built from
    # the records, one by one or taken at once.
    log = EventLog()
    one, batch = log.subscribe(100), log.subscribe(100)
    for name, state, time in moves:
        log.moved(name, state, time)
    expected = []
    for name, state, time in moves:
        if state == "running":
            expected.append(StageStarted(name, time))
        elif state == "queued":
            expected.append(StageQueued(name, time))
        else:
            expected.append(StageFinished(name, StageState(state), time))
    got = [one.receive_nowait() for _ in moves]
    assert got == expected
    assert all(type(g) is type(e) for g, e in zip(got, expected, strict=True))
    finished = [g for g in got if type(g) is StageFinished]
    assert all(type(g.state) is StageState for g in finished)
    assert as_events(batch._take_all()) == expected


GATE: list[trio.Event] = []


@stage
async def gate(ctx: Any) -> int:
    await GATE[0].wait()
    return 0


@stage
async def fine(ctx: Any) -> int:
    return 0


@stage
async def broken(ctx: Any) -> int:
    msg = "this stage fails"
    raise RuntimeError(msg)


@settings(max_examples=10)  # each example serves a runtime
@given(
    shape=small_pipelines(max_stages=6),
    names=st.lists(hostile_stage_names(), min_size=6, max_size=6, unique=True),
    failing=st.sets(st.integers(0, 5)),
)
def test_the_event_stream_is_the_runs_events_in_order(
    tmp_path_factory, shape, names, failing
):
    # A random run, followed both in process and over HTTP from its start:
    # the stream carries the same events, in the same order, then `end`.
    tmp_path = tmp_path_factory.mktemp("feed")
    pipeline = Pipeline("random").add(gate.named("gate"))
    for i, (_, deps) in enumerate(shape):
        body = broken if i in failing else fine
        after = [names[int(dep[1:])] for dep in deps] or ["gate"]
        pipeline = pipeline.add(body.named(names[i]), after=after)

    async def main() -> None:
        GATE[:] = [trio.Event()]
        async with served(tmp_path) as (rt, _, vi, _, _):
            run = await rt.start(pipeline)
            watched = run.events()
            async with vi.stream("GET", f"/api/runs/{run.id}/events") as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith(":")
                GATE[0].set()
                text = "\n".join([line async for line in lines])
            events = [_normal(event_form(event)) async for event in watched]
        streamed = sse_events(text)
        assert streamed[-1][0] == "end"
        assert streamed[:-1] == events
        finished = [data["stage"] for kind, data in events if kind == "stage_finished"]
        assert sorted(finished) == sorted(["gate", *names[: len(shape)]])

    trio.run(main)
