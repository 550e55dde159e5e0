"""The journal records of one run, built by its supervisor and shipped to the writer.

Records are queued in memory while a message is handled (building one is
pure data: no I/O, no user code) and handed to the `JournalWriter` between
messages (`ship`). What each record holds is what a resume replays (see
``_replay``): the run and its pipeline; each stage's wait for room (a
stage that may queue), its start, each retry's start and each end (with
the encoded output, or the error and the end of its traceback); each
change with its audit record and what was asked, its mapped items first,
one event each; memory samples; a resume; the end.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any, Final, assert_never, final

import attrs
import trio

from dagvisor.actors import StageSpec, StageState
from dagvisor.actors._messages import (
    AddEdge,
    AddStage,
    CancelRun,
    CancelStage,
    ChangePart,
    ChangeSet,
    Expand,
    RemoveStage,
    ReplacePending,
    Request,
)
from dagvisor.actors._stored import Stored

from ._audit import AuditRecord
from ._stage_refs import spec_ref
from ._writer import Flush

if TYPE_CHECKING:
    from dagvisor.actors import Pipeline, StageRegistry
    from dagvisor.actors._stored import Encoded

    from ._graph import Node
    from ._writer import JournalWriter

__all__ = ["RunRecords", "asked", "pipeline_record"]

# The end of a failed stage's traceback that the journal keeps (characters).
_TRACEBACK_KEPT: Final = 16_000
_RECORD_FIELDS: Final = tuple(attrs.fields_dict(AuditRecord))
_FAILED = StageState.FAILED
_SUCCEEDED = StageState.SUCCEEDED


@final
class RunRecords:
    """The records of one run waiting to be shipped, with its next event number."""

    __slots__ = ("_out", "_seq", "run_id", "wall_offset")

    def __init__(self, run_id: str, wall_offset: float, next_seq: int = 0) -> None:
        self.run_id = run_id
        self.wall_offset = wall_offset
        """Added to the run's clock to make journal times wall-clock."""
        self._out: list[tuple[Any, ...] | Flush] = []
        self._seq = next_seq

    def __bool__(self) -> bool:
        return bool(self._out)

    def flush(self, done: trio.Event) -> None:
        """Set ``done`` once everything queued so far is committed (see `Flush`)."""
        self._out.append(Flush(done))

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue one event (the next ``seq`` of the run)."""
        self._out.append(("event", self.run_id, self._seq, kind, payload))
        self._seq += 1

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
        self._out.append(
            (
                "run",
                self.run_id,
                name,
                started_wall,
                {**pipeline, "inputs": inputs, "codec": codec},
            )
        )

    def resumed(self, started_wall: float, kept: int, to_run: int) -> None:
        """The records that say the run goes on after a resume."""
        self._out.append(("resume", self.run_id))
        self.event("resumed", {"time": started_wall, "kept": kept, "to_run": to_run})

    def memory(self, samples: list[tuple[float, int]]) -> None:
        """The run's memory samples (run clock, RSS bytes)."""
        if samples:
            offset = self.wall_offset
            self.event("memory", {"samples": [[t + offset, rss] for t, rss in samples]})

    def end(self, status: str) -> None:
        """How the run ended."""
        self._out.append(("end", self.run_id, status, time.time()))

    # -- stages --------------------------------------------------------------------

    def queued(self, node: Node, now: float) -> None:
        """A stage's actor started and waits for room: its first attempt has not run."""
        self.event("stage_queued", {"stage": node.name, "time": now + self.wall_offset})

    def started(self, node: Node, now: float) -> None:
        """A stage's first attempt started (it had its room)."""
        self.event(
            "stage_started", {"stage": node.name, "time": now + self.wall_offset}
        )

    def attempt(self, node: Node, attempt: int, now: float) -> None:
        """A retry started (so that a resume counts on from the attempts that ran)."""
        self.event(
            "attempt_started",
            {"stage": node.name, "attempt": attempt, "time": now + self.wall_offset},
        )

    def ended(
        self,
        node: Node,
        state: StageState,
        now: float,
        encoded: Encoded | None,
    ) -> None:
        payload: dict[str, Any] = {
            "stage": node.name,
            "state": state.value,
            "time": now + self.wall_offset,
        }
        if encoded is not None:
            if type(encoded) is Stored:  # the stage's own codec wrote it
                payload["codec"] = encoded.codec
                encoded = encoded.data
            payload["output"] = encoded
        elif state is _SUCCEEDED:  # persist=False: kept out of the journal
            payload["persisted"] = False
        if state is _FAILED and node.error is not None:
            error = node.error
            payload["error"] = f"{type(error).__name__}: {error}"
            payload["traceback"] = "".join(traceback.format_exception(error))[
                -_TRACEBACK_KEPT:
            ]
        self.event("stage_ended", payload)

    # -- changes -------------------------------------------------------------------

    def change(
        self, record: AuditRecord, request: Request, mapped: list[Expand]
    ) -> None:
        """A change request and what became of it, to be replayed as it was.

        The items of the expansions that added stages (``mapped``) go first,
        one event each, their text in the output column: never one JSON
        document holding every item.
        """
        for expand in mapped:
            if expand.item_specs and expand.encoded:
                for text, spec in zip(expand.encoded, expand.item_specs, strict=True):
                    self.event("item", {"output": text, "params": spec.params})
                continue
            for text in expand.encoded or ():
                self.event("item", {"output": text})
        self.event(
            "change",
            {
                **{name: getattr(record, name) for name in _RECORD_FIELDS},
                "request": asked(request, {id(expand) for expand in mapped}),
            },
        )

    # -- shipping ------------------------------------------------------------------

    async def ship(self, writer: JournalWriter) -> None:
        """Hand the queued records to the writer; wait only if it is full."""
        out, self._out = self._out, []
        for index, record in enumerate(out):
            if not writer.submit_nowait(record):
                # Shielded: records dropped by a cancel would leave a gap in
                # the run's events. The writer drains its queue in bounded time.
                with trio.CancelScope(shield=True):
                    for rest in out[index:]:
                        await writer.submit(rest)
                return


def asked(request: Request | ChangePart, mapped: set[int]) -> dict[str, Any]:
    """What a request asked, as the journal keeps it: enough to replay it.

    Stage specs travel as the references the requester computed (never
    recomputed here: that would run user code on the supervisor). The items
    of the expansions that added stages (``mapped``, by id) are the "item"
    events written just before the record; their count is recorded here.
    """
    match request:
        case AddStage():
            return {
                "spec": _ref(request.spec, request.ref),
                "after": list(request.after),
                "before": list(request.before),
            }
        case AddEdge():
            return {"upstream": request.upstream, "downstream": request.downstream}
        case Expand():
            applied = id(request) in mapped and request.encoded is not None
            return {
                "spec": _ref(request.spec, request.ref),
                "keys": list(request.keys),
                "after": list(request.after),
                "items": {"events": len(request.encoded or ()) if applied else 0},
            }
        case RemoveStage() | CancelStage():
            return {"name": request.name}
        case ReplacePending():
            entries = list(request.pipeline.entries())
            refs = request.refs or [None] * len(entries)
            return {
                "pipeline": request.pipeline.name,
                "stages": [
                    {"spec": _ref(spec, ref), "after": list(deps)}
                    for (spec, deps), ref in zip(entries, refs, strict=True)
                ],
            }
        case CancelRun():
            return {}
        case ChangeSet():
            return {
                "parts": [
                    {"kind": part.kind, **asked(part, mapped)} for part in request.parts
                ]
            }
        case _:
            assert_never(request)


def _ref(spec: StageSpec, ref: dict[str, Any] | None) -> dict[str, Any]:
    # Without a reference (a run without a journal, or a request refused
    # before it was prepared) the options alone are recorded.
    return ref if ref is not None else spec_ref(spec, None)


def pipeline_record(
    pipeline: Pipeline, registry: StageRegistry | None
) -> dict[str, Any]:
    """The pipeline a run starts with, as its first record keeps it.

    Each distinct spec once, then the stages as ``[name, spec index,
    [after...]]``: a million copies of one function cost a million short
    rows, not a million spec records.
    """
    index: dict[tuple[Any, ...], int] = {}
    specs: list[dict[str, Any]] = []
    stages: list[list[Any]] = []
    for spec, deps in pipeline.entries():
        template = (
            spec.fn,
            spec.when,
            spec.retries,
            spec.backoff,
            spec.timeout,
            spec.trigger,
            spec.executor,
            None if spec.codec is None else spec.codec.name,
            spec.persist,
            spec.params_key,
            spec.limit,
        )
        position = index.get(template)
        if position is None:
            position = index[template] = len(specs)
            ref = spec_ref(spec, registry)
            del ref["name"]
            specs.append(ref)
        stages.append([spec.name, position, list(deps)])
    return {"specs": specs, "stages": stages}
