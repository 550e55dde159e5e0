"""The journal's fast paths write exactly what the plain ones would, for any text.

A change's audit record and a stage's start and end are written straight
into their JSON text (``_record_text``), and a batch's events go in one
statement as one JSON array that SQLite reads (``_event_rows``). Names,
reasons and outputs are whatever the user gave: any code point, lone
surrogates, NULs, quotes, backslashes, control characters, text larger than
a statement may hold. Each fast path must give the very text, and the very
rows, the plain path gives.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from strategies import HOSTILE_TEXTS

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.actors._jsonform import dump_json
from dagvisor.supervisor._audit import AuditRecord, audit_record
from dagvisor.supervisor._event_rows import insert_events, rows_text
from dagvisor.supervisor._lease import LEASES_SCHEMA, Owner, insert_lease
from dagvisor.supervisor._record_text import RecordTexts

# Any text at all, lone surrogates included, and the texts attackers try.
ANY_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(HOSTILE_TEXTS),
)
# What SQLite can store as text: no lone surrogate (the journal escapes those
# before it stores anything); NULs, controls and quotes are in.
STORABLE = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
TIMES = st.floats(allow_nan=False, allow_infinity=False)
ODD_NUMBERS = st.sampled_from([math.inf, -math.inf, math.nan, 0, 1, True])


# A change's fields: a signal's name and summary are a signal record's only.
_SIGNAL_ONLY = ("signal", "carried")


def _fields(record: AuditRecord) -> tuple[Any, ...]:
    return attrs.astuple(record, recurse=False)[: -len(_SIGNAL_ONLY)]


def _plain_change(record: AuditRecord, request: dict[str, Any]) -> str:
    """What the journal wrote for a change before: a dict, dumped."""
    fields = attrs.asdict(record, recurse=False)
    for key in _SIGNAL_ONLY:
        del fields[key]
    return dump_json({**fields, "request": request})


def _ref(name: str, **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "fn": options.get("fn", "flows:step"),
        "when": options.get("when"),
        "retries": options.get("retries", 0),
        "backoff": options.get("backoff", 0.0),
        "timeout": options.get("timeout"),
        "trigger": options.get("trigger", "all_succeeded"),
        "executor": options.get("executor", "loop"),
    }


@attrs.frozen
class _Asked:
    """An add_stage request as far as its record reads it."""

    after: tuple[str, ...]
    before: tuple[str, ...]


@given(
    names=st.lists(ANY_TEXT, min_size=1, max_size=4),
    reason=ANY_TEXT,
    requester=ANY_TEXT,
    run_id=ANY_TEXT,
    times=st.tuples(TIMES, TIMES),
    seq=st.integers(0, 2**70),
    accepted=st.booleans(),
    error=st.none() | ANY_TEXT,
    parts=st.booleans(),
)
def test_record_texts_are_what_dump_json_writes(
    names, reason, requester, run_id, times, seq, accepted, error, parts
):
    texts = RecordTexts(run_id)
    name = names[0]
    assert texts.started(name, times[0]) == dump_json({"stage": name, "time": times[0]})
    assert texts.ended(name, "succeeded", times[1]) == dump_json(
        {"stage": name, "state": "succeeded", "time": times[1]}
    )
    record = AuditRecord(
        seq=seq,
        run_id=run_id,
        kind="change_set" if parts else "add_stage",
        requester=requester,
        reason=reason,
        accepted=accepted,
        version_before=seq,
        version_after=seq + accepted,
        wall_time=times[0],
        monotonic_time=times[1],
        added=tuple(names),
        removed=tuple(names[1:]),
        edges=tuple(itertools.pairwise(names)),
        cancelled=tuple(names[:1]),
        error_type=None if error is None else "CycleError",
        error=error,
        parts=(("add_stage", tuple(names)), ("add_edge", tuple(names[:2])))
        if parts
        else (),
    )
    ref = _ref(name, fn=requester, when=reason)
    asked_text = texts.add_stage(_Asked(tuple(names), tuple(names[1:])), ref)  # type: ignore[arg-type]
    request = {"spec": ref, "after": list(names), "before": names[1:]}
    assert asked_text == dump_json(request)
    assert texts.change(_fields(record), asked_text) == _plain_change(record, request)


@given(wall=ODD_NUMBERS, monotonic=ODD_NUMBERS | TIMES, seq=ODD_NUMBERS)
def test_a_record_of_odd_numbers_is_written_as_the_encoder_writes_it(
    wall, monotonic, seq
):
    texts = RecordTexts("r")
    record = AuditRecord(
        seq=seq,
        run_id="r",
        kind="add_edge",
        requester="x",
        reason="why",
        accepted=True,
        version_before=0,
        version_after=1,
        wall_time=wall,
        monotonic_time=monotonic,
    )
    assert texts.change(_fields(record), "{}") == _plain_change(record, {})
    assert texts.started("s", wall) == dump_json({"stage": "s", "time": wall})


def test_a_reference_keeps_options_of_equal_value_and_other_type_apart():
    texts = RecordTexts("r")
    for timeout in (5, 5.0, 5, True):
        ref = _ref("s", timeout=timeout)
        assert texts.add_stage(_Asked((), ()), ref) == dump_json(  # type: ignore[arg-type]
            {"spec": ref, "after": [], "before": []}
        )
    odd = {"fn": "f", "name": "n"}  # another shape: the encoder writes it
    assert texts.add_stage(_Asked((), ()), odd) == dump_json(  # type: ignore[arg-type]
        {"spec": odd, "after": [], "before": []}
    )


@given(
    st.lists(
        st.tuples(ANY_TEXT, ANY_TEXT, st.integers(), TIMES, st.booleans()),
        max_size=3,
    )
)
def test_a_record_made_from_its_fields_equals_the_constructed_one(rows):
    for text, other, number, moment, flag in rows:
        values = {
            "seq": number,
            "run_id": text,
            "kind": "expand",
            "requester": other,
            "reason": text + other,
            "accepted": flag,
            "version_before": number,
            "version_after": number + 1,
            "wall_time": moment,
            "monotonic_time": -moment,
            "added": (text,),
            "removed": (other,),
            "edges": ((text, other),),
            "cancelled": (),
            "error_type": None if flag else "X",
            "error": None if flag else other,
            "parts": (("expand", (text,)),),
        }
        made = audit_record(*values.values())
        constructed = AuditRecord(**values)
        assert made == constructed
        assert attrs.asdict(made) == attrs.asdict(constructed)
        assert hash(made) == hash(constructed)


# -- events: one statement per batch, or one row at a time --------------------------

_EVENTS = (
    "CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "kind TEXT NOT NULL, payload TEXT NOT NULL, output TEXT, data BLOB, "
    "PRIMARY KEY (run_id, seq))"
)
OWNER = Owner.of_this_runtime()


def _journal_db() -> sqlite3.Connection:
    """An events table, and a lease of run ``"run"`` that this runtime holds."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute(_EVENTS)
    db.execute(LEASES_SCHEMA)
    insert_lease(db, "run", OWNER, 0.0)
    return db


def _write(events: list[Any], chunk: int, fence: str | None) -> list[Any]:
    db = _journal_db()
    try:
        insert_events(db, "run", events, fence, chunk)
        return db.execute(
            "SELECT rowid, run_id, seq, kind, payload, output, typeof(output), "
            "data, typeof(data) "
            "FROM events ORDER BY rowid"
        ).fetchall()
    finally:
        db.close()


_OUTPUTS = st.one_of(
    st.none(),
    STORABLE,
    st.sampled_from(["\x00", "a\x00b", "x" * 300, '"\\"' * 40]),
    STORABLE.map(lambda text: bytearray(text.encode())),
    st.binary(max_size=300).map(memoryview),  # a binary codec's: the data column
)


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["change", "stage_ended", "item"]), STORABLE, _OUTPUTS
        ),
        max_size=12,
    ),
    chunk=st.sampled_from([0, 1, 64, 200, 1 << 20]),
    fenced=st.booleans(),
)
def test_events_in_one_statement_are_the_rows_written_one_by_one(rows, chunk, fenced):
    events = [
        ("run", seq, kind, payload, output)
        for seq, (kind, payload, output) in enumerate(rows)
    ]
    fence = OWNER.nonce if fenced else None
    assert _write(events, chunk, fence) == _write(events, 0, fence)


def test_a_fenced_insert_of_a_run_another_runtime_owns_writes_nothing():
    from dagvisor.errors import LeaseLostError

    events = [("run", 0, "change", "{}", None), ("run", 1, "item", "{}", "x")]
    for chunk in (0, 1 << 20):
        db = _journal_db()
        with pytest.raises(LeaseLostError, match="took it over"):
            insert_events(db, "run", events, "theirs", chunk)
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        db.close()


def test_rows_that_cannot_all_go_in_one_statement_have_no_rows_text():
    assert rows_text([("r", 0, "k", "{}", None)], 100) == '[[0,"k","{}",null]]'
    assert rows_text([("r", 0, "k", "{}", "a\x00b")], 100) is None
    assert rows_text([("r", 0, "k", "{}", bytearray(b"x"))], 100) is None
    assert rows_text([("r", 0, "k", "x" * 100, None)], 100) is None


# -- whole runs -------------------------------------------------------------------


@stage
async def grow(ctx: Any) -> str:
    index = int(ctx.name.rsplit("-", 1)[1])
    if index + 1 < ctx.run_inputs["stages"]:
        await ctx.add_stage(
            grow.named(f"{ctx.run_inputs['prefix']}-{index + 1}"),
            after=[ctx.name],
            reason=ctx.run_inputs["prefix"],
        )
    return ctx.run_inputs["prefix"] * 3


async def _grown(journal: Journal, prefix: str, stages: int) -> Any:
    async with runtime(journal=journal) as rt:
        result = await rt.run(
            Pipeline(prefix).add(grow.named(f"{prefix}-0")),
            inputs={"stages": stages, "prefix": prefix},
        )
    with Journal(journal.path, readonly=True) as reader:
        return result, reader.result(result.run_id)


def _same(live: Any, read: Any) -> None:
    assert read.states == live.states
    assert read.outputs == live.outputs
    assert list(read.audit) == list(live.audit)


ODD = 'g\udcff\x00"\\\u2028\U0001f600'


async def test_a_run_of_odd_names_reads_back_as_it_ran(tmp_path):
    _same(*await _grown(Journal(tmp_path / "runs.db"), ODD, 30))


async def test_a_small_value_limit_splits_a_batch_in_many_statements(tmp_path):
    journal = Journal(tmp_path / "runs.db", max_value_bytes=70_000)
    _same(*await _grown(journal, "a" * 150, 40))


async def test_an_sqlite_without_json_writes_one_row_at_a_time(tmp_path, monkeypatch):
    import dagvisor.supervisor._journal as journal_module

    real = journal_module.Journal._open_writable

    def without_json(self: Any, *, create: bool) -> None:
        real(self, create=create)
        self.rows_chunk = 0  # as when SQLite cannot read JSON

    monkeypatch.setattr(journal_module.Journal, "_open_writable", without_json)
    # In a thread of this process, where the patch is seen.
    _same(*await _grown(Journal(tmp_path / "runs.db", writer="thread"), ODD, 30))


async def test_a_busy_run_commits_its_records_in_batches_not_one_a_stage(
    tmp_path, monkeypatch
):
    import dagvisor.supervisor._writer as writer_module

    commits = []
    real = writer_module.commit_batch

    def counted(journal: Any, records: list[Any], *args: Any) -> Any:
        commits.append(len(records))
        return real(journal, records, *args)

    monkeypatch.setattr(writer_module, "commit_batch", counted)
    stages = 300  # 3 records each: its change, its start, its end
    # In a thread of this process, where the patch is seen.
    journal = Journal(tmp_path / "runs.db", writer="thread")
    live, read = await _grown(journal, "b", stages)
    _same(live, read)
    assert sum(commits) >= 3 * stages
    # The loop never waits while the chain grows: the writer gathers what
    # comes meanwhile (the run's first and last records go at once).
    assert len(commits) <= 12, commits


# -- what the requester and the stage prepare -------------------------------------


@stage
async def scalar_stage(ctx: Any) -> Any:
    return None


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**4300, max_value=10**4400),  # past int -> str's limit
    st.floats(),
    ANY_TEXT,
    st.text(max_size=5).map(lambda text: text * 5_000),  # large: a worker thread's
)


@given(value=_SCALARS, limit=st.sampled_from([None, 70_000]))
def test_a_plain_output_is_encoded_as_the_whole_path_encodes_it(value, limit):
    from types import MappingProxyType

    from dagvisor import JsonCodec
    from dagvisor.actors._env import RunEnv
    from dagvisor.actors._output import plain_output, prepare_output

    journal = Journal("unused.db", max_value_bytes=limit)
    send, _ = trio.open_memory_channel[Any](1)
    env = RunEnv(
        run_id="r",
        outbox=send,
        run_inputs=MappingProxyType({}),
        thread_limiter=trio.CapacityLimiter(1),
        cleanup_timeout=1.0,
        codec=JsonCodec(),
        check_output=journal.check_value,
    )

    def outcome_of(call: Any) -> tuple[str, Any]:
        try:
            return "value", call()
        except Exception as exc:
            return type(exc).__name__, str(exc)

    fast = outcome_of(lambda: plain_output(env, scalar_stage, value))
    if fast == ("value", None):
        return  # not a plain output here: the whole path takes it
    whole = outcome_of(lambda: trio.run(prepare_output, env, scalar_stage, value)[1])
    assert fast == whole


def test_a_registry_forgets_the_names_it_gave_once_a_function_is_registered_again():
    from dagvisor.actors import StageRegistry

    async def step(ctx: Any) -> None:
        pass

    async def other(ctx: Any) -> None:
        pass

    registry = StageRegistry()
    registry.register(step, name="flows:step")
    assert registry.key_of(step) == "flows:step"
    registry.register(other, name="flows:step")  # the name now means another
    assert registry.key_of(step) is None
    assert registry.key_of(other) == "flows:step"
    registry.register(step, name="flows:step-again")
    assert registry.key_of(step) == "flows:step-again"


def _closure_spec() -> Any:
    async def inner(ctx: Any) -> None:  # a closure: never found again
        pass

    return stage(name="inner")(inner)
