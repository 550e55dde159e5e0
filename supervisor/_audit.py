"""The audit trail of a run: one record per change request, accepted or refused.

Records are appended by the supervisor only, with consecutive sequence
numbers starting at 0, in the order the requests were applied. The
supervisor appends a record's fields (a plain tuple, `Fields`); the record
object is made from them when it is first read, and kept: a run may make
tens of thousands of changes a second, and a tuple of strings and numbers
costs less to make than a record and nothing to Python's cyclic collector,
which never walks it again. Queries by
wall-clock time use a sorted index (the wall clock may step back, so append
order is not time order); queries by stage use a per-stage list of sequence
numbers, which is in order because records are only appended. Both indexes
are brought up to date when queried, not on every append: appending is on
the supervisor's path for every change, querying is rare.

The record itself, `AuditRecord`, and its fields are `_audit_record`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final, final, overload

from sortedcontainers import SortedKeyList

from dagvisor.actors import ChangeKind

from ._audit_record import AuditRecord, Fields, audit_record

# The record, its fields and its builder are importable from here too.
__all__ = ["AuditLog", "AuditRecord", "ChangeKind", "Fields", "audit_record"]


_REQUESTER: Final = 3  # the index of ``requester`` in `Fields`


def _wall_key(record: AuditRecord) -> tuple[float, int]:
    return (record.wall_time, record.seq)


@final
class AuditLog(Sequence[AuditRecord]):
    """A run's audit records, in order, with indexes by time and by stage.

    Indexed by sequence number: ``log[seq]``. With ``keep_recent=N`` (a run
    with ``retain_outputs="journal"``, whose journal holds every record), a
    record leaves memory once it is older than the last N and no stage still
    in memory was added by it (the supervisor pins those): ``len(log)``
    still counts every record of the run, iterating yields the records in
    memory, and asking for one that left raises `LookupError`.
    """

    __slots__ = (
        "_by_stage",
        "_by_wall_time",
        "_indexed",
        "_keep",
        "_pins",
        "_records",
        "bounded",
        "next_seq",
    )

    def __init__(self, *, keep_recent: int | None = None) -> None:
        self._records: dict[int, AuditRecord | Fields] = {}
        """Each record in memory, or its fields until it is first read."""
        self.next_seq = 0
        """The sequence number of the next record: how many the run has made
        (``len(log)``, without a call; read-only)."""
        self._keep = keep_recent
        self.bounded = keep_recent is not None
        """Whether records leave memory (so stages in memory pin theirs)."""
        self._pins: dict[int, int] = {}
        self._indexed = 0
        self._by_wall_time: SortedKeyList[AuditRecord, tuple[float, int]] = (
            SortedKeyList(key=_wall_key)
        )
        self._by_stage: dict[str, list[int]] = {}

    @classmethod
    def of(cls, records: Iterable[AuditRecord]) -> AuditLog:
        """A log holding ``records`` (in order; gaps allowed, as in a bounded log)."""
        log = cls()
        for record in records:
            log._records[record.seq] = record
            log.next_seq = record.seq + 1
        return log

    def append(self, record: AuditRecord) -> None:
        """Add the next record (the supervisor's job only)."""
        if record.seq != self.next_seq:
            msg = f"audit record {record.seq} out of order; expected {self.next_seq}"
            raise ValueError(msg)
        self._records[record.seq] = record
        self.next_seq += 1
        if self._keep is not None:
            self._release(record.seq - self._keep)

    def append_fields(self, fields: Fields) -> None:
        """Add the next record as its fields (the supervisor's job only)."""
        seq = fields[0]
        if seq != self.next_seq:
            msg = f"audit record {seq} out of order; expected {self.next_seq}"
            raise ValueError(msg)
        self._records[seq] = fields
        self.next_seq = seq + 1
        if self._keep is not None:
            self._release(seq - self._keep)

    def _held(self, seq: int) -> AuditRecord | None:
        """Record ``seq`` if it is in memory, made from its fields the first time."""
        entry = self._records.get(seq)
        if type(entry) is tuple:
            entry = self._records[seq] = audit_record(*entry)
        return entry  # type: ignore[return-value]  # a record or None, now

    def requester(self, seq: int) -> str:
        """Who asked for change ``seq``, without making its record (see `__getitem__`)."""
        entry = self._records.get(seq)
        if type(entry) is tuple:
            return entry[_REQUESTER]
        return self[seq].requester

    def pin(self, seq: int) -> None:
        """A stage added by change ``seq`` is in memory: keep its record."""
        if self._keep is not None and seq >= 0:
            self._pins[seq] = self._pins.get(seq, 0) + 1

    def unpin(self, seq: int) -> None:
        """A stage added by change ``seq`` left memory."""
        if self._keep is None or seq < 0:
            return
        left = self._pins.get(seq, 0) - 1
        if left > 0:
            self._pins[seq] = left
            return
        self._pins.pop(seq, None)
        if seq < self.next_seq - self._keep:
            self._release(seq)

    def _release(self, seq: int) -> None:
        if seq < 0 or seq in self._pins:
            return
        record = self._records.pop(seq, None)
        if record is not None and seq < self._indexed:  # indexed: a record
            self._by_wall_time.discard(record)  # type: ignore[arg-type]  # see above

    def _catch_up(self) -> None:
        """Index the records appended since the last query."""
        for seq in range(self._indexed, self.next_seq):
            record = self._held(seq)
            if record is None:
                continue
            self._by_wall_time.add(record)
            for name in record.stages:
                self._by_stage.setdefault(name, []).append(seq)
        self._indexed = self.next_seq

    def __len__(self) -> int:
        return self.next_seq

    @overload
    def __getitem__(self, index: int) -> AuditRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[AuditRecord]: ...
    def __getitem__(self, index: int | slice) -> AuditRecord | Sequence[AuditRecord]:
        if isinstance(index, slice):
            held = self._held
            return tuple(
                record
                for seq in range(*index.indices(self.next_seq))
                if (record := held(seq)) is not None
            )
        seq = index + self.next_seq if index < 0 else index
        record = self._held(seq)
        if record is None:
            if 0 <= seq < self.next_seq:
                msg = (
                    f"audit record {seq} left memory (retain_outputs='journal'); "
                    "read the run back from its journal for every record"
                )
                raise LookupError(msg)
            msg = f"no audit record {index} (the trail has {self.next_seq})"
            raise IndexError(msg)
        return record

    def get(self, seq: int) -> AuditRecord | None:
        """Record ``seq`` if it is in memory, else None."""
        return self._held(seq)

    def __iter__(self) -> Iterator[AuditRecord]:
        records = self._records
        for seq, entry in records.items():
            if type(entry) is tuple:  # made in place: the dict keeps its size
                entry = records[seq] = audit_record(*entry)
            yield entry  # type: ignore[misc]  # a record, now

    def __repr__(self) -> str:
        held = (
            ""
            if len(self._records) == self.next_seq
            else f", {len(self._records)} in memory"
        )
        return f"<AuditLog {self.next_seq} records{held}>"

    def between(
        self, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        """Records whose wall-clock time is in ``[since, until]``, oldest first."""
        self._catch_up()
        lower = None if since is None else (since, -1)
        upper = None if until is None else (until, self.next_seq)
        records: list[AuditRecord] = list(
            self._by_wall_time.irange_key(lower, upper, inclusive=(True, True))
        )
        return records

    def for_stage(self, name: str) -> list[AuditRecord]:
        """Records that name stage ``name`` (added, removed, wired or cancelled it)."""
        self._catch_up()
        held = self._held
        return [
            record
            for seq in self._by_stage.get(name, ())
            if (record := held(seq)) is not None
        ]

    def __eq__(self, other: object) -> bool:
        """Equal to a log, a tuple or a list holding the same records in order
        (the records in memory, for a log with ``keep_recent``)."""
        if isinstance(other, AuditLog):
            return len(self) == len(other) and self.snapshot() == other.snapshot()
        if isinstance(other, tuple | list):
            return self.snapshot() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, yet it grows

    def snapshot(self) -> tuple[AuditRecord, ...]:
        """The records so far (those in memory), as an immutable tuple."""
        return tuple(self)
