"""The audit trail of a run: one record per change request, accepted or refused.

Records are appended by the supervisor only, with consecutive sequence
numbers starting at 0, in the order the requests were applied. Queries by
wall-clock time use a sorted index (the wall clock may step back, so append
order is not time order); queries by stage use a per-stage list of sequence
numbers, which is in order because records are only appended. Both indexes
are brought up to date when queried, not on every append: appending is on
the supervisor's path for every change, querying is rare.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, TypeAlias, final, overload

import attrs
from sortedcontainers import SortedKeyList

__all__ = ["AuditLog", "AuditRecord", "ChangeKind"]

ChangeKind: TypeAlias = Literal[
    "add_stage",
    "add_edge",
    "expand",
    "remove_stage",
    "replace_pending",
    "cancel_stage",
    "cancel_run",
    "change_set",
]


@final
@attrs.frozen(kw_only=True)
class AuditRecord:
    """One change request and what became of it.

    Attributes:
        seq: position in the run's trail: 0, 1, 2, ... with no gap.
        run_id: the run.
        kind: what was asked (``"add_stage"``, ``"add_edge"``, ...).
        requester: who asked: a stage name, ``"interceptor:<name>"`` or
            ``"external"`` (the `Run` handle).
        reason: why, in the requester's words.
        accepted: whether the change was applied.
        version_before: the graph version the request was checked against.
        version_after: the graph version after it (equal when refused or a no-op).
        wall_time: when it was applied, seconds since the epoch.
        monotonic_time: when it was applied, on the run's trio clock.
        added: stages the change added.
        removed: stages the change removed.
        edges: edges the change added, as ``(upstream, downstream)``.
        cancelled: stages the change cancelled.
        error_type: the error's class name when refused, else None.
        error: the error's message when refused, else None.
        parts: for a change set (``kind="change_set"``), each part's kind and
            the stages it added (or, for an edge, its two ends), in order.
    """

    seq: int
    run_id: str
    kind: ChangeKind
    requester: str
    reason: str
    accepted: bool
    version_before: int
    version_after: int
    wall_time: float
    monotonic_time: float
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    edges: tuple[tuple[str, str], ...] = ()
    cancelled: tuple[str, ...] = ()
    error_type: str | None = None
    error: str | None = None
    parts: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def stages(self) -> frozenset[str]:
        """Every stage this record names."""
        names = {*self.added, *self.removed, *self.cancelled}
        for upstream, downstream in self.edges:
            names.add(upstream)
            names.add(downstream)
        return frozenset(names)

    def __str__(self) -> str:
        head = f"#{self.seq} v{self.version_before}->v{self.version_after} {self.kind} by {self.requester}"
        if not self.accepted:
            return f"{head}: refused ({self.error_type}: {self.error}) - {self.reason}"
        parts = []
        if self.added:
            parts.append(
                "added "
                + ", ".join(self.added[:5])
                + (" ..." if len(self.added) > 5 else "")
            )
        if self.edges:
            parts.append("edges " + ", ".join(f"{u}->{d}" for u, d in self.edges[:5]))
        if self.removed:
            parts.append("removed " + ", ".join(self.removed[:5]))
        if self.cancelled:
            parts.append("cancelled " + ", ".join(self.cancelled[:5]))
        if self.parts:
            shown = ", ".join(
                f"{kind} {' '.join(names[:3])}{' ...' if len(names) > 3 else ''}".rstrip()
                for kind, names in self.parts[:5]
            )
            parts.append(f"as one change of {len(self.parts)} parts ({shown})")
        what = "; ".join(parts) or "no change needed"
        return f"{head}: {what} - {self.reason}"


def _wall_key(record: AuditRecord) -> tuple[float, int]:
    return (record.wall_time, record.seq)


@final
class AuditLog(Sequence[AuditRecord]):
    """A run's audit records, in order, with indexes by time and by stage."""

    __slots__ = ("_by_stage", "_by_wall_time", "_indexed", "_records")

    def __init__(self) -> None:
        self._records: list[AuditRecord] = []
        self._indexed = 0
        self._by_wall_time: SortedKeyList[AuditRecord, tuple[float, int]] = (
            SortedKeyList(key=_wall_key)
        )
        self._by_stage: dict[str, list[int]] = {}

    def append(self, record: AuditRecord) -> None:
        """Add the next record (the supervisor's job only)."""
        if record.seq != len(self._records):
            msg = (
                f"audit record {record.seq} out of order; expected {len(self._records)}"
            )
            raise ValueError(msg)
        self._records.append(record)

    def _catch_up(self) -> None:
        """Index the records appended since the last query."""
        records = self._records
        for record in records[self._indexed :]:
            self._by_wall_time.add(record)
            for name in record.stages:
                self._by_stage.setdefault(name, []).append(record.seq)
        self._indexed = len(records)

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> AuditRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[AuditRecord]: ...
    def __getitem__(self, index: int | slice) -> AuditRecord | Sequence[AuditRecord]:
        return self._records[index]

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self._records)

    def __repr__(self) -> str:
        return f"<AuditLog {len(self._records)} records>"

    def between(
        self, since: float | None = None, until: float | None = None
    ) -> list[AuditRecord]:
        """Records whose wall-clock time is in ``[since, until]``, oldest first."""
        self._catch_up()
        lower = None if since is None else (since, -1)
        upper = None if until is None else (until, len(self._records))
        records: list[AuditRecord] = list(
            self._by_wall_time.irange_key(lower, upper, inclusive=(True, True))
        )
        return records

    def for_stage(self, name: str) -> list[AuditRecord]:
        """Records that name stage ``name`` (added, removed, wired or cancelled it)."""
        self._catch_up()
        return [self._records[seq] for seq in self._by_stage.get(name, ())]

    def snapshot(self) -> tuple[AuditRecord, ...]:
        """The records so far, as an immutable tuple."""
        return tuple(self._records)
