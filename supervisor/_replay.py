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
* ``stage_queued`` (a stage whose actor waits for room: a slot, a named
  limit), ``stage_started`` (its first attempt runs) and ``stage_ended``
  give each stage its last state, its wall-clock times and, for a success,
  its encoded output; ``stage_started`` and ``attempt_started`` (a retry)
  count the attempts that ran. A journal written before stages queued has
  no ``stage_queued``: its stages started when their actor did.
* ``attempt_failed``, ``resumed`` and ``ended`` are the
  run's history (see `_history`): read back, each stage's attempts and the
  run's stretches, interruptions and resumes.

A journal that contradicts itself (a gap in ``seq``, an event naming a stage
the graph does not have, an edge closing a cycle, a malformed payload, a
value of the wrong kind) is refused with `JournalError`: nothing is guessed.

Stored values (outputs, mapped items, run inputs) are decoded last, once
the whole graph is known, by `_replay_values`: as data when reading (no
class rebuilt), with the codec's allow-list when resuming.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any, final

import attrs

from dagvisor.actors._codec import Undecoded

from ._replayer import Replayer

if TYPE_CHECKING:
    from dagvisor.actors import Codec, StageRegistry
    from dagvisor.actors._signal_messages import Signal

    from ._audit import AuditRecord
    from ._graph import LiveGraph
    from ._history import RunHistory, StageEvent
    from ._journal_rows import JournaledRun

__all__ = ["Replayed", "Undecoded", "replay"]


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
        history: the run's stretches, interruptions and resumes.
        stage_log: each stage's events, compact (read back only: empty for
            a resume), for its attempts.
        unpersisted: successes whose output the journal does not hold
            (``persist=False``); their output is `RELEASED`.
        signals: see below.
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
    history: RunHistory
    stage_log: dict[str, list[StageEvent]]
    unpersisted: frozenset[str] = frozenset()
    signals: tuple[Signal, ...] = ()
    """The signals a resumed run's mailbox holds: sent, and not taken by a
    stage that succeeded (or skipped), in the order they were sent."""


def replay(
    run: JournaledRun,
    *,
    registry: StageRegistry | None,
    codec: Codec | None,
    attempts: bool | str = True,
) -> Replayed:
    """Rebuild ``run``'s graph from its journal records.

    Args:
        run: what the journal holds about the run (`Journal.load`).
        registry: where stage functions are found by their recorded names.
        codec: for a resume, the runtime's codec: every function must then
            be registered, and values are decoded by the codec with its
            allow-list. None to read the run back: a missing function is
            stood in for, and values are read as data (no class rebuilt).
        attempts: (reading back) keep each stage's events, for its attempts
            (`Lineage.attempts`); a stage's name: only that stage's; False:
            none, which spares their memory.

    Raises:
        JournalError: the journal contradicts itself or is malformed.
        NotRestorableError: (resume) functions this process has not
            registered, or values naming classes it does not allow.
    """
    replayer = Replayer(run, registry, codec, attempts=attempts)
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
    replayer.specs.refuse_missing(run.run_id)
    decoded_inputs = replayer.finish(inputs)
    audit = replayer.audit
    return Replayed(
        run=run,
        graph=replayer.graph,
        audit=audit,
        inputs=decoded_inputs,
        starts=replayer.starts,
        kept_cancelled=replayer.kept_cancelled,
        next_seq=next_seq,
        version=audit[-1].version_after if audit else 0,
        added=replayer.added,
        memory=replayer.memory,
        history=replayer.history.build(ended=run.ended),
        stage_log=replayer.stage_log or {},
        unpersisted=frozenset(replayer.unpersisted),
        signals=replayer.signals.kept(replayer.graph.nodes),
    )
