"""The replayer: one run's journal records applied, in order, to a rebuilt graph.

How each record is applied, and what makes a journal contradict itself, is
said in `_replay`, whose `replay` drives this class; `_stage_read` uses it
too, for the few records of one stage it reads by index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn

from dagvisor.actors import (
    DagvisorError,
    JournalError,
    NotRestorableError,
    RecordedError,
    StageSpec,
    StageState,
)
from dagvisor.actors._codec import Undecoded

from ._graph import RELEASED, LiveGraph, Node
from ._history import HistoryBuilder, StageEvent, stage_event
from ._records import (
    BadRecord,
    audit_record,
    memory_samples,
    moment,
    reason,
    shown,
    signal_payload,
    signal_record,
    text,
    texts,
)
from ._replay_signals import SignalLedger
from ._replay_specs import SpecResolver
from ._replay_values import value_decoder

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagvisor.actors import Codec, StageRegistry

    from ._audit import AuditRecord
    from ._journal_rows import JournaledRun

__all__ = ["MALFORMED", "Replayer"]

SUCCEEDED = StageState.SUCCEEDED
MALFORMED: Final = (
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    OverflowError,
)
"""What reading a record of the wrong shape can raise (`BadRecord` among them)."""


class Replayer:
    """Rebuilds one run from its records, event by event (see `_replay`)."""

    def __init__(
        self,
        run: JournaledRun,
        registry: StageRegistry | None,
        codec: Codec | None,
        *,
        attempts: bool | str = True,
    ) -> None:
        self.run = run
        self.registry = registry
        self.codec = codec
        self.strict = codec is not None  # resuming, not reading
        self.specs = SpecResolver(registry, codec, self.fail)
        self.graph = LiveGraph()
        self.audit: list[AuditRecord] = []
        self.starts: dict[str, int] = {}
        self.kept_cancelled: set[str] = set()
        self.encoded: dict[str, tuple[str | bytes, str | None]] = {}
        """Each success's stored output, and the codec that wrote it (None: the run's)."""
        self.unpersisted: set[str] = set()
        """Successes whose output was kept out of the journal (``persist=False``)."""
        self.items: list[tuple[str, str]] = []  # (mapped stage, encoded item)
        self.errors: dict[str, tuple[str, str | None]] = {}
        self.added = 0
        self.written_with = "json"
        self.memory: list[tuple[float, int]] = []
        # "item" events awaiting their record: (encoded item, its parameters).
        self.history = HistoryBuilder(run.created)
        # Each stage's events, for its attempts: only when reading a run back.
        self.stage_log: dict[str, list[StageEvent]] | None = (
            {} if attempts is not False and not self.strict else None
        )
        self.only = attempts if type(attempts) is str else None  # the one stage kept
        self.signals = SignalLedger()
        self.where = f"run {run.run_id!r} of the journal"

    def fail(self, what: str) -> NoReturn:
        msg = (
            f"{self.where} cannot be replayed: {what}; the file was damaged or "
            "edited by hand (dagvisor never writes this)"
        )
        raise JournalError(msg)

    def node(self, name: Any, seq: int) -> Node:
        node = self.graph.nodes.get(name) if type(name) is str else None
        if node is None:
            self.fail(
                f"event {seq} names stage {shown(name)}, which is not in the graph"
            )
        return node

    # -- replay -----------------------------------------------------------------

    def pipeline(self) -> str:
        """Build the pipeline the run started with; its encoded inputs."""
        record = self.run.pipeline
        try:
            written_with = record.get("codec", "json")
            if written_with is not None:
                self.written_with = text(written_with, "codec")
            if self.codec is not None and written_with != self.codec.name:
                msg = (
                    f"run {self.run.run_id!r} was journaled with the "
                    f"{shown(written_with)} codec, not {self.codec.name!r}; resume "
                    "it with a runtime opened with that codec (runtime(codec=...))"
                )
                raise NotRestorableError(msg)
            refs = record["specs"]
            templates: dict[int, StageSpec] = {}
            for entry in record["stages"]:
                name, position, after = entry
                name = text(name, "stage name")
                if name in self.graph.nodes:
                    self.fail(f"the pipeline names stage {shown(name)} twice")
                if type(position) is not int or not 0 <= position < len(refs):
                    msg_0 = f"stage {shown(name)} names no stage record"
                    raise BadRecord(msg_0)
                template = templates.get(position)
                if template is None:  # named after the first stage that uses it
                    spec = templates[position] = self.specs.spec(
                        {**refs[position], "name": name}
                    )
                else:
                    spec = template.named(name)
                deps = [self.node(dep, -1) for dep in texts(after, "dependencies")]
                self.graph.add_node(spec, deps)
            inputs = record["inputs"]
            return "" if inputs is None else text(inputs, "inputs")
        except MALFORMED as exc:
            if isinstance(exc, DagvisorError):
                raise
            self.fail(f"its pipeline record is malformed ({reason(exc)})")

    def events(self) -> int:
        expected = 0
        for seq, kind, payload in self.run.events:
            if seq != expected:
                self.fail(f"event {expected} is missing (the next one is {seq})")
            expected += 1
            try:
                self.event(seq, kind, payload)
            except MALFORMED as exc:
                if isinstance(exc, DagvisorError):
                    raise
                self.fail(f"event {seq} ({shown(kind)}) is malformed ({reason(exc)})")
        return expected

    def event(self, seq: int, kind: str, payload: dict[str, Any]) -> None:
        match kind:
            case "stage_queued":  # waits for room: its first attempt has not run
                node = self.node(payload["stage"], seq)
                node.state = StageState.QUEUED
                node.queued = moment(payload["time"], "time")
            case "stage_started":
                node = self.node(payload["stage"], seq)
                node.state = StageState.RUNNING
                node.started = moment(payload["time"], "time")
                self.starts[node.name] = self.starts.get(node.name, 0) + 1
                self.note(node.name, seq, kind, payload)
            case "attempt_started":  # a retry: one more attempt that ran
                node = self.node(payload["stage"], seq)
                if type(payload["attempt"]) is not int:
                    self.fail(f"event {seq} has an attempt that is not a number")
                self.starts[node.name] = self.starts.get(node.name, 0) + 1
                self.note(node.name, seq, kind, payload)
            case "attempt_failed":  # an attempt that failed, then was retried
                node = self.node(payload["stage"], seq)
                self.note(node.name, seq, kind, payload)
            case "stage_ended":
                node = self.node(payload["stage"], seq)
                node.state = StageState(payload["state"])
                node.finished = moment(payload["time"], "time")
                if node.state is SUCCEEDED:
                    self.stored_output(node.name, payload)
                if "error" in payload:
                    trace = payload.get("traceback")
                    self.errors[node.name] = (
                        text(payload["error"], "error"),
                        None if trace is None else text(trace, "traceback"),
                    )
                self.note(node.name, seq, kind, payload)
            case "item":  # a mapped item of the next change's record
                self.specs.pending_items.append(
                    (text(payload["output"], "item"), payload.get("params"))
                )
            case "change":
                self.change(seq, payload)
                if self.specs.pending_items:
                    self.fail(f"items before event {seq} belong to no expansion")
            case "signal":
                self.signal(seq, payload)
            case "signal_taken" | "signal_returned":
                sent = payload["signal"]
                if not self.signals.was_sent(sent):
                    self.fail(f"event {seq} names a signal that was not sent")
                node = self.node(payload["stage"], seq)
                self.signals.held(sent, node.name if kind == "signal_taken" else None)
            case "resumed" | "ended":  # the run's history
                self.history.event(seq, kind, payload)
            case "memory":
                self.memory.extend(memory_samples(payload["samples"]))
            case _:
                self.fail(f"event {seq} is of an unknown kind {shown(kind)}")

    def note(self, name: str, seq: int, kind: str, payload: dict[str, Any]) -> None:
        """A stage event, for the run's history and the stage's attempts."""
        event = stage_event(seq, kind, payload)
        self.history.seen(event[2])
        if self.stage_log is not None and (self.only is None or name == self.only):
            log = self.stage_log.get(name)
            if log is None:
                self.stage_log[name] = [event]
            else:
                log.append(event)

    def signal(self, seq: int, payload: dict[str, Any]) -> None:
        record = signal_record(payload)
        self.record(seq, record)
        if record.accepted:
            self.signals.sent(record, signal_payload(payload.get("output")))

    def record(self, seq: int, record: AuditRecord) -> None:
        """Append the audit record event ``seq`` holds, the next one of this run."""
        self.history.seen(record.wall_time)
        if record.seq != len(self.audit) or record.run_id != self.run.run_id:
            self.fail(
                f"event {seq} holds audit record {record.seq} of run "
                f"{shown(record.run_id)}; expected record {len(self.audit)}"
            )
        self.audit.append(record)

    def stored_output(self, name: str, payload: dict[str, Any]) -> None:
        """Note a success's output: text or bytes, which codec wrote it, or none."""
        persisted = payload.get("persisted", True)
        if persisted is False:
            self.unpersisted.add(name)
            self.encoded.pop(name, None)
            return
        if persisted is not True:
            msg = "persisted flag"
            raise BadRecord(msg)
        stored = payload["output"]
        if type(stored) is not str and type(stored) is not bytes:
            msg = f"its output is a {type(stored).__name__}"
            raise BadRecord(msg)
        codec = payload.get("codec")
        self.encoded[name] = (stored, None if codec is None else text(codec, "codec"))
        self.unpersisted.discard(name)

    def change(self, seq: int, payload: dict[str, Any]) -> None:
        record = audit_record(payload)
        if record.kind == "signal":
            self.fail(f"event {seq} is a change record of a signal")
        self.record(seq, record)
        if not record.accepted:
            return
        request = payload["request"]
        if type(request) is not dict:
            msg = "its request is not an object"
            raise BadRecord(msg)
        graph = self.graph
        for name in record.removed:
            graph.remove_node(self.node(name, seq))
        if record.added:
            made = self.specs.added(record, request)
            for name in record.added:
                if name in graph.nodes:
                    self.fail(f"event {seq} adds stage {shown(name)} twice")
                if name not in made:
                    self.fail(
                        f"event {seq} adds {shown(name)} but its request does not"
                    )
                spec, item, key, item_print = made[name]
                log = None if self.stage_log is None else self.stage_log.get(name)
                if log is not None:  # added again: its attempts start afresh
                    log.append((seq, "born", 0.0, None, None))
                graph.add_node(
                    spec,
                    (),
                    name=name,
                    created_by=record.seq,
                    key=key,
                    item_print=item_print,
                )
                if item is not None:
                    self.items.append((name, item))
            self.added += len(record.added)
        for upstream_name, downstream_name in record.edges:
            upstream = self.node(upstream_name, seq)
            downstream = self.node(downstream_name, seq)
            if graph.cycle_path(upstream, downstream) is not None:
                self.fail(f"event {seq} closes a cycle through {shown(upstream_name)}")
            graph.add_edge(upstream, downstream)
        if record.kind == "cancel_stage":
            self.kept_cancelled.update(record.cancelled)

    # -- values -------------------------------------------------------------------

    def decoder(self) -> Callable[[str | bytes, str, str | None], Any]:
        """How stored values are decoded: with an allow-list (resume), or as data."""
        return value_decoder(
            self.codec,
            self.specs.functions,
            self.written_with,
            self.fail,
            self.specs.codecs,
        )

    def finish(self, inputs: str) -> dict[str, Any]:
        """Decode the stored values (items, outputs, inputs), and the errors."""
        decode = self.decoder()
        nodes = self.graph.nodes
        for name, item in self.items:
            node = nodes.get(name)
            if node is not None:
                node.item = decode(item, f"item of {name!r}", None)
        for name, (stored, codec) in self.encoded.items():
            node = nodes.get(name)
            if node is not None and node.state is SUCCEEDED:
                node.output = decode(stored, f"output of {name!r}", codec)
        for name in self.unpersisted:
            node = nodes.get(name)
            if node is not None and node.state is SUCCEEDED:
                node.output = RELEASED  # not in the journal: no output to show
        for name, (error, trace) in self.errors.items():
            node = nodes.get(name)
            if node is not None and node.state is StageState.FAILED:
                node.error = RecordedError(error, trace)
        decoded = decode(inputs, "run's inputs", None) if inputs else {}
        if isinstance(decoded, Undecoded):
            return {}
        if type(decoded) is not dict:
            self.fail("its inputs are not a mapping")
        return decoded
