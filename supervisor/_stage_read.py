"""One stage read from the journal by its index: its lineage and its output.

What `Journal.lineage` and ``dagvisor show --output`` / ``lineage`` read
without replaying the run: the stage's place in the pipeline record (found
by SQLite in the record, not parsed whole), the changes that name it and
its own events (through the index by stage, `_stage_index`), and the ends
of its dependencies. The answer is the replay's (`_replay`, `_lineage`),
field for field.

The index is a hint. Every row it gives is checked against the event it
names (its kind, the stage the event names), a stage's rows must be whole
(`_stage_rows`), and the stage's story must make sense (added before it
runs, never added twice). When anything is off, or the journal has no
index (format 3 or older), or a change of a kind read here only whole
(a change set) made the stage, `read_lineage` and `read_output` return
None: the caller reads the run whole, whose replay either answers or says
what is wrong (`JournalError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn, final

import attrs

from dagvisor.actors import JournalError, StageState, UnknownStageError
from dagvisor.actors._jsonform import Malformed, load_json

from ._history import attempts_of, stage_event
from ._journal_rows import JournaledRun
from ._lineage import ConsumedOutput, Lineage, _last_added_and_removed
from ._records import moment, text
from ._replay_values import value_decoder
from ._replayer import MALFORMED, Replayer
from ._stage_index import RESUMES
from ._stage_rows import Change, Fallback, StageRows, usable

if TYPE_CHECKING:
    from dagvisor.actors import StageSpec

    from ._history import StageEvent
    from ._journal_rows import RowReader

__all__ = ["StageOutput", "read_lineage", "read_output"]

_MALFORMED: Final = (*MALFORMED, Malformed, JournalError)
"""A record of the wrong shape (`BadRecord` among them), or a damaged file."""
_PIPELINE: Final = (
    "SELECT j.value, json_extract(r.pipeline, '$.codec'), "
    "json_type(r.pipeline, '$.codec') FROM runs r, json_each(r.pipeline, '$.stages') j "
    "WHERE r.run_id = ? AND j.type = 'array' AND json_extract(j.value, '$[0]') = ?"
)
_SUCCEEDED = StageState.SUCCEEDED


@final
@attrs.frozen
class StageOutput:
    """One stage's output as the journal holds it.

    Attributes:
        state: the stage's state, or None if the run's graph has no such stage.
        stored: whether the journal holds its output (a success not
            declared with ``persist=False``).
        value: the output, decoded as data (`Undecoded` for a class).
    """

    state: StageState | None
    stored: bool
    value: Any = None


def _plain(name: str) -> bool:
    """A name SQLite's JSON reader and Python give the same text for (and not
    the name the run's resumptions are indexed under)."""
    return (
        name != RESUMES
        and name.isprintable()
        and name.encode("utf-8", "replace").decode() == name
    )


@final
class _Reader(StageRows):
    """The queries of one stage's reading, on one snapshot of the file."""

    def __init__(self, rows: RowReader, run_id: str, name: str) -> None:
        super().__init__(rows, run_id)
        self.name = name
        self.written_with = "json"
        self.entry: list[Any] | None = None
        self.spec_ref: Any = None

    def pipeline(self) -> None:
        """The stage's entry in the pipeline record, if it has one, and the codec."""
        rows = self.rows.query(_PIPELINE, (self.run_id, self.name))
        if not rows:
            found = self.rows.query(
                "SELECT json_extract(pipeline, '$.codec'), "
                "json_type(pipeline, '$.codec') FROM runs WHERE run_id = ?",
                (self.run_id,),
            )
            if not found:
                self.off()  # no such run: the replay says so
            codec, kind = found[0]
        else:
            if len(rows) > 1:
                self.off()  # named twice: the replay refuses it
            entry, codec, kind = rows[0]
            self.entry = load_json(entry)
            position = self.entry[1]
            if type(position) is not int or position < 0:
                self.off()
            ((ref,),) = self.rows.query(
                "SELECT json_extract(pipeline, ?) FROM runs WHERE run_id = ?",
                (f"$.specs[{position}]", self.run_id),
            )
            if type(ref) is not str:
                self.off()
            self.spec_ref = load_json(ref)
        if kind not in (None, "null", "text"):
            self.off()
        if codec is not None:
            self.written_with = codec

    def life(self, name: str, *, in_pipeline: bool) -> tuple[bool, Change | None]:
        """Whether ``name`` is in the graph at the end, and the change that last
        added it (None: the pipeline's own); checks its events fit its lives."""
        present = in_pipeline
        born: Change | None = None
        toggles: list[tuple[int, bool]] = [(-1, present)]
        for change in self.changes(name):
            seq, record, _ = change
            if not record.accepted:
                continue
            if name in record.removed:
                if not present:
                    self.off()
                present = False
            if name in record.added:
                if present:
                    self.off()
                present, born = True, change
            toggles.append((seq, present))
        # Each event of the stage must come while it is in the graph.
        at = 0
        for seq, _, _ in self.events(name):
            while at + 1 < len(toggles) and toggles[at + 1][0] < seq:
                at += 1
            if not toggles[at][1]:
                self.off()
        return present, born

    def state(
        self, name: str, born: Change | None
    ) -> tuple[StageState, float | None, float]:
        """The stage's state, start and end since it was last added."""
        since = -1 if born is None else born[0]
        state, started, finished = StageState.PENDING, None, 0.0
        for seq, kind, payload in self.events(name):
            if seq < since:
                continue
            if kind == "stage_queued":
                state = StageState.QUEUED
                moment(payload["time"], "time")
            elif kind == "stage_started":
                state, started = StageState.RUNNING, moment(payload["time"], "time")
            elif kind == "stage_ended":
                state = StageState(payload["state"])
                finished = moment(payload["time"], "time")
        return state, started, finished

    def spec(self, born: Change | None) -> tuple[StageSpec, str | None]:
        """The stage's spec and mapped key, as the replay builds them."""
        run = JournaledRun(self.run_id, "", 0.0, "", None, {}, [])
        replayer = Replayer(run, None, None, attempts=False)
        if born is None:
            return replayer.specs.spec({**self.spec_ref, "name": self.name}), None
        seq, record, payload = born
        request = payload["request"]
        if type(request) is not dict:
            self.off()
        if record.kind == "add_stage":
            return replayer.specs.spec(request["spec"]), None
        if record.kind == "replace_pending":
            made = replayer.specs.added(record, request)
            return made[self.name][0], None
        if record.kind != "expand":
            self.off()  # a change set: its items are read whole
        return self.mapped(replayer, seq, request)

    def mapped(
        self, replayer: Replayer, seq: int, request: dict[str, Any]
    ) -> tuple[StageSpec, str | None]:
        spec = replayer.specs.spec(request["spec"])
        keys, items = request["keys"], request["items"]
        if type(keys) is not list:
            self.off()
        index = None
        for at, key in enumerate(keys):
            if f"{spec.name}[{key}]" == self.name:
                index = at
        if index is None:
            self.off()
        params = None
        if type(items) is dict and type(items.get("events")) is int:
            count = items["events"]
            if count != len(keys):
                self.off()
            rows = self.rows.query(
                "SELECT kind, payload FROM events WHERE run_id = ? AND seq = ?",
                (self.run_id, seq - count + index),
            )
            if len(rows) != 1 or rows[0][0] != "item":
                self.off()
            item = load_json(rows[0][1])
            if type(item) is not dict:
                self.off()
            params = item.get("params")
        elif type(items) is not list or len(items) != len(keys):
            self.off()
        if params is not None:
            spec = spec.named(spec.name, params=params)
        return spec, str(keys[index])

    def deps(self, born: Change | None) -> list[str]:
        """The stage's dependencies in the graph at the end, in order."""
        since = -1 if born is None else born[0]
        edges: list[tuple[str, int]] = []
        if born is None:
            assert self.entry is not None
            after = self.entry[2]
            if type(after) is not list:
                self.off()
            edges = [(text(dep, "dependency"), -1) for dep in after]
        for seq, record, _ in self.changes(self.name):
            if record.accepted and seq >= since:
                edges.extend(
                    (up, seq) for up, down in record.edges if down == self.name
                )
        kept = []
        for upstream, seq in edges:
            if not _plain(upstream):
                self.off()
            removed = any(
                record.accepted and upstream in record.removed and at > seq
                for at, record, _ in self.changes(upstream)
            )
            if not removed:
                kept.append(upstream)
        return kept

    def born_of(self, name: str) -> Change | None:
        born = None
        for change in self.changes(name):
            if change[1].accepted and name in change[1].added:
                born = change
        return born

    def attempts_log(self) -> list[StageEvent]:
        """The stage's events as the replay notes them, with its rebirths."""
        log: list[StageEvent] = [
            stage_event(seq, kind, payload)
            for seq, kind, payload in self.events(self.name)
            if kind != "stage_queued"
        ]
        for seq, record, _ in self.changes(self.name):
            if record.accepted and self.name in record.added:
                log.append((seq, "born", 0.0, None, None))
        log.sort(key=lambda event: event[0])
        return log

    def lineage(self) -> Lineage:
        self.anchor()
        self.pipeline()
        changes = self.changes(self.name)
        records = tuple(record for _, record, _ in changes)
        present, born = self.life(self.name, in_pipeline=self.entry is not None)
        if not present:
            if self.events(self.name) and not changes:
                self.off()
            if not records:
                raise UnknownStageError(self.name, where=f"run {self.run_id!r}")
            added, removed = _last_added_and_removed(self.name, records)
            return Lineage(
                stage=self.name,
                state=None,
                created_by=added,
                item_key=None,
                consumed=(),
                started_at=None,
                finished_at=None,
                changes=records,
                in_graph=False,
                removed_by=removed,
            )
        spec, key = self.spec(born)
        state, started, finished = self.state(self.name, born)
        consumed = []
        for upstream in self.deps(born):
            up_state, _, up_finished = self.state(upstream, self.born_of(upstream))
            if started is not None and up_state is _SUCCEEDED:
                consumed.append(ConsumedOutput(upstream, up_finished))
        return Lineage(
            stage=self.name,
            state=state,
            created_by=None if born is None else born[1],
            item_key=key,
            consumed=tuple(consumed),
            started_at=started,
            finished_at=finished if state.is_terminal else None,
            changes=records,
            params=spec.params,
            attempts=attempts_of(self.attempts_log(), self.resumes()),
        )

    def output(self) -> StageOutput:
        self.anchor()
        self.pipeline()
        present, born = self.life(self.name, in_pipeline=self.entry is not None)
        if not present:
            return StageOutput(None, stored=False)
        state, _, _ = self.state(self.name, born)
        stored: tuple[str | bytes, str | None] | None = None
        for _, kind, payload in self.events(self.name):
            if kind != "stage_ended" or payload["state"] != "succeeded":
                continue
            persisted = payload.get("persisted", True)
            if persisted is False:
                stored = None
                continue
            if persisted is not True:
                self.off()
            value = payload["output"]
            if type(value) is not str and type(value) is not bytes:
                self.off()
            codec = payload.get("codec")
            stored = (value, None if codec is None else text(codec, "codec"))
        if state is not _SUCCEEDED or stored is None:
            return StageOutput(state, stored=False)
        decode = value_decoder(None, (), self.written_with, self.fail, {})
        return StageOutput(
            state,
            stored=True,
            value=decode(stored[0], f"output of {self.name!r}", stored[1]),
        )

    def fail(self, what: str) -> NoReturn:
        msg = (
            f"run {self.run_id!r} of the journal cannot be replayed: {what}; the "
            "file was damaged or edited by hand (dagvisor never writes this)"
        )
        raise JournalError(msg)


def read_lineage(rows: RowReader, run_id: str, stage: str) -> Lineage | None:
    """The stage's lineage read by index, or None: read the run whole instead.

    Raises:
        UnknownStageError: the run never had such a stage.
    """
    if not _plain(stage) or not usable(rows):
        return None
    with rows.snapshot():
        try:
            return _Reader(rows, run_id, stage).lineage()
        except UnknownStageError:
            raise
        except (Fallback, *_MALFORMED):
            return None


def read_output(rows: RowReader, run_id: str, stage: str) -> StageOutput | None:
    """The stage's output read by index, or None: read the run whole instead."""
    if not _plain(stage) or not usable(rows):
        return None
    with rows.snapshot():
        try:
            return _Reader(rows, run_id, stage).output()
        except (Fallback, *_MALFORMED):
            return None
