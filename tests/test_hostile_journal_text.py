"""Text the journal does not expect, and outputs of any size.

Lone surrogates (``os.listdir()`` returns them for file names that are not
UTF-8) in outputs, mapped items, inputs, errors, stage and pipeline names and
reasons come back exactly, and the file holds valid UTF-8 only. A large
output is encoded once, at about its own size, in a worker thread; a small
one inline, with no checkpoint.
"""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel

from dagvisor import Journal, JsonCodec, Pipeline, runtime, stage
from dagvisor.actors._jsonform import PIECE, pieces
from dagvisor.actors._output import is_large, prepare_output
from dagvisor.errors import RunFailed
from dagvisor.supervisor._format import FORMAT_VERSION

if TYPE_CHECKING:
    from pathlib import Path

ODD = "file-\udcff\udc80-\ud800"
"""A name as os.listdir() gives it for bytes that are not UTF-8, and a high surrogate."""
PAIR = "\ud83d\ude00"
"""Two surrogates that JSON would read back as one character (U+1F600)."""


@stage
async def named(ctx: Any) -> dict[str, Any]:
    return {ODD: [ODD, PAIR], "tuple": (ODD,), "pair": PAIR}


@stage
async def mapped(ctx: Any) -> str:
    return f"{ctx.item}!"


@stage
async def spread(ctx: Any) -> None:
    await ctx.expand(mapped, [ODD, PAIR, "plain"], reason=f"map {ODD}")


@stage
async def fails(ctx: Any) -> None:
    raise ValueError(f"cannot open {ODD}")


@stage
async def held(ctx: Any) -> str:
    if ctx.attempt == 0:
        await trio.sleep_forever()
    return ctx.run_inputs["where"]


def _all_text_is_utf8(path: Path) -> None:
    db = sqlite3.connect(path)
    db.text_factory = bytes
    try:
        for table, columns in (
            ("runs", "run_id, name, status, pipeline"),
            ("events", "run_id, kind, payload, output"),
        ):
            for row in db.execute(f"SELECT {columns} FROM {table}"):
                for cell in row:
                    if cell is not None:
                        cell.decode("utf-8")  # strict: raises on a surrogate
    finally:
        db.close()


async def test_lone_surrogates_come_back_exactly_from_the_journal(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = (
        Pipeline(f"nightly {ODD}")
        .add(named.named(f"named {ODD}"))
        .add(spread)
        .add(fails)
    )
    async with runtime(journal=path, on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline, inputs={ODD: ODD})
    live = info.value.result
    _all_text_is_utf8(path)
    with Journal(path, readonly=True) as journal:
        (listed,) = journal.runs()
        stored = journal.result(live.run_id)
    assert listed["name"] == "nightly file-\\udcff\\udc80-\\ud800"  # shown, escaped
    assert stored.name == live.name == f"nightly {ODD}"
    assert dict(stored.outputs) == dict(live.outputs)
    assert stored.outputs[f"named {ODD}"]["pair"] == PAIR  # two characters, not one
    assert stored.outputs["mapped[0]"] == f"{ODD}!"
    assert stored.errors["fails"].recorded == f"ValueError: cannot open {ODD}"
    assert stored.audit == live.audit
    assert stored.audit[0].reason == f"map {ODD}"


async def test_a_resumed_run_gets_its_items_and_inputs_back_exactly(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("held").add(spread).add(held, after=["spread"])
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline, inputs={"where": ODD})
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel(reason="held")
    async with runtime(journal=path) as rt:
        result = await rt.resume(run.id)
    assert result.outputs["held"] == ODD
    assert [result.outputs[f"mapped[{i}]"] for i in range(3)] == [
        f"{ODD}!",
        f"{PAIR}!",
        "plain!",
    ]


LATIN = "".join(chr(c) for c in range(0xC0, 0x100))


@stage
async def big_text(ctx: Any) -> str:
    return (LATIN * (3_000_000 // len(LATIN) + 1))[:3_000_000]


@stage
async def big_list(ctx: Any) -> list[Any]:
    return [{"i": i, "t": (i, "é")} for i in range(200_000)]


async def test_a_large_output_is_stored_once_at_about_its_own_size(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        result = await rt.run(Pipeline("large").add(big_text).add(big_list))
    db = sqlite3.connect(path)
    try:
        sizes = dict(
            db.execute(
                "SELECT json_extract(payload, '$.stage'), length(CAST(output AS BLOB)) "
                "FROM events WHERE output IS NOT NULL"
            ).fetchall()
        )
        (payloads,) = db.execute("SELECT MAX(length(payload)) FROM events").fetchone()
        kinds = {row[0] for row in db.execute("SELECT typeof(output) FROM events")}
    finally:
        db.close()
    assert kinds == {"text", "null"}  # text, even when written in pieces
    text = result.outputs["big_text"]
    assert sizes["big_text"] == len(json.dumps(text, ensure_ascii=False).encode())
    assert sizes["big_text"] < 2.01 * len(text)  # two UTF-8 bytes a character
    assert payloads < 1000  # the output is not in the event's record as well
    with Journal(path, readonly=True) as journal:
        stored = journal.result(result.run_id)
    assert stored.outputs["big_text"] == text
    assert stored.outputs["big_list"] == result.outputs["big_list"]


def test_a_large_value_is_written_in_bounded_pieces():
    codec = JsonCodec()
    for value in (
        "é" * (5 * PIECE + 3),
        [f"item {i}" for i in range(600_000)],
        {"a": ["x" * (PIECE + 5)] * 3, "b": [1] * 400_000, "c": b"\x00" * (2 * PIECE)},
        [("t" * (3 * PIECE), {1, 2})],
    ):
        tagged, sizes = codec._tag(value, (), pairs=False)
        parts = pieces(tagged, sizes)
        assert max(len(part) for part in parts) <= 2 * PIECE
        assert json.loads("".join(parts)) == json.loads(codec.encode(value))
        assert codec.decode(codec.encode_utf8(value).decode()) == value


def test_the_size_estimate_looks_at_a_few_parts_only():
    assert not is_large(1)
    assert not is_large("x" * 1000)
    assert not is_large({"a": [1, 2, 3], "b": ("x" * 100,)})
    assert is_large("x" * 100_000)
    assert is_large(b"x" * 100_000)
    assert is_large(list(range(10_000)))
    assert is_large({"deep": {"inside": ["y" * 50_000]}})
    assert is_large([[i] for i in range(1000)])


async def test_a_large_output_is_encoded_in_a_thread_a_small_one_inline():
    env = SimpleNamespace(codec=JsonCodec(), check_output=None)
    spec = big_text
    ticks = 0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        before = ticks
        value, encoded = await prepare_output(env, spec, {"small": [1, 2]})
        assert ticks == before  # no checkpoint: nothing else ran
        assert encoded == '{"small":[1,2]}'
        large = "é" * 200_000
        value, encoded = await prepare_output(env, spec, large)
        assert ticks > before  # the event loop ran while a thread encoded it
        assert value is large
        assert isinstance(encoded, bytearray)
        assert encoded.decode("utf-8") == json.dumps(large, ensure_ascii=False)
        done.set()


def _as_format_1(path: Path) -> None:
    """Rewrite a journal as dagvisor wrote format 1: outputs inside the JSON."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(
            "UPDATE events SET payload = json_set(payload, '$.output', output) "
            "WHERE output IS NOT NULL"
        )
        db.execute("ALTER TABLE events DROP COLUMN output")
        db.execute("ALTER TABLE events DROP COLUMN data")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    finally:
        db.close()


async def test_a_format_1_journal_is_read_and_upgraded_when_written(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("old").add(spread).add(held, after=["spread"])
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline, inputs={"where": "here"})
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel(reason="held")
    _as_format_1(path)
    with Journal(path, readonly=True) as journal:
        assert journal.result(run.id).outputs["mapped[2]"] == "plain!"
    async with runtime(journal=path) as rt:
        result = await rt.resume(run.id)
    assert result.outputs["held"] == "here"
    db = sqlite3.connect(path)
    try:
        (version,) = db.execute(
            "SELECT value FROM meta WHERE key = 'format_version'"
        ).fetchone()
    finally:
        db.close()
    assert version == str(FORMAT_VERSION)
    with Journal(path, readonly=True) as journal:
        stored = journal.result(run.id)
    assert stored.outputs["mapped[0]"] == f"{ODD}!"
    assert stored.outputs["held"] == "here"


@stage
async def passes_on(ctx: Any) -> Any:
    return ctx.inputs["named"]  # frozen: read-only list, dict and set subclasses


@stage
async def maps_lists(ctx: Any) -> None:
    await ctx.expand(mapped.named("pairs"), [[1, {2}], {"k": [3]}], reason="lists")


async def test_a_stage_passing_on_its_frozen_input_is_journaled(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("frozen").add(named).add(passes_on, after=["named"])
    pipeline = pipeline.add(maps_lists)
    async with runtime(journal=path) as rt:
        result = await rt.run(pipeline)
    with Journal(path, readonly=True) as journal:
        stored = journal.result(result.run_id)
    assert stored.outputs["passes_on"] == result.outputs["named"]
    assert stored.outputs["pairs[0]"] == "[1, {2}]!"
