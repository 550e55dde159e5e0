"""The journal writer's books: what it knows of each run, and what a transaction did.

`RunLedger` is kept by the writer (`_writer`) on the event loop, one per run
it writes for; `Committed` is worked out by a transaction in the writer's
worker (`_batch`, `_writer_process`) and applied to the ledgers on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import trio

    from dagvisor.actors import JournalWriteError
    from dagvisor.actors._messages import Message

__all__ = ["Committed", "RunLedger"]


@attrs.define(eq=False)
class RunLedger:
    """What the writer knows of one run it writes for.

    Attributes:
        run_id: the run.
        outbox: the run's supervisor inbox, to tell it to stop.
        next_seq: the sequence number its next event must carry.
        owned: its lease is committed, so each batch fences and renews it.
        expires: when its lease ends unless renewed (wall-clock).
        error: why its records can no longer be committed, once they cannot.
    """

    run_id: str
    outbox: trio.MemorySendChannel[Message] | None
    next_seq: int = 0
    owned: bool = False
    expires: float = 0.0
    error: JournalWriteError | None = None


@attrs.define
class Committed:
    """What one transaction did, run by run (worked out in the writer's worker)."""

    failed: dict[str, JournalWriteError] = attrs.Factory(dict)
    owned: list[str] = attrs.Factory(list)
    released: list[str] = attrs.Factory(list)
    next_seq: dict[str, int] = attrs.Factory(dict)
    renewed: list[str] = attrs.Factory(list)
    ended: list[str] = attrs.Factory(list)
    expires: float = 0.0
    ok: bool = True  # False: the transaction itself failed (the file, not a record)
