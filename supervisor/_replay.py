"""Replaying a journal: a run's graph rebuilt from what the journal recorded.

Used to resume a run (`Runtime.resume`) and to read a run back after it
ended or crashed (`Journal.result`, the ``dagvisor`` command).

How a run is rebuilt, in journal order (``seq``, which must have no gap):

* The run record gives the pipeline the run started with (each stage by its
  registered function name and options, never code) and its inputs.
* An accepted change is applied by what it *did*, as its audit record says:
  the stages it removed, then the stages it added, then the edges it added.
  The change is not asked again, so the outcome is the recorded one even
  where a check would now see other states. An added stage takes its spec
  from the recorded request; a mapped stage takes its name, key and item
  from the recorded expansion, never from a list recomputed later.
* ``stage_started`` and ``stage_ended`` give each stage its last state, its
  wall-clock times and, for a success, its encoded output; ``stage_started``
  and ``attempt_started`` (a retry) count the attempts that ran.

A journal that contradicts itself (a gap in ``seq``, an event naming a stage
the graph does not have, an edge closing a cycle, a malformed payload) is
refused with `JournalError`: nothing is guessed.
"""

from __future__ import annotations

import gc
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias, final

import attrs

from dagvisor.actors import (
    NO_ITEM,
    DagvisorError,
    NotRestorableError,
    RecordedError,
    StageSpec,
    StageState,
    fingerprint,
)

from ._audit import AuditRecord
from ._graph import LiveGraph, Node
from ._journal import JournalError
from ._result import RunResult, RunStats, StageLatency

if TYPE_CHECKING:
    from dagvisor.actors import Codec, StageRegistry

    from ._journal import JournaledRun

__all__ = ["Replayed", "Undecoded", "replay", "result_from_journal"]

SUCCEEDED = StageState.SUCCEEDED

_Made: TypeAlias = tuple[StageSpec, Any, str | None, object]
"""A stage a change added: its spec, item, key and the item's fingerprint."""
_RECORD_FIELDS: Final = tuple(attrs.fields_dict(AuditRecord))


@final
@attrs.frozen
class Undecoded:
    """An output read back without the classes it needs: its encoded text."""

    text: str


async def _unavailable(ctx: Any) -> None:  # pragma: no cover - never run
    """Stands for a stage function this process has not registered (read-only use)."""
    msg = "this stage's function is not registered in this process"
    raise NotRestorableError(msg)


@final
@attrs.define
class Replayed:
    """A run rebuilt from its journal.

    Attributes:
        graph: the live graph with each stage's last recorded state; stage
            times are wall-clock seconds.
        audit: every audit record, in order.
        inputs: the run's inputs, decoded.
        starts: how many attempts of each stage started (its starts and retries).
        kept_cancelled: stages cancelled on purpose (``cancel_stage``).
        next_seq: the journal sequence number the run continues at.
        version: the graph version after the last change.
        added: stages added while the run ran.
        memory: the RSS samples ``(wall-clock time, bytes)`` of sampled runs.
    """

    run: JournaledRun
    graph: LiveGraph
    audit: list[AuditRecord]
    inputs: dict[str, Any]
    starts: dict[str, int]
    kept_cancelled: set[str]
    next_seq: int
    version: int
    added: int
    memory: list[tuple[float, int]]


class _Replayer:
    def __init__(
        self,
        run: JournaledRun,
        registry: StageRegistry | None,
        codec: Codec,
        *,
        strict: bool,
    ) -> None:
        self.run = run
        self.registry = registry
        self.codec = codec
        self.strict = strict
        self.missing: dict[str, str] = {}  # function name -> a stage using it
        self.graph = LiveGraph()
        self.audit: list[AuditRecord] = []
        self.starts: dict[str, int] = {}
        self.kept_cancelled: set[str] = set()
        self.encoded: dict[str, str] = {}
        self.errors: dict[str, tuple[str, str | None]] = {}
        self.added = 0
        self.foreign_codec = False
        self.memory: list[tuple[float, int]] = []
        self.where = f"run {run.run_id!r} of the journal"

    def fail(self, what: str) -> NoReturn:
        msg = (
            f"{self.where} cannot be replayed: {what}; the file was damaged or "
            "edited by hand (dagvisor never writes this)"
        )
        raise JournalError(msg)

    # -- specs ------------------------------------------------------------------

    def function(self, key: str | None, stage_name: str) -> Any:
        if key is None:
            if self.strict:
                self.missing.setdefault(f"<unnamed function of {stage_name!r}>", "")
            return _unavailable
        fn = None if self.registry is None else self.registry.lookup(key)
        if fn is None:
            if self.strict:
                self.missing.setdefault(key, stage_name)
            return _unavailable
        return fn

    def spec(self, ref: dict[str, Any]) -> StageSpec:
        name = ref["name"]
        when_key = ref["when"]
        return StageSpec(
            fn=self.function(ref["fn"], name),
            name=name,
            retries=int(ref["retries"]),
            backoff=float(ref["backoff"]),
            timeout=None if ref["timeout"] is None else float(ref["timeout"]),
            when=None if when_key is None else self.function(when_key, name),
            trigger=ref["trigger"],
            executor=ref["executor"],
        )

    def node(self, name: str, seq: int) -> Node:
        node = self.graph.nodes.get(name)
        if node is None:
            self.fail(f"event {seq} names stage {name!r}, which is not in the graph")
        return node

    # -- replay -----------------------------------------------------------------

    def pipeline(self) -> dict[str, Any]:
        record = self.run.pipeline
        written_with = record.get("codec", self.codec.name)
        if written_with != self.codec.name:
            if self.strict:
                msg = (
                    f"run {self.run.run_id!r} was journaled with the {written_with!r} "
                    f"codec, not {self.codec.name!r}; resume it with a runtime opened "
                    f"with that codec (runtime(codec=...))"
                )
                raise NotRestorableError(msg)
            self.foreign_codec = True
        try:
            refs = record["specs"]
            templates: dict[int, StageSpec] = {}
            for name, position, after in record["stages"]:
                if name in self.graph.nodes:
                    self.fail(f"the pipeline names stage {name!r} twice")
                template = templates.get(position)
                if template is None:  # named after the first stage that uses it
                    spec = templates[position] = self.spec(
                        {**refs[position], "name": name}
                    )
                else:
                    spec = template.named(name)
                deps = [self.node(dep, -1) for dep in after]
                self.graph.add_node(spec, deps)
            inputs = self.decode(record["inputs"]) if record["inputs"] else {}
            if isinstance(inputs, Undecoded):
                inputs = {}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, DagvisorError):
                raise
            self.fail(f"its pipeline record is malformed ({exc!r})")
        if not isinstance(inputs, dict):
            self.fail("its inputs are not a mapping")
        return inputs

    def events(self) -> int:
        expected = 0
        for seq, kind, payload in self.run.events:
            if seq != expected:
                self.fail(f"event {expected} is missing (the next one is {seq})")
            expected += 1
            try:
                self.event(seq, kind, payload)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                if isinstance(exc, DagvisorError):
                    raise
                self.fail(f"event {seq} ({kind}) is malformed ({exc!r})")
        return expected

    def event(self, seq: int, kind: str, payload: dict[str, Any]) -> None:
        match kind:
            case "stage_started":
                node = self.node(payload["stage"], seq)
                node.state = StageState.RUNNING
                node.started = float(payload["time"])
                self.starts[node.name] = self.starts.get(node.name, 0) + 1
            case "attempt_started":  # a retry: one more attempt that ran
                node = self.node(payload["stage"], seq)
                if type(payload["attempt"]) is not int:
                    self.fail(f"event {seq} has an attempt that is not a number")
                self.starts[node.name] = self.starts.get(node.name, 0) + 1
            case "stage_ended":
                node = self.node(payload["stage"], seq)
                node.state = StageState(payload["state"])
                node.finished = float(payload["time"])
                if node.state is SUCCEEDED:
                    self.encoded[node.name] = str(payload["output"])
                if "error" in payload:
                    self.errors[node.name] = (
                        str(payload["error"]),
                        payload.get("traceback"),
                    )
            case "change":
                self.change(seq, payload)
            case "resumed":
                pass  # a marker for readers; the replay needs nothing from it
            case "memory":
                self.memory.extend(
                    (float(t), int(rss)) for t, rss in payload["samples"]
                )
            case _:
                self.fail(f"event {seq} is of an unknown kind {kind!r}")

    def change(self, seq: int, payload: dict[str, Any]) -> None:
        fields = {name: payload[name] for name in _RECORD_FIELDS if name != "parts"}
        for name in ("added", "removed", "cancelled"):
            fields[name] = tuple(str(stage) for stage in fields[name])
        fields["edges"] = tuple((str(u), str(d)) for u, d in fields["edges"])
        fields["parts"] = tuple(
            (str(kind), tuple(str(stage) for stage in names))
            for kind, names in payload.get("parts", ())
        )
        record = AuditRecord(**fields)
        if record.seq != len(self.audit) or record.run_id != self.run.run_id:
            self.fail(
                f"event {seq} holds audit record {record.seq} of run "
                f"{record.run_id!r}; expected record {len(self.audit)}"
            )
        self.audit.append(record)
        if not record.accepted:
            return
        request = payload["request"]
        graph = self.graph
        for name in record.removed:
            graph.remove_node(self.node(name, seq))
        if record.added:
            made = self.added_specs(record, request)
            for name in record.added:
                if name in graph.nodes:
                    self.fail(f"event {seq} adds stage {name!r} twice")
                if name not in made:
                    self.fail(f"event {seq} adds {name!r} but its request does not")
                spec, item, key, item_print = made[name]
                graph.add_node(
                    spec,
                    (),
                    name=name,
                    created_by=record.seq,
                    item=item,
                    key=key,
                    item_print=item_print,
                )
            self.added += len(record.added)
        for upstream_name, downstream_name in record.edges:
            upstream = self.node(upstream_name, seq)
            downstream = self.node(downstream_name, seq)
            if graph.cycle_path(upstream, downstream) is not None:
                self.fail(f"event {seq} closes a cycle through {upstream_name!r}")
            graph.add_edge(upstream, downstream)
        if record.kind == "cancel_stage":
            self.kept_cancelled.update(record.cancelled)

    def added_specs(
        self, record: AuditRecord, request: dict[str, Any]
    ) -> dict[str, _Made]:
        match record.kind:
            case "add_stage":
                spec = self.spec(request["spec"])
                return {spec.name: (spec, NO_ITEM, None, None)}
            case "expand":
                return self.mapped(record, request)
            case "replace_pending":
                specs = [self.spec(entry["spec"]) for entry in request["stages"]]
                return {spec.name: (spec, NO_ITEM, None, None) for spec in specs}
            case "change_set":
                made: dict[str, _Made] = {}
                for part in request["parts"]:
                    if part["kind"] == "add_stage":
                        spec = self.spec(part["spec"])
                        made[spec.name] = (spec, NO_ITEM, None, None)
                    elif part["kind"] == "expand":
                        made.update(self.mapped(record, part))
                return made
            case _:
                self.fail(f"a {record.kind} record cannot add stages")

    def mapped(self, record: AuditRecord, request: dict[str, Any]) -> dict[str, _Made]:
        spec = self.spec(request["spec"])
        keys = [str(key) for key in request["keys"]]
        items = request["items"]
        if items is None or len(items) != len(keys):
            self.fail(f"expand record {record.seq} lacks its items")
        return {
            f"{spec.name}[{key}]": (
                spec,
                self.decode(text),
                key,
                fingerprint(None, text),
            )
            for key, text in zip(keys, items, strict=True)
        }

    def decode(self, text: str) -> Any:
        if self.foreign_codec:
            return Undecoded(text)
        if self.strict:
            return self.codec.decode(text)
        try:
            return self.codec.decode(text)
        except NotRestorableError:
            return Undecoded(text)

    def finish(self) -> None:
        """Decode the outputs of the stages that ended succeeded, and errors."""
        nodes = self.graph.nodes
        for name, text in self.encoded.items():
            node = nodes.get(name)
            if node is not None and node.state is SUCCEEDED:
                node.output = self.decode(text)
        for name, (text, trace) in self.errors.items():
            node = nodes.get(name)
            if node is not None and node.state is StageState.FAILED:
                node.error = RecordedError(text, trace)


def replay(
    run: JournaledRun,
    *,
    registry: StageRegistry | None,
    codec: Codec,
    strict: bool,
) -> Replayed:
    """Rebuild ``run``'s graph from its journal records.

    Args:
        run: what the journal holds about the run (`Journal.load`).
        registry: where stage functions are found by their recorded names.
        codec: how outputs and mapped items were encoded.
        strict: for a resume: every function must be registered and every
            output decodable. Otherwise (reading a run back) a missing
            function is stood in for and an output that cannot be decoded
            is kept as `Undecoded` text.

    Raises:
        JournalError: the journal contradicts itself or is malformed.
        NotRestorableError: (strict) functions this process has not
            registered, or outputs it cannot decode.
    """
    replayer = _Replayer(run, registry, codec, strict=strict)
    # Like LiveGraph.from_pipeline: a burst of allocations that frees nothing,
    # which the cyclic collector would walk again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        inputs = replayer.pipeline()
        next_seq = replayer.events()
    finally:
        if collecting:
            gc.enable()
    if replayer.missing:
        shown = ", ".join(
            f"{key!r} (stage {stage!r})" if stage else key
            for key, stage in list(replayer.missing.items())[:5]
        )
        more = (
            f" and {len(replayer.missing) - 5} more"
            if len(replayer.missing) > 5
            else ""
        )
        msg = (
            f"run {run.run_id!r} cannot be resumed: its stage functions {shown}{more} "
            "are not registered in this process; import the modules that define them "
            "(or StageRegistry.register them) before resuming"
        )
        raise NotRestorableError(msg)
    replayer.finish()
    audit = replayer.audit
    return Replayed(
        run=run,
        graph=replayer.graph,
        audit=audit,
        inputs=inputs,
        starts=replayer.starts,
        kept_cancelled=replayer.kept_cancelled,
        next_seq=next_seq,
        version=audit[-1].version_after if audit else 0,
        added=replayer.added,
        memory=replayer.memory,
    )


def result_from_journal(
    run: JournaledRun, *, registry: StageRegistry | None, codec: Codec
) -> RunResult:
    """The result of a run as its journal records it (read-only; nothing runs).

    Stage times are wall-clock (seconds since the epoch). A run whose record
    does not say it ended has status ``"interrupted"``; its stages that were
    running are ``running``.
    """
    replayed = replay(run, registry=registry, codec=codec, strict=False)
    nodes = replayed.graph.nodes
    counts = dict.fromkeys(StageState, 0)
    for node in nodes.values():
        counts[node.state] += 1
    status = (
        run.status
        if run.status in ("succeeded", "failed", "cancelled")
        else "interrupted"
    )
    errors = {
        name: node.error
        for name, node in nodes.items()
        if node.state is StageState.FAILED and node.error is not None
    }
    ended = run.ended
    if ended is None:
        ended = max((node.finished for node in nodes.values()), default=run.created)
    stats = RunStats(
        stages=len(nodes),
        counts=MappingProxyType(counts),
        started_at=run.created,
        duration=max(0.0, ended - run.created),
        changes=len(replayed.audit),
        added=replayed.added,
        latency=StageLatency(nodes),
        peak_rss=max((rss for _, rss in replayed.memory), default=None),
        memory=tuple(replayed.memory),
    )
    return RunResult._from_nodes(
        nodes,
        tuple(replayed.audit),
        run_id=run.run_id,
        name=run.name,
        status=status,
        errors=MappingProxyType(errors),
        stats=stats,
    )
