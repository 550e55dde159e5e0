"""What a run produces: its result, statistics and progress events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

import attrs

from dagvisor.actors import StageState

from ._audit import AuditLog
from ._graph import RELEASED
from ._history import Attempt, Interruption, RunHistory, attempts_of
from ._lineage import NO_STAGE_GONE, ConsumedOutput, GoneStages, Lineage, lineage_of
from ._stats import RunStats, StageLatency, StageTiming, queue_time_of

if TYPE_CHECKING:
    from ._audit import AuditRecord
    from ._graph import Node
    from ._history import StageEvent

__all__ = [
    "Attempt",
    "ConsumedOutput",
    "Interruption",
    "Lineage",
    "RunResult",
    "RunStatus",
    "lineage_of",
]

RunStatus: TypeAlias = Literal["succeeded", "failed", "cancelled", "interrupted"]
"""How a run ended; ``"interrupted"`` only for a run read back from a journal
that does not say it ended (it crashed, or it is still going elsewhere)."""


class _NodeView(Mapping[str, Any]):
    """A read-only mapping over the final nodes of a run, computed on access.

    A run's graph never changes once the run has ended, so the views stay
    consistent; they cost nothing per stage until read.
    """

    __slots__ = ("_len", "_nodes")

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self._nodes = nodes
        self._len: int | None = None

    def _has(self, node: Node) -> bool:
        return True

    def _value(self, node: Node) -> Any:
        raise NotImplementedError

    def __getitem__(self, name: str) -> Any:
        node = self._nodes[name]
        if not self._has(node):
            raise KeyError(name)
        return self._value(node)

    def __iter__(self) -> Iterator[str]:
        has = self._has
        return (name for name, node in self._nodes.items() if has(node))

    def __len__(self) -> int:
        if self._len is None:
            has = self._has
            self._len = sum(1 for node in self._nodes.values() if has(node))
        return self._len

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k!r}: {self[k]!r}" for _, k in zip(range(5), self, strict=False)
        )
        more = ", ..." if len(self) > 5 else ""
        return f"{{{shown}{more}}}"


@final
class _Outputs(_NodeView):
    __slots__ = ()

    def _has(self, node: Node) -> bool:
        return node.state is StageState.SUCCEEDED and node.output is not RELEASED

    def _value(self, node: Node) -> Any:
        return node.output


@final
class _Params(_NodeView):
    __slots__ = ()

    def _has(self, node: Node) -> bool:
        return bool(node.spec.params)

    def _value(self, node: Node) -> Any:
        return node.spec.params


@final
class _States(_NodeView):
    __slots__ = ()

    def _value(self, node: Node) -> StageState:
        return node.state


@final
class _Timings(_NodeView):
    __slots__ = ()

    def _value(self, node: Node) -> StageTiming:
        return StageTiming(node.started, node.finished, node.queued)


@final
class _Dependencies(_NodeView):
    __slots__ = ()

    def _value(self, node: Node) -> tuple[str, ...]:
        return tuple(dep.name for dep in node.deps)


@final
class _Origins(_NodeView):
    """The audit record that added each stage (None for the pipeline's own)."""

    __slots__ = ("_audit",)

    def __init__(self, nodes: Mapping[str, Node], audit: Iterable[AuditRecord]) -> None:
        super().__init__(nodes)
        # By sequence number: a bounded trail (retain_outputs="journal") has
        # gaps, but always holds the records of the stages still in memory.
        self._audit = audit if isinstance(audit, AuditLog) else AuditLog.of(audit)

    def _value(self, node: Node) -> AuditRecord | None:
        return None if node.created_by < 0 else self._audit.get(node.created_by)


@final
@attrs.frozen(kw_only=True, eq=False)
class RunResult:
    """The result of one run.

    Attributes:
        run_id: the run's id (the same as `Run.id`).
        name: the pipeline's name.
        status: ``"succeeded"``, ``"failed"`` (a stage failed) or
            ``"cancelled"`` (the run was cancelled).
        outputs: output of every stage that succeeded, by name (read-only).
        states: final state of every stage, by name.
        timings: `StageTiming` of every stage, by name.
        errors: exception of every stage that failed, by name.
        audit: every change request of the run, in order: the `AuditLog`
            that ``run.audit()`` gives, with ``between`` and ``for_stage``.
        dependencies: for every stage, the names of the stages it waited for.
        origins: for every stage, the audit record of the change that added
            it, or None for a stage of the pipeline the run started with.
        stats: summary figures.
        interruptions: each time the run was stopped before it finished (a
            signal, a cancel, a crash found when it was resumed), with when
            it went on; oldest first. Read back from a journal; empty for
            the result a live run returns.
        resumed_at: when the run was resumed, each time (wall-clock; read
            back from a journal).
    """

    run_id: str
    name: str
    status: RunStatus
    outputs: Mapping[str, Any]
    states: Mapping[str, StageState]
    timings: Mapping[str, StageTiming]
    errors: Mapping[str, BaseException]
    audit: AuditLog
    dependencies: Mapping[str, tuple[str, ...]]
    origins: Mapping[str, AuditRecord | None]
    stats: RunStats
    interruptions: tuple[Interruption, ...] = ()
    resumed_at: tuple[float, ...] = ()
    _nodes: Mapping[str, Node] = attrs.field(factory=dict, repr=False, alias="nodes")
    _wall_offset: float = attrs.field(default=0.0, repr=False, alias="wall_offset")
    # Stages that left memory (retain_outputs="journal", streams), and the
    # audit's per-stage index, built when a lineage is first asked for (or
    # the run's own, handed over).
    _gone: GoneStages = attrs.field(default=NO_STAGE_GONE, repr=False, alias="gone")
    _audit_log: list[AuditLog] = attrs.field(
        factory=list, repr=False, alias="audit_log"
    )
    # Read back from a journal: each stage's events (for its attempts) and
    # where the run was resumed in the journal.
    _stage_log: Mapping[str, list[StageEvent]] = attrs.field(
        factory=dict, repr=False, alias="stage_log"
    )
    _resume_seqs: tuple[int, ...] = attrs.field(
        default=(), repr=False, alias="resume_seqs"
    )

    def _attempts(self, stage: str) -> tuple[Attempt, ...]:
        log = self._stage_log.get(stage)
        return () if log is None else attempts_of(log, self._resume_seqs)

    @property
    def params(self) -> Mapping[str, Mapping[str, Any]]:
        """The parameters of every stage that has some, by name (read-only)."""
        return _Params(self._nodes)

    def lineage(self, stage: str) -> Lineage:
        """Where ``stage`` came from, what it read and what became of it (see `Lineage`).

        Answers for a stage removed by a change or dropped from memory too:
        any stage a change of the run names.

        Raises:
            UnknownStageError: the run never had such a stage.
        """
        if not self._audit_log:
            self._audit_log.append(AuditLog.of(self.audit))
        return lineage_of(
            stage,
            nodes=self._nodes,
            audit=self._audit_log[0],
            gone=self._gone,
            wall_offset=self._wall_offset,
            where=f"run {self.run_id!r}",
            attempts=self._attempts,
        )

    @property
    def id(self) -> str:
        """The run's id, as `Run.id` names it (the same as ``run_id``)."""
        return self.run_id

    @property
    def ok(self) -> bool:
        """Whether every stage that ran succeeded and the run was not cancelled."""
        return self.status == "succeeded"

    def __repr__(self) -> str:
        return f"<RunResult {self.name!r} {self.status}: {self.stats.stages} stages, {len(self.audit)} changes>"

    def to_mermaid(self) -> str:
        """The final graph as a Mermaid flowchart: states as colours, stages
        added at run time rounded."""
        return _RENDERERS["mermaid"](self)

    def to_dot(self) -> str:
        """The final graph as Graphviz DOT: states as colours, stages added at
        run time dashed."""
        return _RENDERERS["dot"](self)

    def to_html(self) -> str:
        """A self-contained HTML report: summary, final graph, timeline of stages
        and changes, failures with tracebacks, memory curve (when sampled).

        Example:
            >>> Path("report.html").write_text(result.to_html())  # doctest: +SKIP
        """
        return _RENDERERS["html"](self)

    @classmethod
    def build(
        cls,
        nodes: Mapping[str, Node],
        audit: AuditLog | Iterable[AuditRecord],
        *,
        run_id: str,
        name: str,
        status: RunStatus,
        errors: Mapping[str, BaseException],
        started_at: float,
        duration: float,
        added: int,
        left_memory: Mapping[StageState, int] | None = None,
        memory: Iterable[tuple[float, int]] = (),
        peak_rss: int | None = None,
        wall_offset: float = 0.0,
        gone: GoneStages = NO_STAGE_GONE,
        history: RunHistory | None = None,
        stage_log: Mapping[str, list[StageEvent]] | None = None,
    ) -> RunResult:
        """The result of a run, live or read back from its journal (the one builder).

        Args:
            nodes: the stages still in memory, by name.
            audit: the run's audit trail (a bounded one may have gaps).
            run_id: the run.
            name: the pipeline's name.
            status: how the run ended.
            errors: each failed stage's exception, by name.
            started_at: wall-clock start, seconds since the epoch.
            duration: seconds the run ran (its stopped time excluded).
            added: stages added while the run ran.
            left_memory: stages no longer in memory, by their final state.
            memory: RSS samples, when the run was sampled.
            peak_rss: the highest sample (the highest of ``memory`` if None).
            wall_offset: what makes the nodes' times wall-clock.
            gone: the names of the stages that left memory.
            history: the run's stretches, interruptions and resumes, when
                it was read back or resumed from a journal.
            stage_log: each stage's events, read back from a journal.
        """
        counts = dict(left_memory) if left_memory else dict.fromkeys(StageState, 0)
        for node in nodes.values():
            counts[node.state] += 1
        log = audit if isinstance(audit, AuditLog) else AuditLog.of(audit)
        samples = tuple(memory)
        if peak_rss is None and samples:
            peak_rss = max(rss for _, rss in samples)
        stats = RunStats(
            stages=sum(counts.values()),
            counts=MappingProxyType(counts),
            started_at=started_at,
            duration=duration,
            changes=len(log),
            added=added,
            latency=StageLatency(nodes),
            peak_rss=peak_rss,
            memory=samples,
            stopped=0.0 if history is None else history.stopped,
            queue_latency=StageLatency(nodes, queue_time_of),
        )
        return cls(
            run_id=run_id,
            name=name,
            status=status,
            errors=MappingProxyType(dict(errors)),
            stats=stats,
            nodes=nodes,
            outputs=_Outputs(nodes),
            states=_States(nodes),
            timings=_Timings(nodes),
            dependencies=_Dependencies(nodes),
            origins=_Origins(nodes, log),
            audit=log,
            wall_offset=wall_offset,
            gone=gone,
            audit_log=[log],
            interruptions=() if history is None else history.interruptions,
            resumed_at=() if history is None else history.resumes,
            stage_log=stage_log or {},
            resume_seqs=() if history is None else history.resume_seqs,
        )


# -- rendering ---------------------------------------------------------------------

Rendering: TypeAlias = Literal["html", "mermaid", "dot"]

# How results are drawn: filled by the presentation modules (``_report``,
# ``_export``), which depend on results, never the reverse; the package
# imports them, so a result can always be drawn.
_RENDERERS: dict[Rendering, Callable[[RunResult], str]] = {}


def renders(
    kind: Rendering,
) -> Callable[[Callable[[RunResult], str]], Callable[[RunResult], str]]:
    """Register the function that draws a `RunResult` as ``kind``."""

    def register(draw: Callable[[RunResult], str]) -> Callable[[RunResult], str]:
        _RENDERERS[kind] = draw
        return draw

    return register
