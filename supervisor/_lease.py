"""Who owns a run: the owner's identity, its lease, and whether the owner is gone.

A run recorded in a journal has at most one owner at a time: the runtime
that writes its records. The owner is a row of the ``leases`` table (its
process's host, machine fingerprint, pid and start time, plus a random
nonce naming the runtime) with an expiry, renewed by the journal writer
while the run goes. Every batch the writer commits fences: the records of
a run are committed only in a transaction that finds this runtime's nonce
on the run's lease (see `_writer`).

Another runtime may take a run over only when its owner is gone: the lease
expired, or the owner's process is provably dead on this very host (no such
pid, a zombie, or a pid now used by a process started at another time).
Everything here is synchronous SQL on the writer's connection, called in its
worker (a process of its own, or a thread); a takeover runs in one ``BEGIN IMMEDIATE`` transaction, so
of several processes racing for the same run exactly one wins.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Final, Literal, final

import attrs
import psutil

from dagvisor.actors import RunOwnedError, UnknownRunError

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "LEASES_SCHEMA",
    "LEASE_COLUMNS",
    "SELECT_LEASE",
    "Lease",
    "Owner",
    "fence",
    "insert_lease",
    "lease_from_row",
    "owner_is_gone",
    "read_lease",
    "release",
    "take_over",
]

LEASES_SCHEMA: Final = """
CREATE TABLE leases (
    run_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    nonce TEXT NOT NULL,
    expires REAL NOT NULL
)
"""
LEASE_COLUMNS: Final = frozenset(
    {"run_id", "host", "machine", "pid", "started", "nonce", "expires"}
)
# Two readings of one process's start time may differ by the rounding of the
# boot time psutil derives it from; closer than this is the same process.
_SAME_START = 1.0


def _machine() -> str:
    """What tells this kernel and pid namespace apart from others with the same host name.

    Two containers may share a host name; a pid means the same process only
    within one boot of one kernel and one pid namespace. Empty where unknown.
    """
    parts = []
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            parts.append(boot.read().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        return ""
    return " ".join(parts)


@final
@attrs.frozen(kw_only=True)
class Owner:
    """The identity of one runtime: its process, and a nonce for the runtime itself."""

    host: str
    machine: str
    pid: int
    started: float
    nonce: str

    @classmethod
    def of_this_runtime(cls) -> Owner:
        """A new identity: this process, and a nonce no other runtime has."""
        return cls(
            host=socket.gethostname(),
            machine=_machine(),
            pid=os.getpid(),
            started=psutil.Process().create_time(),
            nonce=uuid.uuid4().hex,
        )


@final
@attrs.frozen(kw_only=True)
class Lease:
    """A lease as the journal holds it."""

    run_id: str
    host: str
    machine: str
    pid: int
    started: float
    nonce: str
    expires: float

    def refusal(self) -> RunOwnedError:
        """The error that says who owns the run."""
        return RunOwnedError(
            self.run_id, host=self.host, pid=self.pid, expires=self.expires
        )


def lease_from_row(row: tuple[object, ...] | None) -> Lease | None:
    """A lease from a row of `SELECT_LEASE` (None for no row)."""
    if row is None:
        return None
    run_id, host, machine, pid, started, nonce, expires = row
    return Lease(
        run_id=str(run_id),
        host=str(host),
        machine=str(machine),
        pid=int(pid),  # type: ignore[call-overload]  # an INTEGER column
        started=float(started),  # type: ignore[arg-type]  # a REAL column
        nonce=str(nonce),
        expires=float(expires),  # type: ignore[arg-type]  # a REAL column
    )


SELECT_LEASE: Final = (
    "SELECT run_id, host, machine, pid, started, nonce, expires FROM leases "
    "WHERE run_id = ?"
)


def read_lease(db: sqlite3.Connection, run_id: str) -> Lease | None:
    """The lease of a run, or None if it has no owner."""
    return lease_from_row(db.execute(SELECT_LEASE, (run_id,)).fetchone())


def _process_is_gone(lease: Lease, me: Owner) -> bool:
    """Whether the lease's process provably no longer runs (only on this host)."""
    if lease.host != me.host or lease.machine != me.machine:
        return False  # another host (or container): its processes are not ours to see
    try:
        process = psutil.Process(lease.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True  # it has exited; only its parent has not reaped it
        return abs(process.create_time() - lease.started) > _SAME_START
    except (psutil.NoSuchProcess, OverflowError, ValueError):
        return True  # no such process, or a pid no process can have
    except psutil.Error:
        return False  # cannot tell (no permission): not provably gone


def owner_is_gone(lease: Lease | None, me: Owner, now: float) -> bool:
    """Whether the run may be taken over by ``me``: no owner, ours, expired, or dead."""
    if lease is None or lease.nonce == me.nonce:
        return True
    if lease.expires <= now:
        return True
    return _process_is_gone(lease, me)


def insert_lease(
    db: sqlite3.Connection, run_id: str, me: Owner, expires: float
) -> None:
    """Record ``me`` as the owner of a new run (in the transaction that records it)."""
    db.execute(
        "INSERT INTO leases (run_id, host, machine, pid, started, nonce, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (run_id, me.host, me.machine, me.pid, me.started, me.nonce, expires),
    )


def fence(db: sqlite3.Connection, run_id: str, me: Owner, expires: float) -> bool:
    """Renew ``me``'s lease on a run; False if the run is no longer ``me``'s.

    One statement both checks and renews: inside the writer's transaction
    (which holds the write lock) nobody can take the run between the two.
    """
    cursor = db.execute(
        "UPDATE leases SET expires = ? WHERE run_id = ? AND nonce = ?",
        (expires, run_id, me.nonce),
    )
    return cursor.rowcount == 1


def release(db: sqlite3.Connection, run_id: str, me: Owner) -> None:
    """Give up ``me``'s lease on a run (when its end is recorded)."""
    db.execute("DELETE FROM leases WHERE run_id = ? AND nonce = ?", (run_id, me.nonce))


def take_over(
    db: sqlite3.Connection,
    run_id: str,
    next_seq: int,
    me: Owner,
    *,
    lease_for: float,
    where: str,
) -> Literal["taken", "changed"]:
    """Make ``me`` the owner of a run whose owner is gone (call inside ``BEGIN IMMEDIATE``).

    ``next_seq`` is the sequence number the caller's replay of the run
    expects next: if the run has gone on since it was read (another process
    took it, ran it and let it go), nothing is written and ``"changed"`` says
    to read it again.

    Raises:
        UnknownRunError: the journal holds no such run.
        RunOwnedError: its owner's lease is live.
    """
    if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
        raise UnknownRunError(run_id, where)
    lease = read_lease(db, run_id)
    now = time.time()
    if not owner_is_gone(lease, me, now):
        assert lease is not None
        raise lease.refusal()
    (last,) = db.execute(
        "SELECT COALESCE(MAX(seq), -1) FROM events WHERE run_id = ?", (run_id,)
    ).fetchone()
    if last != next_seq - 1:
        return "changed"
    db.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
    insert_lease(db, run_id, me, now + lease_for)
    return "taken"
