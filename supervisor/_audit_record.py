"""One audit record (`AuditRecord`): its fields, its text, and its fast builder.

The supervisor appends a change's record as a plain tuple (`Fields`);
`audit_record` makes the record from it, through the slots' own
descriptors, when it is first read. The trail that holds them is
`AuditLog` (`_audit`).
"""

from __future__ import annotations

from typing import final

import attrs

from dagvisor.actors import ChangeKind

__all__ = ["AuditRecord", "Fields", "audit_record"]


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
        signal: for a signal sent to the run (``kind="signal"``), its name.
        carried: for a signal, a summary of its payload (its JSON text,
            shortened, with its size, when long; the journal keeps it whole).
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
    signal: str | None = None
    carried: str | None = None

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
        if self.signal is not None:
            return f"{head}: signal {self.signal!r} carrying {self.carried} - {self.reason}"
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


_new = object.__new__
(
    _set_seq,
    _set_run_id,
    _set_kind,
    _set_requester,
    _set_reason,
    _set_accepted,
    _set_version_before,
    _set_version_after,
    _set_wall_time,
    _set_monotonic_time,
    _set_added,
    _set_removed,
    _set_edges,
    _set_cancelled,
    _set_error_type,
    _set_error,
    _set_parts,
    _set_signal,
    _set_carried,
) = (AuditRecord.__dict__[field.name].__set__ for field in attrs.fields(AuditRecord))
# The slots' own descriptors: the supervisor makes one record per change, and
# attrs' frozen __init__ (17 keywords, a bound object.__setattr__ per field)
# costs twice as much. `tests/test_hostile_journal_rows.py` checks both ways
# give equal records, field by field.


def audit_record(
    seq: int,
    run_id: str,
    kind: ChangeKind,
    requester: str,
    reason: str,
    accepted: bool,
    version_before: int,
    version_after: int,
    wall_time: float,
    monotonic_time: float,
    added: tuple[str, ...],
    removed: tuple[str, ...],
    edges: tuple[tuple[str, str], ...],
    cancelled: tuple[str, ...],
    error_type: str | None,
    error: str | None,
    parts: tuple[tuple[str, tuple[str, ...]], ...],
) -> AuditRecord:
    """An `AuditRecord` of values the supervisor made, as its constructor would make it."""
    record: AuditRecord = _new(AuditRecord)
    _set_seq(record, seq)
    _set_run_id(record, run_id)
    _set_kind(record, kind)
    _set_requester(record, requester)
    _set_reason(record, reason)
    _set_accepted(record, accepted)
    _set_version_before(record, version_before)
    _set_version_after(record, version_after)
    _set_wall_time(record, wall_time)
    _set_monotonic_time(record, monotonic_time)
    _set_added(record, added)
    _set_removed(record, removed)
    _set_edges(record, edges)
    _set_cancelled(record, cancelled)
    _set_error_type(record, error_type)
    _set_error(record, error)
    _set_parts(record, parts)
    _set_signal(record, None)
    _set_carried(record, None)
    return record


Fields = tuple[
    int,
    str,
    ChangeKind,
    str,
    str,
    bool,
    int,
    int,
    float,
    float,
    tuple[str, ...],
    tuple[str, ...],
    tuple[tuple[str, str], ...],
    tuple[str, ...],
    str | None,
    str | None,
    tuple[tuple[str, tuple[str, ...]], ...],
]
"""An `AuditRecord`'s fields, in order: what `audit_record` makes it from (a
change's: a signal's record, rare, is made whole)."""
