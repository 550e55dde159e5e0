"""The rows the index by stage holds for one stage of a run, each checked.

`StageRows` finds, through the index (`_stage_index`), the events of a
stage, the changes that name it and the run's resumptions, and checks them
before anyone uses them: the run's anchor against the run as it is now (no
event written or removed since the index was built, the run not going on
again, the first and last rows of its range the run's), the stage's rows
numbered one after the other and fitting the rows just before and after
them (none deleted, added or moved), and each row against the event it
names (its kind, the stage it names). Anything else raises `Fallback`: the
caller reads the run whole (the replay). The rows are checked against the
events, not the events against the rows: an index rewritten whole and
consistent without some rows (the rest renumbered, the anchor with them)
fits, and is taken as complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn

from dagvisor.actors._jsonform import load_json

from ._journal_read import READ_ERRORS
from ._journal_rows import check_event
from ._records import audit_record, signal_record
from ._stage_index import RESUMES, STAGE_KINDS, missing_index

if TYPE_CHECKING:
    from ._audit import AuditRecord
    from ._journal_rows import RowReader

__all__ = ["Change", "Fallback", "StageRows", "usable"]

_ROWS: Final = (
    "SELECT s.seq, s.n, e.kind, e.payload, e.output, e.data FROM stage_rows s "
    "LEFT JOIN events e ON e.run_id = ?1 AND e.seq = s.seq "
    "WHERE s.run = ?2 AND s.stage = ?3 ORDER BY s.seq"
)
# The run's rows just before and just after a stage's, in the table's order.
_BEFORE: Final = (
    "SELECT n, stage, seq FROM stage_rows WHERE run = ?1 AND stage < ?2 "
    "ORDER BY stage DESC, seq DESC LIMIT 1"
)
_AFTER: Final = (
    "SELECT n, stage, seq FROM stage_rows WHERE run = ?1 AND stage > ?2 "
    "ORDER BY stage, seq LIMIT 1"
)
_ENDS: Final = "SELECT n FROM stage_rows WHERE run = ?1 AND n IN (?2, ?3)"
_EVENT: Final = (
    "SELECT kind, payload, output, data FROM events WHERE run_id = ? AND seq = ?"
)


class Fallback(Exception):
    """The index cannot answer exactly: read the run whole."""


Change = tuple[int, "AuditRecord", dict[str, Any]]
"""A change naming a stage: its event's seq, its audit record, its payload."""


class StageRows:
    """A run's rows in the index, read stage by stage on one snapshot of the file."""

    def __init__(self, rows: RowReader, run_id: str) -> None:
        self.rows = rows
        self.run_id = run_id
        self.changes_of: dict[str, list[Change]] = {}
        self.events_of: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
        self.records: dict[int, tuple[AuditRecord, dict[str, Any]]] = {}
        self.run = 0
        self.first = 0
        self.end = 0

    def off(self) -> NoReturn:
        raise Fallback

    def anchor(self) -> None:
        """The run's row in the index, checked against the run as it is now."""
        found = self.rows.query(
            "SELECT i.run, i.last, i.first, i.rows, r.status FROM stage_index i "
            "JOIN runs r ON r.run_id = i.run_id WHERE i.run_id = ?",
            (self.run_id,),
        )
        if len(found) != 1:
            self.off()  # not indexed: a run that never ended, or resumed since
        run, last, first, count, status = found[0]
        ((now,),) = self.rows.query(
            "SELECT max(seq) FROM events WHERE run_id = ?", (self.run_id,)
        )
        if (
            type(run) is not int
            or type(first) is not int
            or type(count) is not int
            or type(last) is not int
            or now != last  # events written or removed since it was built
            or status == "running"
            or count < 1  # an ended run's index has rows (its stages' events)
        ):
            self.off()
        # The range's first and last rows must be the run's: an anchor moved
        # to a run number, or a range, without rows would fit every stage.
        ends = self.rows.query(_ENDS, (run, first, first + count - 1))
        if len(ends) != (1 if count == 1 else 2):
            self.off()
        self.run, self.first, self.end = run, first, first + count

    def indexed(self, name: str) -> None:
        """Read the rows the index holds for ``name`` into `events_of` and
        `changes_of`, each checked against its event; the rows must be the
        stage's all (see `_stage_index`: numbered in order, whole)."""
        rows = self.rows.query(_ROWS, (self.run_id, self.run, name))
        before = self.rows.query(_BEFORE, (self.run, name))
        after = self.rows.query(_AFTER, (self.run, name))
        expected = before[0][0] + 1 if before else self.first
        events: list[tuple[int, str, dict[str, Any]]] = []
        changes: list[Change] = []
        for seq, n, *event in rows:
            if n != expected:
                self.off()  # a row missing, added or moved
            expected += 1
            checked = self.checked(name, seq, event)
            if len(checked) == 3:  # (seq, kind, payload): the stage's own event
                events.append(checked)
            else:
                changes.append((seq, *checked))
        if (after[0][0] if after else self.end) != expected:
            self.off()  # a row missing after the stage's, or the anchor edited
        # A row of this stage relabelled as a neighbouring stage's would fit
        # the numbering: the rows on either side must name their own stage.
        for _, stage, seq in (*before, *after):
            event = self.rows.query(_EVENT, (self.run_id, seq))
            if len(event) != 1 or type(stage) is not str:
                self.off()
            self.checked(stage, seq, list(event[0]))
        self.events_of[name] = events
        self.changes_of[name] = changes

    def checked(
        self, name: str, seq: int, event: list[Any]
    ) -> tuple[int, str, dict[str, Any]] | tuple[AuditRecord, dict[str, Any]]:
        """A row of stage ``name`` checked against its event ``(kind, payload,
        output, data)``: the stage's event, or the change naming it."""
        kind = event[0]
        if name == RESUMES:
            if kind != "resumed":
                self.off()
            return (seq, kind, {})
        if kind in STAGE_KINDS:
            found = check_event((seq, *event), self.run_id, self.rows.path)
            if found[2].get("stage") != name:
                self.off()  # the row points at another stage's event
            return found
        if kind in ("change", "signal"):
            record, payload = self.record(seq, kind, event[1])
            if name not in record.stages:
                self.off()  # the row points at another change
            return (record, payload)
        self.off()  # no such event, or not one that names a stage

    def record(
        self, seq: int, kind: str, payload: Any
    ) -> tuple[AuditRecord, dict[str, Any]]:
        """A change's (or signal's) audit record and payload, read once."""
        found = self.records.get(seq)
        if found is None:
            if type(payload) is not str:
                self.off()
            decoded = load_json(payload)
            if type(decoded) is not dict:
                self.off()
            record = (
                audit_record(decoded) if kind == "change" else signal_record(decoded)
            )
            found = self.records[seq] = (record, decoded)
        return found

    def changes(self, name: str) -> list[Change]:
        """The changes naming ``name``, each checked against its event."""
        if name not in self.changes_of:
            self.indexed(name)
        return self.changes_of[name]

    def events(self, name: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The stage's own events (started, ended, ...), each checked."""
        if name not in self.events_of:
            self.indexed(name)
        return self.events_of[name]

    def resumes(self) -> tuple[int, ...]:
        return tuple(seq for seq, _, _ in self.events(RESUMES))


def usable(rows: RowReader) -> bool:
    """Whether the file holds the index whole, as this dagvisor makes it."""
    if rows.version < 4:
        return False
    try:
        return not missing_index(rows.db)
    except READ_ERRORS:
        return False
