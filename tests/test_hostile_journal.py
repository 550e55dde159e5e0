"""A journal edited to name code: no reading path and no resume runs any of it.

The journal is built by a real run, then its stored values (outputs, mapped
items, run inputs) are replaced by tagged values naming ``os.system``,
``subprocess.Popen``, ``builtins.eval``, ``functools.partial``, a module
whose ``__getattr__`` records lookups, and classes of this module that
record every ``__init__``, ``__post_init__``, ``__attrs_post_init__``,
attrs validator and converter, ``__new__``, ``__setstate__``,
``__reduce__``, ``__class_getitem__`` and ``__init_subclass__`` call. Every
reading path (the command line in a subprocess, `Journal.result`,
``result.lineage``, the exports) and ``rt.resume`` must run none of them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import types
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from dagvisor import Journal, JsonCodec, PickleCodec, Pipeline, runtime, stage
from dagvisor.errors import NotRestorableError, RunFailed

if TYPE_CHECKING:
    from pathlib import Path

CALLS: list[str] = []
"""Every call a hostile journal must not cause, recorded by the classes below."""

TAG = "__dagvisor__"


class InitSideEffect:
    def __init__(self, **fields: Any) -> None:
        CALLS.append("InitSideEffect.__init__")

    def __new__(cls, *args: Any, **kwargs: Any) -> InitSideEffect:
        CALLS.append("InitSideEffect.__new__")
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        CALLS.append("InitSideEffect.__init_subclass__")

    def __class_getitem__(cls, item: Any) -> Any:
        CALLS.append("InitSideEffect.__class_getitem__")
        return cls

    def __setstate__(self, state: Any) -> None:
        CALLS.append("InitSideEffect.__setstate__")

    def __reduce__(self) -> Any:
        CALLS.append("InitSideEffect.__reduce__")
        return (InitSideEffect, ())


@dataclasses.dataclass
class PostInit:
    x: int = 0

    def __post_init__(self) -> None:
        CALLS.append("PostInit.__post_init__")


def _validator(instance: Any, attribute: Any, value: Any) -> None:
    CALLS.append("Validated.validator")


def _converter(value: Any) -> Any:
    CALLS.append("Validated.converter")
    return value


@attrs.define
class Validated:
    x: int = attrs.field(default=0, validator=_validator, converter=_converter)

    def __attrs_post_init__(self) -> None:
        CALLS.append("Validated.__attrs_post_init__")


def _probe_getattr(name: str) -> Any:
    CALLS.append(f"dagvisor_probe.__getattr__({name})")
    return InitSideEffect


@pytest.fixture(autouse=True)
def _probe_module(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = types.ModuleType("dagvisor_probe")
    probe.__getattr__ = _probe_getattr  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "dagvisor_probe", probe)
    CALLS.clear()


@stage
async def source(ctx: Any) -> int:
    return 1


@stage
async def square(ctx: Any) -> int:
    return int(ctx.item) ** 2


@stage
async def total(ctx: Any) -> int:
    return sum(ctx.inputs.values())


@stage
async def plan(ctx: Any) -> None:
    names = await ctx.expand(square, [1, 2], reason="one per item")
    await ctx.add_stage(total, after=names, reason="sum them")


@stage
async def boom(ctx: Any) -> None:
    raise ValueError("this stage fails, so the run can be resumed")


PIPELINE = (
    Pipeline("hostile")
    .add(source)
    .add(plan, after=["source"])
    .add(boom, after=["source"])
)


def _tagged(kind: str, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {TAG: kind, "type": path, "fields": fields}


def _hostile(markers: Path) -> dict[str, Any]:
    """A stored value per thing the journal names, as the codec's JSON form."""
    return {
        "os.system": _tagged(
            "dataclass", "os:system", {"command": f"touch {markers}/1"}
        ),
        "subprocess.Popen": _tagged(
            "attrs", "subprocess:Popen", {"args": ["sh", "-c", f"touch {markers}/2"]}
        ),
        "builtins.eval": _tagged(
            "attrs", "builtins:eval", {"source": f"open('{markers}/3', 'w')"}
        ),
        "functools.partial": _tagged(
            "attrs", "functools:partial", {"func": "os:system", "args": ["id"]}
        ),
        "init": _tagged("attrs", f"{__name__}:InitSideEffect", {"x": 1}),
        "post_init": _tagged("dataclass", f"{__name__}:PostInit", {"x": 1}),
        "validator": _tagged("attrs", f"{__name__}:Validated", {"x": 1}),
        "module_getattr": _tagged("attrs", "dagvisor_probe:Anything", {}),
        "nested": {
            "plain": [1, 2],
            "deeper": {
                TAG: "tuple",
                "items": [_tagged("attrs", f"{__name__}:InitSideEffect", {})],
            },
        },
    }


def _has_output_column(db: sqlite3.Connection) -> bool:
    return "output" in {row[1] for row in db.execute("PRAGMA table_info(events)")}


def _set_output(db: sqlite3.Connection, stage_name: str, text: str) -> None:
    where = (
        "WHERE kind = 'stage_ended' AND json_extract(payload, '$.stage') = ? "
        "AND json_extract(payload, '$.state') = 'succeeded'"
    )
    if _has_output_column(db):
        cursor = db.execute(f"UPDATE events SET output = ? {where}", (text, stage_name))
    else:
        cursor = db.execute(
            f"UPDATE events SET payload = json_set(payload, '$.output', ?) {where}",
            (text, stage_name),
        )
    assert cursor.rowcount == 1, stage_name


async def _journal(path: Path) -> str:
    """A failed (so resumable) run with outputs, a mapping and inputs; its id."""
    async with runtime(journal=path, on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(PIPELINE, inputs={"region": "eu"})
    assert info.value.result.states["total"].value == "succeeded"
    return info.value.result.run_id


def _poison(path: Path, markers: Path) -> dict[str, str]:
    """Replace every stored value by one naming code; the stage each went to."""
    hostile = {key: json.dumps(value) for key, value in _hostile(markers).items()}
    texts = list(hostile.values())
    stages = ["source", "plan", "square[0]", "square[1]", "total"]
    placed = {}
    db = sqlite3.connect(path)
    try:
        for position, name in enumerate(stages):
            _set_output(db, name, texts[position])
            placed[name] = list(hostile)[position]
        # Mapped items are "item" events, their text in the output column.
        rows = db.execute(
            "SELECT rowid FROM events WHERE kind = 'item' ORDER BY seq"
        ).fetchall()
        assert len(rows) == 2
        for (rowid,), text in zip(
            rows, texts[len(stages) : len(stages) + 2], strict=True
        ):
            db.execute("UPDATE events SET output = ? WHERE rowid = ?", (text, rowid))
        db.execute(
            "UPDATE runs SET pipeline = json_set(pipeline, '$.inputs', ?)",
            (
                json.dumps(
                    {
                        "region": _hostile(markers)["nested"],
                        "x": _hostile(markers)["init"],
                    }
                ),
            ),
        )
        db.commit()
    finally:
        db.close()
    return placed


def _nothing_ran(markers: Path) -> None:
    assert CALLS == []
    assert sorted(os.listdir(markers)) == []


@pytest.fixture
def poisoned(tmp_path: Path) -> tuple[Path, str, dict[str, str], Path]:
    path = tmp_path / "runs.db"
    markers = tmp_path / "markers"
    markers.mkdir()
    run_id = trio.run(_journal, path)
    placed = _poison(path, markers)
    CALLS.clear()
    return path, run_id, placed, markers


def test_reading_a_poisoned_journal_runs_nothing(poisoned):
    path, run_id, placed, markers = poisoned
    before = path.read_bytes()
    with Journal(path, readonly=True) as journal:
        result = journal.result(run_id)
    for name, key in placed.items():
        value = result.outputs[name]
        if key == "nested":
            assert value["plain"] == [1, 2]
            (inner,) = value["deeper"]
            assert type(value["deeper"]) is tuple
            assert type(inner).__name__ == "Undecoded"
            assert inner.type == f"{__name__}:InitSideEffect"
        else:
            assert type(value).__name__ == "Undecoded", (name, value)
            assert value.type == _hostile(markers)[key]["type"]
            assert json.loads(value.text)["fields"] == _hostile(markers)[key]["fields"]
    for name in result.states:
        result.lineage(name)
    result.to_html()
    result.to_mermaid()
    result.to_dot()
    _nothing_ran(markers)
    assert path.read_bytes() == before


async def test_resuming_a_poisoned_journal_refuses_and_runs_nothing(poisoned):
    path, run_id, _, markers = poisoned
    before = path.read_bytes()
    async with runtime(journal=path) as rt:
        with pytest.raises(NotRestorableError, match="allow") as info:
            await rt.resume(run_id)
    assert "the journal holds a" in str(info.value)
    _nothing_ran(markers)
    assert path.read_bytes() == before


async def test_a_resume_calls_only_the_classes_it_allowed(poisoned):
    """Allowed classes are rebuilt by calling them (the user allowed it); the
    others the file names are still refused, and nothing of them runs."""
    path, run_id, _, markers = poisoned
    async with runtime(
        journal=path, codec=JsonCodec(types=[PostInit, Validated])
    ) as rt:
        with pytest.raises(NotRestorableError, match="allow"):
            await rt.resume(run_id)
    allowed = {
        "PostInit.__post_init__",
        "Validated.converter",
        "Validated.validator",
        "Validated.__attrs_post_init__",
    }
    assert set(CALLS) <= allowed
    CALLS.clear()
    _nothing_ran(markers)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_the_reading_commands_run_nothing_the_journal_names(poisoned, tmp_path):
    path, run_id, _, markers = poisoned
    before = path.read_bytes()
    journal = ["--journal", str(path)]
    commands = [
        ["runs", *journal],
        ["show", run_id, *journal, "--tracebacks"],
        ["audit", run_id, *journal],
        ["lineage", run_id, "square[0]", *journal],
        ["graph", run_id, *journal],
        ["graph", run_id, "--format", "dot", *journal],
        ["report", run_id, "-o", str(tmp_path / "report.html"), *journal],
    ]
    for command in commands:
        done = _cli(*command, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr
        _nothing_ran(markers)
    shown = _cli("show", run_id, *journal, cwd=tmp_path).stdout
    assert "Undecoded" in shown
    assert path.read_bytes() == before


def _pickled_bomb(marker: Path) -> str:
    class Bomb:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    return base64.b64encode(pickle.dumps(Bomb())).decode("ascii")


async def test_a_pickle_journal_is_never_unpickled_by_a_reader(tmp_path):
    path = tmp_path / "runs.db"
    markers = tmp_path / "markers"
    markers.mkdir()
    async with runtime(journal=path, codec=PickleCodec()) as rt:
        result = await rt.run(Pipeline("pickled").add(source))
    db = sqlite3.connect(path)
    try:
        _set_output(db, "source", _pickled_bomb(markers / "bomb"))
        db.commit()
    finally:
        db.close()
    with Journal(path, readonly=True) as journal:
        read = journal.result(result.run_id)
    stored = read.outputs["source"]
    assert type(stored).__name__ == "Undecoded"
    assert stored.type is None
    for command in (["show", result.run_id], ["report", result.run_id, "-o", "r.html"]):
        done = _cli(*command, "--journal", str(path), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    _nothing_ran(markers)
