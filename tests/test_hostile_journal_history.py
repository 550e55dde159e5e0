"""A run's history records (``ended``, ``attempt_failed``) edited into nonsense.

Each is refused as a damaged file (`JournalError`, saying which event), never
another error, whatever the edit: a field missing, of the wrong type, a time
that is no time, a lone surrogate, a huge text.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import trio

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import JournalError


@stage(retries=1)
async def flaky(ctx):
    if ctx.attempt == 0:
        raise ValueError("first try")
    return 1


@pytest.fixture
def journaled(tmp_path):
    path = tmp_path / "runs.db"

    async def main():
        async with runtime(journal=path) as rt:
            return (await rt.run(Pipeline("p").add(flaky))).run_id

    return path, trio.run(main)


def _edit(path, kind: str, change) -> None:
    db = sqlite3.connect(path)
    with db:
        ((seq, payload),) = db.execute(
            "SELECT seq, payload FROM events WHERE kind = ?", (kind,)
        ).fetchall()
        edited = change(json.loads(payload))
        db.execute(
            "UPDATE events SET payload = ? WHERE seq = ? AND kind = ?",
            (json.dumps(edited), seq, kind),
        )
    db.close()


def _without(key):
    return lambda payload: {k: v for k, v in payload.items() if k != key}


def _with(key, value):
    return lambda payload: {**payload, key: value}


BAD = [
    ("ended", _without("time")),
    ("ended", _without("status")),
    ("ended", _with("time", "yesterday")),
    ("ended", _with("time", None)),
    ("ended", _with("status", 3)),
    ("ended", _with("by", ["cancel"])),
    ("ended", _with("detail", {"a": 1})),
    ("attempt_failed", _without("time")),
    ("attempt_failed", _with("error", 42)),
    ("attempt_failed", _with("stage", "no such stage")),
    ("attempt_failed", _with("stage", None)),
]


@pytest.mark.parametrize(("kind", "change"), BAD)
def test_a_history_record_edited_into_nonsense_is_a_damaged_file(
    journaled, kind, change
):
    path, run_id = journaled
    _edit(path, kind, change)
    with Journal(path, readonly=True) as journal, pytest.raises(JournalError):
        journal.result(run_id)


@pytest.mark.parametrize(
    "text", ["\ud800 lone", "x" * 200_000, "\x1b[31mred\x1b[0m\nline"]
)
def test_odd_but_well_formed_text_reads_back_as_it_is(journaled, text):
    path, run_id = journaled
    _edit(path, "ended", _with("detail", text))
    _edit(path, "attempt_failed", _with("error", text))
    with Journal(path, readonly=True) as journal:
        result = journal.result(run_id)
    (first, second) = result.lineage("flaky").attempts
    assert first.error == text
    assert second.outcome == "succeeded"
    assert result.interruptions == ()  # it succeeded: nothing stopped it
