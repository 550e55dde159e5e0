"""The journal records of one run, built by its supervisor and shipped to the writer.

Records are queued in memory while a message is handled (building one is
pure data: no I/O, no user code) and handed to the `JournalWriter` between
messages (`ship`). What each record holds is what a resume replays (see
``_replay``): the run and its pipeline; each stage's wait for room (a
stage that may queue), its start, each retry's start and each end (with
the encoded output, or the error and the end of its traceback); each
change with its audit record and what was asked, its mapped items first,
one event each; memory samples; a resume; the end.

A record is a tuple whose first two items are the run's id and, for an
event, its ``seq`` (None for the run's own records), then its kind::

    (run_id, seq, kind, payload, output)      an event: a row of ``events``
    (run_id, None, "run", name, created, pipeline)
    (run_id, None, "resume")
    (run_id, None, "end", status, ended)

An event's payload is, for the records every stage and every change writes,
the values of its text as a tuple (a stage's name and time, and state; a
change's audit record fields and what was asked), which the writer's worker
makes text (`make_texts`, with ``_record_text``: off the event loop, in the
writer's process by default); for the rare others, a dict the writer dumps. Records are shipped to the writer
together, one parcel per message handled, with the bytes they weigh.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from dagvisor.actors import StageState
from dagvisor.actors._errors import message_of
from dagvisor.actors._jsonform import dump_json
from dagvisor.actors._messages import (
    AddStage,
    Expand,
    Request,
)
from dagvisor.actors._stored import Stored

from ._asked import asked, spec_ref_or_options

if TYPE_CHECKING:
    from dagvisor.actors._stored import Encoded

    from ._audit import AuditRecord, Fields
    from ._graph import Node
    from ._record_text import AskedAddStage
    from ._writer import JournalWriter

__all__ = ["RECORD_BYTES", "RunRecords"]

# The end of a failed stage's traceback that the journal keeps (characters).
_TRACEBACK_KEPT: Final = 16_000
_FAILED = StageState.FAILED
_SUCCEEDED = StageState.SUCCEEDED


def _traceback(error: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:  # a __str__ that raises: the frames without the message
        text = f"(the traceback of this {type(error).__name__} cannot be shown)"
    return text[-_TRACEBACK_KEPT:]


RECORD_BYTES: Final = 300
"""The bytes a queued record is counted for, besides its output's text."""


@final
class RunRecords:
    """The records of one run waiting to be shipped, with its next event number."""

    __slots__ = ("_seq", "_weight", "flushes", "out", "run_id", "wall_offset")

    def __init__(self, run_id: str, wall_offset: float, next_seq: int = 0) -> None:
        self.run_id = run_id
        self.wall_offset = wall_offset
        """Added to the run's clock to make journal times wall-clock."""
        self.out: list[tuple[Any, ...]] = []
        """The records queued (read-only outside: `ship` hands them over)."""
        self._weight = 0
        """What the queued records weigh (see `RECORD_BYTES`)."""
        self._seq = next_seq
        self.flushes: list[trio.Event] = []
        """Events the writer sets once the records queued before each are
        committed (read-only outside, like ``out``)."""

    def __bool__(self) -> bool:
        return bool(self.out or self.flushes)

    def flush(self, done: trio.Event) -> None:
        """Set ``done`` once everything queued so far is committed (see `Flush`)."""
        self.flushes.append(done)

    def event(
        self,
        kind: str,
        payload: str | dict[str, Any] | tuple[Any, ...],
        output: str | bytearray | memoryview | None = None,
    ) -> None:
        """Queue one event (the next ``seq`` of the run): its payload's JSON text
        (or a dict, which the writer dumps), and an encoded value for the
        ``output`` column (text) or the ``data`` column (a binary codec's
        bytes, a memoryview)."""
        self.out.append((self.run_id, self._seq, kind, payload, output))
        self._seq += 1
        self._weight += RECORD_BYTES if output is None else RECORD_BYTES + len(output)

    def _other(self, record: tuple[Any, ...]) -> None:
        self.out.append(record)
        self._weight += RECORD_BYTES

    # -- the run -------------------------------------------------------------------

    def start(
        self,
        name: str,
        started_wall: float,
        pipeline: dict[str, Any],
        inputs: str,
        codec: str | None,
    ) -> None:
        """The run's first record: its pipeline, encoded inputs and codec."""
        self._other(
            (
                self.run_id,
                None,
                "run",
                name,
                started_wall,
                {**pipeline, "inputs": inputs, "codec": codec},
            )
        )

    def resumed(self, started_wall: float, kept: int, to_run: int) -> None:
        """The records that say the run goes on after a resume."""
        self._other((self.run_id, None, "resume"))
        self.event("resumed", {"time": started_wall, "kept": kept, "to_run": to_run})

    def memory(self, samples: list[tuple[float, int]]) -> None:
        """The run's memory samples (run clock, RSS bytes)."""
        if samples:
            offset = self.wall_offset
            self.event("memory", {"samples": [[t + offset, rss] for t, rss in samples]})

    def end(self, status: str, by: str | None = None, detail: str = "") -> None:
        """How the run (this stretch of it) ended, and what stopped it, if
        something did."""
        now = time.time()
        payload: dict[str, Any] = {"time": now, "status": status}
        if by is not None:
            payload["by"] = by
            payload["detail"] = detail
        self.event("ended", payload)
        self._other((self.run_id, None, "end", status, now))

    # -- stages --------------------------------------------------------------------

    def queued(self, node: Node, now: float) -> None:
        """A stage's actor started and waits for room: its first attempt has not run."""
        self.event("stage_queued", (node.name, now + self.wall_offset))

    def started(self, node: Node, now: float) -> None:
        """A stage's first attempt started (it had its room)."""
        # `event`, inlined: once per stage.
        self.out.append(
            (
                self.run_id,
                self._seq,
                "stage_started",
                (node.name, now + self.wall_offset),
                None,
            )
        )
        self._seq += 1
        self._weight += RECORD_BYTES

    def attempt(self, node: Node, attempt: int, now: float) -> None:
        """A retry started (so that a resume counts on from the attempts that ran)."""
        self.event(
            "attempt_started",
            {"stage": node.name, "attempt": attempt, "time": now + self.wall_offset},
        )

    def attempt_failed(
        self, node: Node, attempt: int, error: Exception, now: float
    ) -> None:
        """An attempt failed and will be retried: its end and its error."""
        try:
            text = f"{type(error).__name__}: {error}"
        except Exception:  # an exception whose str() raises
            text = f"{type(error).__name__}: (its message could not be read)"
        self.event(
            "attempt_failed",
            {
                "stage": node.name,
                "attempt": attempt,
                "time": now + self.wall_offset,
                "error": text,
            },
        )

    def ended(
        self,
        node: Node,
        state: StageState,
        now: float,
        encoded: Encoded | None,
    ) -> None:
        if (
            type(encoded) is Stored
            or (state is _FAILED and node.error is not None)
            or (encoded is None and state is _SUCCEEDED)
        ):
            self._ended_rarely(node, state, now, encoded)
            return
        # `event`, inlined: once per stage.
        self.out.append(
            (
                self.run_id,
                self._seq,
                "stage_ended",
                (node.name, state.value, now + self.wall_offset),
                encoded,
            )
        )
        self._seq += 1
        self._weight += RECORD_BYTES if encoded is None else RECORD_BYTES + len(encoded)

    def _ended_rarely(
        self, node: Node, state: StageState, now: float, encoded: Encoded | None
    ) -> None:
        # A failure (its error and traceback), an output its stage's own codec
        # wrote (the codec named), or a success kept out of the journal.
        payload: dict[str, Any] = {
            "stage": node.name,
            "state": state.value,
            "time": now + self.wall_offset,
        }
        if type(encoded) is Stored:
            payload["codec"] = encoded.codec
            encoded = encoded.data
        elif encoded is None and state is _SUCCEEDED:  # persist=False
            payload["persisted"] = False
        if state is _FAILED and node.error is not None:
            error = node.error
            payload["error"] = f"{type(error).__name__}: {message_of(error)}"
            payload["traceback"] = _traceback(error)
        self.event("stage_ended", payload, encoded)

    # -- changes -------------------------------------------------------------------

    def change(
        self, fields: Fields, request: Request, mapped: list[Expand] | None
    ) -> None:
        """A change request and what became of it, to be replayed as it was.

        The items of the expansions that added stages (``mapped``) go first,
        one event each, their text in the output column: never one JSON
        document holding every item.
        """
        if mapped:
            for expand in mapped:
                if expand.item_specs and expand.encoded:
                    for text, spec in zip(
                        expand.encoded, expand.item_specs, strict=True
                    ):
                        self.event("item", {"params": spec.params}, text)
                    continue
                for text in expand.encoded or ():
                    self.event("item", "{}", text)
        # The text is made by the writer's worker (`texted`), off the event loop.
        if type(request) is AddStage:
            what: str | AskedAddStage = (
                spec_ref_or_options(request.spec, request.ref),
                request.after,
                request.before,
            )
        else:
            what = dump_json(asked(request, {id(expand) for expand in mapped or ()}))
        self.event("change", (fields, what))

    # -- signals -------------------------------------------------------------------

    def signal(self, record: AuditRecord, text: str | None) -> None:
        """A signal sent (its audit record; its payload whole, in the output
        column), or refused (no payload)."""
        payload = attrs.asdict(record, recurse=False)
        payload["edges"] = []
        for key in ("added", "removed", "cancelled", "parts"):
            payload[key] = []
        self.event("signal", payload, text)

    def signal_moved(self, kind: str, signal: int, stage: str) -> None:
        """Signal ``signal`` taken by, or given back by, a stage (``kind``)."""
        self.event(kind, {"signal": signal, "stage": stage})

    # -- shipping ------------------------------------------------------------------

    def ship_nowait(self, writer: JournalWriter) -> bool:
        """Hand the queued records to the writer if it has room for them."""
        if self.out:
            if not writer.submit_nowait(self.out, self._weight):
                return False
            self.out = []
            self._weight = 0
        while self.flushes:
            if not writer.mark_nowait(self.flushes[0]):
                return False
            del self.flushes[0]
        return True

    async def ship(self, writer: JournalWriter) -> None:
        """Hand the queued records to the writer; wait only if it is full."""
        if self.ship_nowait(writer):
            return
        out, weight = self.out, self._weight
        flushes = self.flushes
        self.out, self._weight, self.flushes = [], 0, []
        # Shielded: records dropped by a cancel would leave a gap in the
        # run's events. The writer drains its queue in bounded time.
        with trio.CancelScope(shield=True):
            if out:
                await writer.submit(out, weight)
            for done in flushes:  # after the records queued before them
                await writer.mark(done)
