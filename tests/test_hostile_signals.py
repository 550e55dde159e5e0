"""Signals under attack: payloads and names at their worst, races, edited journals."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import InvalidSignalError, JournalError, RunClosedError
from dagvisor.supervisor import Journal


@stage
async def take(ctx):
    return await ctx.wait_signal("go")


@stage
async def take_many(ctx):
    return [await ctx.wait_signal("go") for _ in range(ctx.params["n"])]


class Unencodable:
    pass


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


class OddName(str):
    """A name whose own methods lie or raise: never called by dagvisor."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("__eq__ called")

    def __hash__(self) -> int:
        raise AssertionError("__hash__ called")

    def __str__(self) -> str:
        raise AssertionError("__str__ called")

    def strip(self, *args: object) -> str:
        raise AssertionError("strip called")


BAD_PAYLOADS = [
    Unencodable(),
    {1: "a key that is not a string"},
    {"x": {1, 2}},
    math.nan,
    {"x": [math.inf]},
    2**64,
    b"bytes",
    _nested(200),
    {"big": "x" * 1_100_000},
]


@pytest.mark.parametrize("payload", BAD_PAYLOADS, ids=lambda p: type(p).__name__)
async def test_a_payload_that_is_not_plain_json_is_refused_before_it_is_sent(payload):
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(take))
        with pytest.raises(InvalidSignalError) as refused:
            await run.signal("go", payload, reason="hostile")
        assert "signal 'go' cannot be sent" in str(refused.value)
        assert isinstance(refused.value, TypeError)
        assert len(run.audit()) == 0  # nothing reached the run
        await run.signal("go", "fine", reason="the run goes on")
        result = await run.wait()
    assert result.outputs["take"] == "fine"


async def test_the_refusal_names_the_value_that_is_not_plain():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(take))
        with pytest.raises(InvalidSignalError, match=r"\['a'\]\[1\] is a Unencodable"):
            await run.signal("go", {"a": [1, Unencodable()]}, reason="r")
        await run.cancel()


@pytest.mark.parametrize(
    "name", ["", "   ", "a\nb", "x" * 201, "\ud800", 7, None, b"go"], ids=repr
)
async def test_bad_names_are_refused(name):
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(take))
        with pytest.raises(InvalidSignalError):
            await run.signal(name, 1, reason="r")
        await run.cancel()


async def test_a_name_of_a_str_subclass_is_used_as_its_plain_string():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(take))
        await run.signal(OddName("go"), OddName("payload"), reason=OddName("why"))
        result = await run.wait()
    assert result.outputs["take"] == "payload"
    assert type(result.audit[0].signal) is str


async def test_a_signal_to_an_ended_run_is_refused_with_a_typed_error():
    async with runtime() as rt:
        run = await rt.start(Pipeline("p").add(take))
        await run.signal("go", 1, reason="r")
        await run.wait()
        with pytest.raises(RunClosedError):
            await run.signal("go", 2, reason="too late")


@settings(max_examples=10, deadline=None)
@given(senders=st.integers(2, 8), waiters=st.integers(1, 8), seed=st.randoms())
def test_many_senders_and_waiters_at_once_lose_and_duplicate_nothing(
    senders, waiters, seed
):
    async def main():
        sent = [(s, i) for s in range(senders) for i in range(3)]
        pipeline = Pipeline("p")
        shares = [0] * waiters
        for position in range(len(sent)):
            shares[position % waiters] += 1
        for index, share in enumerate(shares):
            pipeline = pipeline.add(take_many.named(f"w{index}").with_params(n=share))
        async with runtime() as rt:
            run = await rt.start(pipeline)

            async def send(sender: int) -> None:
                for i in range(3):
                    await trio.sleep(seed.random())
                    await run.signal("go", [sender, i], reason="racing")

            async with trio.open_nursery() as nursery:
                for sender in range(senders):
                    nursery.start_soon(send, sender)
            result = await run.wait()
        got = [tuple(p) for out in result.outputs.values() for p in out]
        assert sorted(got) == sorted(sent)  # each once: none lost, none twice
        for out in result.outputs.values():  # each sender's in its order
            for sender in range(senders):
                mine = [i for s, i in out if s == sender]
                assert mine == sorted(mine)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def _journal_with_a_signal(path) -> str:
    async with runtime(journal=path) as rt:
        run = await rt.start(Pipeline("p").add(take))
        await run.signal("go", {"a": 1}, reason="r")
        await run.wait()
    return run.id


EDITS = [
    ("UPDATE events SET output = 'not json' WHERE kind = 'signal'", "payload"),
    ("UPDATE events SET output = NULL WHERE kind = 'signal'", "payload"),
    (
        "UPDATE events SET output = '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]' WHERE kind = 'signal'",
        "deep",
    ),
    (
        "UPDATE events SET payload = json_set(payload, '$.signal', '') WHERE kind = 'signal'",
        "name",
    ),
    (
        "UPDATE events SET payload = json_set(payload, '$.kind', 'add_stage') WHERE kind = 'signal'",
        "kind",
    ),
    (
        "UPDATE events SET payload = json_set(payload, '$.carried', 5) WHERE kind = 'signal'",
        "summary",
    ),
    (
        "UPDATE events SET payload = json_set(payload, '$.signal', 99) WHERE kind = 'signal_taken'",
        "not sent",
    ),
    (
        "UPDATE events SET payload = json_set(payload, '$.stage', 'nobody') WHERE kind = 'signal_taken'",
        "stage",
    ),
    ("UPDATE events SET kind = 'change' WHERE kind = 'signal'", "change"),
]


@pytest.mark.parametrize(("edit", "what"), EDITS, ids=[w for _, w in EDITS])
async def test_a_journal_edited_to_hold_a_bad_signal_event_is_refused(
    tmp_path, edit, what
):
    path = tmp_path / "runs.db"
    run_id = await _journal_with_a_signal(path)
    db = sqlite3.connect(path)
    try:
        changed = db.execute(edit).rowcount
        db.commit()
    finally:
        db.close()
    assert changed == 1
    with Journal(path, readonly=True) as journal, pytest.raises(JournalError):
        journal.result(run_id)


async def test_the_journal_keeps_the_payload_whole_and_the_audit_a_summary(tmp_path):
    path = tmp_path / "runs.db"
    payload = {"notes": ["é" * 3000, "\ud800 a lone surrogate"]}
    async with runtime(journal=path) as rt:
        run = await rt.start(Pipeline("p").add(take))
        await run.signal("go", payload, reason="r")
        result = await run.wait()
    assert result.outputs["take"] == {"notes": ["é" * 3000, "\ud800 a lone surrogate"]}
    with Journal(path, readonly=True) as journal:
        events = journal.load(run.id).events
    (sent,) = [p for _, kind, p in events if kind == "signal"]
    assert json.loads(sent["output"]) == payload
    assert len(sent["carried"]) < 100
