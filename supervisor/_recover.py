"""Reading what a resume needs before it takes a run over, and what `recover` finds.

Both read the journal on a read-only connection of their own, in a worker
thread, and write nothing: the takeover itself is the journal writer's
(`JournalWriter.take_over`), one transaction that checks again what was
read here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dagvisor.actors import JournalError, UnknownRunError

from ._journal import Journal, JournaledRun
from ._lease import SELECT_LEASE, lease_from_row, owner_is_gone

if TYPE_CHECKING:
    import os

    from ._lease import Lease, Owner

__all__ = ["load_for_resume", "orphans"]


def _has_leases(reader: Journal) -> bool:
    rows = reader._read(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'leases'"
    )
    return bool(rows)


def _lease_of(reader: Journal, run_id: str, *, known: bool) -> Lease | None:
    if not known:
        return None  # a journal whose writer recorded no owners
    rows = reader._read(SELECT_LEASE, (run_id,))
    try:
        return lease_from_row(rows[0] if rows else None)
    except (TypeError, ValueError) as exc:
        msg = f"{reader.path}: the owner of run {run_id!r} is malformed ({exc}); the file was damaged or edited"
        raise JournalError(msg) from exc


def load_for_resume(
    path: os.PathLike[str], run_id: str, me: Owner
) -> tuple[JournaledRun, Lease | None]:
    """A run and its lease, read on a read-only connection (blocks).

    Raises:
        RunOwnedError: the run's owner is live: nothing else is read.
        UnknownRunError: the journal holds no such run.
        JournalError: the journal is missing, damaged or not whole.
    """
    with Journal(path, readonly=True) as reader:
        if not run_id.isascii():  # run ids are hex: no such run, whatever it is
            raise UnknownRunError(run_id, str(reader.path))
        lease = _lease_of(reader, run_id, known=_has_leases(reader))
        if lease is not None and not owner_is_gone(lease, me, time.time()):
            raise lease.refusal()
        return reader.load(run_id), lease


def orphans(
    path: os.PathLike[str], me: Owner
) -> tuple[list[str], dict[str, JournalError]]:
    """The runs that did not end and whose owner is gone, oldest first (blocks).

    Also the runs whose owner cannot be read (a hand-edited lease), with why:
    they are left alone, and the others recovered.
    """
    gone: list[str] = []
    damaged: dict[str, JournalError] = {}
    with Journal(path, readonly=True) as reader:
        rows = reader._read(
            "SELECT run_id FROM runs WHERE status = 'running' ORDER BY created"
        )
        known = _has_leases(reader)
        now = time.time()
        for (run_id,) in rows:
            try:
                lease = _lease_of(reader, run_id, known=known)
            except JournalError as exc:
                damaged[run_id] = exc
                continue
            if owner_is_gone(lease, me, now):
                gone.append(run_id)
    return gone, damaged
