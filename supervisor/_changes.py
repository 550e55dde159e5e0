"""Serving a change request: applied whole or not at all, audited once, answered once.

`Changes.serve` takes one request: a refusal found while it was prepared is
audited and answered as it is; otherwise its handler (see ``_handlers``)
validates and applies it. A typed refusal undoes what the change had added
(a change set's earlier parts) and is audited and answered. A bug while
applying is undone too, when the change only added, and refused with
`InternalError` while the run goes on; when it cannot be undone, the
request is answered and `InternalError` is raised, ending the run (whose
way out answers every waiting requester). Synchronous and free of trio:
answering is putting an outcome in the request's reply slot.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, final

import outcome

from dagvisor.actors import DagvisorError, InternalError, RunClosedError
from dagvisor.actors._messages import (
    AddEdge,
    AddStage,
    CancelRun,
    CancelStage,
    ChangeSet,
    Expand,
    RemoveStage,
    ReplacePending,
)

from ._change import Change
from ._events import GraphChanged
from ._handlers import Handlers

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagvisor.actors._messages import Request

    from ._audit import Fields
    from ._core import RunCore

__all__ = ["Changes"]

logger = logging.getLogger("dagvisor")


@final
class Changes:
    """The change requests of one run, served one at a time (by its supervisor)."""

    __slots__ = ("_apply", "_core", "serving")

    def __init__(self, core: RunCore, where: str) -> None:
        self._core = core
        handlers = Handlers(core, where)
        self._apply: dict[type, Callable[[Any, Change], Any]] = {
            AddStage: handlers.add_stage,
            AddEdge: handlers.add_edge,
            Expand: handlers.expand,
            RemoveStage: handlers.remove_stage,
            ReplacePending: handlers.replace_pending,
            CancelStage: handlers.cancel_stage,
            CancelRun: handlers.cancel_run,
            ChangeSet: handlers.change_set,
        }
        self.serving: Request | None = None
        """The request being served (answered by the run's way out if it fails)."""

    def serve(self, request: Request) -> Change | None:
        """Apply ``request`` whole, or refuse it; the change applied, or None.

        Raises:
            InternalError: applying failed on a bug and could not be undone
                (the request was answered; the run must end).
        """
        if request.refused is not None:  # found by the requester while preparing it
            self._refuse(request, request.refused)
            return None
        core = self._core
        core.forget_pending()
        change = Change()
        unfinished, added = core.unfinished, core.added
        self.serving = request
        try:
            change.value = self._apply[type(request)](request, change)
        except DagvisorError as refusal:
            self._undo(change, unfinished, added)
            self._refuse(request, refusal)
            self.serving = None
            return None
        except Exception as exc:
            undone = self._undo(change, unfinished, added)
            failure = _internal_refusal(exc, undone=undone)
            self._refuse(request, failure)
            if not undone:
                raise failure from exc
            self.serving = None
            return None
        self._record(request, change, None)
        request.reply.send_nowait(outcome.Value(change.value))
        self.serving = None
        return change

    def refuse_closed(self, request: Request) -> None:
        """Refuse a request that reached a run that is ending or ended."""
        self._refuse(request, RunClosedError(self._core.run_id))

    def _refuse(self, request: Request, error: DagvisorError) -> None:
        self._record(request, None, error)
        request.reply.send_nowait(outcome.Error(error))

    def _undo(self, change: Change, unfinished: int, added_count: int) -> bool:
        """Take back what a change added so far; False if it cannot be (it removed or settled)."""
        core = self._core
        core.forget_pending()
        if not change.undoable:
            return False
        if not change.added and not change.edges:
            return True
        graph = core.graph
        added = set(change.added)
        try:
            for upstream, downstream in reversed(change.edges):
                if downstream not in added:  # an edge into a stage that stays
                    graph.remove_edge(graph.nodes[upstream], graph.nodes[downstream])
            for name in reversed(change.added):
                node = graph.nodes[name]
                graph.remove_node(node)
                core.note_removed(node)
        except Exception:  # the graph is not what the change left: give up
            return False
        core.unfinished, core.added = unfinished, added_count
        return True

    def _record(
        self,
        request: Request,
        change: Change | None,
        error: BaseException | None,
    ) -> None:
        """The request's audit record (and journal record, and event)."""
        core = self._core
        before = core.version
        seq = core.audit.next_seq
        fields: Fields
        if change is None:
            fields = (
                seq,
                core.run_id,
                request.kind,
                request.requester,
                request.reason,
                error is None,
                before,
                before,
                time.time(),
                core.now(),
                (),
                (),
                (),
                (),
                None if error is None else type(error).__name__,
                None if error is None else str(error),
                (),
            )
        else:
            added, edges = change.added, change.edges
            removed, cancelled, parts = change.removed, change.cancelled, change.parts
            if added or edges or removed or cancelled:
                core.version += 1
            fields = (
                seq,
                core.run_id,
                request.kind,
                request.requester,
                request.reason,
                error is None,
                before,
                core.version,
                time.time(),
                core.now(),
                tuple(added),
                () if removed is None else tuple(removed),
                tuple(edges),
                () if cancelled is None else tuple(cancelled),
                None if error is None else type(error).__name__,
                None if error is None else str(error),
                () if parts is None else tuple(parts),
            )
        core.audit.append_fields(fields)
        if core.records is not None:
            core.records.change(
                fields, request, None if change is None else change.mapped
            )
        if core.events.readers:
            core.events.publish(GraphChanged(core.audit[seq]))
        if logger.isEnabledFor(
            logging.DEBUG
        ):  # a change, not a stage: off the hot path
            logger.debug(
                "run %s: %s",
                core.run_id,
                core.audit[seq],
                extra={
                    "run_id": core.run_id,
                    "seq": seq,
                    "requester": request.requester,
                },
            )


def _internal_refusal(exc: Exception, *, undone: bool) -> InternalError:
    then = (
        "nothing of it was applied and the run goes on"
        if undone
        else "the run cannot go on safely and ends"
    )
    msg = (
        "the change was refused: dagvisor failed while applying it "
        f"({type(exc).__name__}: {exc}); {then}; please report it"
    )
    error = InternalError(msg)
    error.__cause__ = exc
    return error
