"""The event stream's text against hostile stage names, random runs and headers.

A run's stage events are kept as plain items and encoded for the event
stream in batches, deflated once for the clients that ask; whatever the
names (quotes, newlines, markup, lone surrogates, any code point) and
whatever a client's ``Accept-Encoding``, each stream says what `Run.events`
says, event for event, in order, and a deflated one is a whole zlib stream.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from typing import TYPE_CHECKING, Any

import httpx
import trio
from control_helpers import fan, held, served, sse_events
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import hostile_stage_names, small_pipelines
from trio.testing import wait_all_tasks_blocked

from dagvisor import Pipeline, stage
from dagvisor.actors import StageState
from dagvisor.supervisor._control import _feed
from dagvisor.supervisor._control._deflate import accepts_deflate, adler_combine
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

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


_stage_moves = st.lists(
    st.tuples(hostile_stage_names(), st.sampled_from(MOVES), st.floats(0, 1e9)),
    max_size=40,
)
"""Stage moves of hostile names, for a log fed and read at any points."""


def _one_by_one(stream: Any) -> list[Any]:
    """What ``stream`` holds now, read one event at a time."""
    events: list[Any] = []
    while True:
        try:
            events.append(stream.receive_nowait())
        except trio.WouldBlock:
            return events


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


@given(
    moves=_stage_moves,
    buffer=st.integers(1, 12),
    takes=st.sets(st.integers(0, 40)),
)
def test_taking_at_once_gives_what_reading_one_by_one_gives(moves, buffer, takes):
    # Taken in batches at any points, with any buffer (so after a loss or
    # not), a reader gets the events, and the `EventsLost`, that a reader of
    # the same buffer reading one by one at the same points gets.
    log = EventLog()
    one, batch = log.subscribe(buffer), log.subscribe(buffer)
    by_one: list[Any] = []
    by_batch: list[Any] = []

    def read() -> None:
        by_one.extend(_one_by_one(one))
        by_batch.extend(as_events(batch._take_all()))

    for at, (name, state, time) in enumerate(moves):
        if at in takes:
            read()
        log.moved(name, state, time)
    read()
    assert by_batch == by_one
    assert batch.lost == one.lost
    assert sum(e.count for e in by_batch if type(e) is EventsLost) == one.lost


@given(
    moves=_stage_moves,
    buffer=st.integers(1, 12),
    takes=st.sets(st.integers(0, 40)),
    one_by_one=st.sets(st.integers(0, 40)),
)
def test_the_only_reader_taking_at_once_gets_what_reading_one_by_one_gets(
    moves, buffer, takes, one_by_one
):
    # A log with a single reader, which takes at once at some points and
    # reads one event at others (its takes empty the ring), against a log fed
    # alike whose single reader reads one by one at the same points.
    taking, reading = EventLog(), EventLog()
    taker, reader = taking.subscribe(buffer), reading.subscribe(buffer)
    got: list[Any] = []
    expected: list[Any] = []

    def read_all() -> None:
        expected.extend(_one_by_one(reader))

    for at, (name, state, time) in enumerate(moves):
        if at in takes:
            got.extend(as_events(taker._take_all()))
            read_all()
        elif at in one_by_one:
            for log, stream, out in ((taking, taker, got), (reading, reader, expected)):
                with contextlib.suppress(trio.WouldBlock):
                    out.append(stream.receive_nowait())
                assert log.readers == 1
        taking.moved(name, state, time)
        reading.moved(name, state, time)
    got.extend(as_events(taker._take_all()))
    read_all()
    assert got == expected
    assert taker.lost == reader.lost


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


@contextlib.asynccontextmanager
async def _followed(
    client: Any, url: str, texts: dict[str, str]
) -> AsyncIterator[None]:
    """Two clients following ``url`` to its end, one deflated and one plain,
    each stream's text put in ``texts`` by its encoding; the block runs once
    both streams are open, and the two are read to their end after it."""
    opened = trio.Semaphore(0)

    async def follow(encoding: str) -> None:
        texts[encoding] = await _raw_stream(client, url, encoding, opened)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, "deflate")
        nursery.start_soon(follow, "identity")
        await opened.acquire()
        await opened.acquire()
        yield


async def _raw_stream(
    client: httpx.AsyncClient, url: str, encoding: str, opened: trio.Semaphore
) -> str:
    """An event stream's text as sent, decoded here: zlib checks the trailer.
    ``opened`` is released once the stream's first bytes came (the client
    follows the run from then on)."""
    headers = {"Accept-Encoding": encoding}
    async with client.stream("GET", url, headers=headers) as stream:
        sent = stream.headers.get("content-encoding", "identity")
        assert sent == ("deflate" if encoding == "deflate" else "identity")
        chunks = stream.aiter_raw()
        raw = await anext(chunks)
        opened.release()
        raw += b"".join([chunk async for chunk in chunks])
    if sent == "deflate":
        raw = zlib.decompress(raw)  # the whole zlib stream, its checksum checked
    assert raw.startswith(b": ")
    return raw.decode("ascii")


@settings(max_examples=10)  # each example serves a runtime
@given(
    shape=small_pipelines(max_stages=6),
    names=st.lists(hostile_stage_names(), min_size=6, max_size=6, unique=True),
    failing=st.sets(st.integers(0, 5)),
)
def test_the_event_stream_is_the_runs_events_in_order(
    tmp_path_factory, shape, names, failing
):
    # A random run, followed in process and over HTTP from its start, by a
    # client that asks for the stream deflated and one that does not: each
    # stream carries the same events, in the same order, then `end`.
    tmp_path = tmp_path_factory.mktemp("feed")
    pipeline = Pipeline("random").add(gate.named("gate"))
    for i, (_, deps) in enumerate(shape):
        body = broken if i in failing else fine
        after = [names[int(dep[1:])] for dep in deps] or ["gate"]
        pipeline = pipeline.add(body.named(names[i]), after=after)

    async def main() -> None:
        GATE[:] = [trio.Event()]
        texts: dict[str, str] = {}
        async with served(tmp_path) as (rt, _, vi, _, _):
            run = await rt.start(pipeline)
            watched = run.events()
            async with _followed(vi, f"/api/runs/{run.id}/events", texts):
                GATE[0].set()
            events = [_normal(event_form(event)) async for event in watched]
        for text in texts.values():
            streamed = sse_events(text)
            assert streamed[-1][0] == "end"
            assert streamed[:-1] == events
        finished = [data["stage"] for kind, data in events if kind == "stage_finished"]
        assert sorted(finished) == sorted(["gate", *names[: len(shape)]])

    trio.run(main)


@given(first=st.binary(max_size=3000), second=st.binary(max_size=3000))
def test_checksums_combine_as_zlib_computes_them(first, second):
    combined = adler_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


@given(header=st.text(max_size=200) | st.binary(max_size=200).map(repr))
def test_any_accept_encoding_header_is_read_without_error(header):
    assert accepts_deflate(header) in (True, False)


def test_deflate_is_sent_only_to_a_client_that_asks_for_it():
    assert accepts_deflate("deflate")
    assert accepts_deflate("gzip, deflate, br")
    assert accepts_deflate(" DEFLATE ;q=0.5")
    assert not accepts_deflate("")
    assert not accepts_deflate("gzip")
    assert not accepts_deflate("*")
    assert not accepts_deflate("deflate;q=0")
    assert not accepts_deflate("deflate;q=nan")
    assert not accepts_deflate("deflate;q=2")
    assert not accepts_deflate("deflate;q=")
    assert not accepts_deflate("deflated, x-deflate")
    assert not accepts_deflate("gzip," * 100_000 + "deflate")  # read up to 64 items


async def test_a_reader_that_lost_events_gets_a_whole_deflated_stream(
    tmp_path, monkeypatch
):
    # A burst larger than the run keeps for the feed: each client is told
    # what it lost, deflated or not, and the deflated stream is whole (its
    # checksum, over what this client was sent, checked by zlib).
    monkeypatch.setattr(_feed, "EVENT_BUFFER", 4)
    monkeypatch.setattr(_feed, "TAKE_BUFFER", 4)
    texts: dict[str, str] = {}
    async with served(tmp_path) as (rt, _, vi, _, _):
        run = await rt.start(held())
        async with _followed(vi, f"/api/runs/{run.id}/events", texts):
            watched = run.events(buffer=10_000)
            await run.add_stage(fan, reason="fan out")
            done = 0
            with trio.fail_after(30):  # a guard against a hang, not a measure
                async for event in watched:
                    done += isinstance(event, StageFinished)
                    if done == 301:  # fan and its 300 leaves
                        break
            await run.cancel()
    for text in texts.values():
        events = sse_events(text)
        lost = [data["count"] for kind, data in events if kind == "lost"]
        assert lost
        assert all(count > 0 for count in lost)
        seen = len([kind for kind, _ in events if kind not in ("lost", "end")])
        assert seen + sum(lost) >= 600
        assert events[-1] == (
            "end",
            {"id": run.id, "name": "held", "status": "cancelled"},
        )


async def test_a_client_that_goes_away_mid_stream_is_forgotten(tmp_path):
    # Clients that leave while the run goes on (their connection closed
    # after the first bytes): the answer's tasks end, and once the last one
    # left, the run has no reader to publish to.
    async with served(tmp_path) as (rt, _, _, _, viewer):
        run = await rt.start(held())
        log = run._supervisor.events
        address = httpx.URL(rt.url)
        for encoding in ("deflate", "identity"):
            connection = await trio.open_tcp_stream(address.host, address.port)
            request = (
                f"GET /api/runs/{run.id}/events HTTP/1.1\r\nHost: here\r\n"
                f"Authorization: Bearer {viewer}\r\n"
                f"Accept-Encoding: {encoding}\r\n\r\n"
            )
            await connection.send_all(request.encode("ascii"))
            assert (await connection.receive_some()).startswith(b"HTTP/1.1 200")
            assert log.readers == 1
            await connection.aclose()
            await wait_all_tasks_blocked()
            assert log.readers == 0
        assert not run.done
        await run.cancel()
