"""What each change request does to the live graph: validate, then apply.

One method per request kind, over the run's `RunCore`: synchronous, no
trio, no I/O, no user code (requests were prepared in the requester's
task). Each validates everything first and raises a typed error, leaving
the graph untouched; then applies, recording in its `Change` what it did,
step by step, so that additions can be undone if a later step of the same
change (a change set's next part) is refused. A handler about to remove or
settle stages marks its change not undoable first. What the change asks of
the event loop (cancel a running stage, stop the run, end a stream) is left
in the change for the supervisor to carry out.

What a change did so far, `Change`, is `_change`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

from dagvisor.actors import (
    CycleError,
    DuplicateStageError,
    StageSpec,
    StageState,
    StageStateError,
    UnknownStageError,
)
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
from dagvisor.actors._prepare import same_print

from ._graph import RELEASED

if TYPE_CHECKING:
    from ._change import Change
    from ._core import RunCore
    from ._graph import Node

__all__ = ["Handlers"]

PENDING = StageState.PENDING
QUEUED = StageState.QUEUED
RUNNING = StageState.RUNNING
CANCELLED = StageState.CANCELLED


@final
class Handlers:
    """The change handlers of one run (see the module docstring)."""

    __slots__ = ("_core", "_where")

    def __init__(self, core: RunCore, where: str) -> None:
        self._core = core
        self._where = where

    # -- validation helpers ----------------------------------------------------------

    def _require(self, name: str, referrer: str | None = None) -> Node:
        node = self._core.graph.get(name)
        if node is None:
            retention = self._core.retention
            if name in retention.gone:
                action = (
                    "change" if referrer is None else f"make {referrer!r} depend on"
                )
                raise retention.gone_error(name, action)
            raise UnknownStageError(name, referrer=referrer, where=self._where)
        return node

    def _require_pending(self, name: str, action: str) -> Node:
        node = self._require(name)
        if node.state is not PENDING:
            raise StageStateError(name, node.state.value, action)
        return node

    def _asked_again(self, name: str, requester: str) -> bool:
        retention = self._core.retention
        return bool(retention.gone) and retention.asked_again(
            name, requester, self._where
        )

    def _is_same_addition(
        self,
        node: Node,
        spec: StageSpec,
        deps: tuple[str, ...],
        requester: str,
        item_print: object,
    ) -> bool:
        """Whether ``node`` is what this request would add (an idempotent re-add).

        Compares by identity and builtin equality only: never user code.
        """
        if not same_spec(node.spec, spec) or node.created_by < 0:
            return False
        if self._core.audit.requester(node.created_by) != requester:
            return False
        if not same_print(node.item_print, item_print):
            return False
        return {dep.name for dep in node.deps} >= set(deps)

    def _check_before(
        self, name: str, deps: list[Node], before: tuple[str, ...]
    ) -> tuple[Node, ...]:
        """Validate ``before=``: pending stages that may wait for a new stage."""
        targets = []
        for later in before:
            node = self._require_pending(later, f"make {name!r} run before")
            for dep in deps:
                path = self._core.graph.cycle_path(dep, node)
                if path is not None:
                    raise CycleError([name, *path[1:], name], where=self._where)
            targets.append(node)
        return tuple(targets)

    # -- additions ---------------------------------------------------------------------

    def add_stage(self, request: AddStage, change: Change) -> str:
        core = self._core
        graph = core.graph
        nodes = graph.nodes
        spec = request.spec
        name = spec.name
        existing = nodes.get(name)
        if existing is not None:
            if self._is_same_addition(
                existing, spec, request.after, request.requester, None
            ):
                return name
            raise DuplicateStageError(name, where=self._where)
        if core.retention.gone and self._asked_again(name, request.requester):
            return name
        deps = []
        for dep_name in request.after:
            dep = nodes.get(dep_name)
            deps.append(
                dep if dep is not None else self._require(dep_name, referrer=name)
            )
        for dep in deps:
            if dep.output is RELEASED:
                core.retention.check_readable(dep, name)  # raises, saying why
        befores = (
            self._check_before(name, deps, request.before) if request.before else ()
        )
        # Validated: apply.
        node = graph.add_node(
            spec, deps, created_by=core.audit.next_seq, before=befores
        )
        core.note_added(node)
        change.added.append(name)
        edges = change.edges
        for dep in deps:
            edges.append((dep.name, name))
        for later in befores:
            graph.add_edge(node, later)
            edges.append((name, later.name))
        core.settle_new(node)
        return name

    def add_edge(self, request: AddEdge, change: Change) -> None:
        core = self._core
        upstream = self._require(request.upstream)
        core.retention.check_readable(upstream, request.downstream)
        downstream = self._require_pending(
            request.downstream, f"make it wait for {request.upstream!r}: cannot change"
        )
        if upstream in downstream.deps:
            return
        path = core.graph.cycle_path(upstream, downstream)
        if path is not None:
            raise CycleError(path, where=self._where)
        core.graph.add_edge(upstream, downstream)
        change.edges.append((upstream.name, downstream.name))
        core.settle_new(downstream)

    def expand(self, request: Expand, change: Change) -> tuple[str, ...]:
        core = self._core
        spec = request.spec
        names = tuple(f"{spec.name}[{key}]" for key in request.keys)
        prints = request.prints
        existing = [core.graph.get(name) for name in names]
        again = [self._asked_again(name, request.requester) for name in names]
        if any(again) or any(node is not None for node in existing):
            # Asked before: an idempotent re-add only if every stage is the
            # same addition (or was added by the same requester and dropped).
            for position, (name, node, item_print, dropped) in enumerate(
                zip(names, existing, prints, again, strict=True)
            ):
                if dropped or (
                    node is not None
                    and self._is_same_addition(
                        node,
                        request.spec_of(position),
                        request.after,
                        request.requester,
                        item_print,
                    )
                ):
                    continue
                clash = name
                if node is None:  # name the stage that does exist
                    clash = next(
                        other
                        for other, found, gone in zip(
                            names, existing, again, strict=True
                        )
                        if found is not None or gone
                    )
                raise DuplicateStageError(clash, where=self._where)
            return names
        first = names[0] if names else spec.name
        deps = [self._require(dep, referrer=first) for dep in request.after]
        for dep in deps:
            core.retention.check_readable(dep, first)
        # Validated: apply.
        if change.mapped is None:
            change.mapped = []
        change.mapped.append(request)
        seq = core.audit.next_seq
        for position, (name, item, key, item_print) in enumerate(
            zip(names, request.items, request.keys, prints, strict=True)
        ):
            node = core.graph.add_node(
                request.spec_of(position),
                deps,
                name=name,
                created_by=seq,
                item=item,
                key=key,
                item_print=item_print,
            )
            core.note_added(node)
            change.added.append(name)
            change.edges.extend((dep.name, name) for dep in deps)
            core.settle_new(node)
        return names

    def change_set(self, request: ChangeSet, change: Change) -> None:
        """Apply every part in order into one change; a refused part refuses all."""
        for part in request.parts:
            added = len(change.added)
            if isinstance(part, AddEdge):
                self.add_edge(part, change)
                named: tuple[str, ...] = (part.upstream, part.downstream)
            else:
                if isinstance(part, AddStage):
                    self.add_stage(part, change)
                else:
                    self.expand(part, change)
                named = tuple(change.added[added:])
            if change.parts is None:
                change.parts = []
            change.parts.append((part.kind, named))

    # -- removals and cancellations -----------------------------------------------------

    def remove_stage(self, request: RemoveStage, change: Change) -> None:
        core = self._core
        node = self._require_pending(request.name, "remove")
        children = list(node.dependents)
        deps = node.deps
        # Validated: apply.
        change.undoable = False
        core.graph.remove_node(node)
        if core.retention.release:
            for dep in deps:
                core.retention.release_if_read(dep)
        core.note_removed(node)
        change.remove(node.name)
        for child in children:
            core.settle_new(child)

    def replace_pending(self, request: ReplacePending, change: Change) -> None:
        # A pipeline is valid by construction (its dependencies name its own
        # stages, without cycles), and no started stage waits for a pending
        # one, so this change cannot be refused, but for outputs released. A
        # stage of the new pipeline that already started or ended is not
        # added again: its work is kept and the new stages use its output.
        core = self._core
        graph, retention = core.graph, core.retention
        if retention.release:  # a kept stage must still hold what the new ones read
            for spec, dep_names in request.pipeline.entries():
                if spec.name in retention.gone:
                    continue  # ended: kept as it is, like any started stage
                if (
                    spec.name not in graph.nodes
                    or graph.nodes[spec.name].state is PENDING
                ):
                    for dep_name in dep_names:
                        kept = graph.nodes.get(dep_name)
                        if kept is None and dep_name in retention.gone:
                            raise retention.gone_error(
                                dep_name, f"make {spec.name!r} read"
                            )
                        if kept is not None and kept.state is not PENDING:
                            retention.check_readable(kept, spec.name)
        # Validated: apply.
        change.undoable = False
        change.ends_stream = True  # the rest of a streamed pipeline is replaced too
        pending = core.pending_stages()
        touched: dict[int, Node] = {}
        settled_children: dict[int, Node] = {}
        for node in pending:
            for dep in node.deps:
                touched[id(dep)] = dep
            for child in node.dependents:
                # A stage settled (cancelled, upstream failed) while it still
                # waited for this one: it must not keep an edge to a stage
                # that is no longer in the graph.
                if child.state is not PENDING:
                    settled_children[id(child)] = child
            del graph.nodes[node.name]
            core.note_removed(node)
            change.remove(node.name)
        for child in settled_children.values():
            child.deps = tuple(dep for dep in child.deps if dep.state is not PENDING)
        for dep in touched.values():
            if dep.state is not PENDING:
                dep.dependents = [c for c in dep.dependents if c.state is not PENDING]
                dep.readers = 0  # its pending dependents are gone
                if retention.release:
                    retention.release_if_read(dep)
        seq = core.audit.next_seq
        added: list[Node] = []
        for spec, dep_names in request.pipeline.entries():
            if spec.name in graph.nodes or spec.name in retention.gone:
                continue
            deps = [graph.nodes[dep] for dep in dep_names]
            node = graph.add_node(spec, deps, created_by=seq)
            core.note_added(node)
            added.append(node)
            change.added.append(spec.name)
            change.edges.extend((dep, spec.name) for dep in dep_names)
        for node in added:
            core.settle_new(node)

    def cancel_stage(self, request: CancelStage, change: Change) -> None:
        core = self._core
        node = self._require(request.name)
        if node.state.is_terminal:
            raise StageStateError(node.name, node.state.value, "cancel")
        # Validated: apply.
        change.undoable = False
        change.note_cancelled((node.name,))
        if node.state is RUNNING or node.state is QUEUED:  # its actor is alive
            assert node.scope is not None
            if change.cancel is None:
                change.cancel = []
            change.cancel.append(node.scope)
        else:
            core.finish(node, CANCELLED, core.now())

    def cancel_run(self, request: CancelRun, change: Change) -> None:
        change.undoable = False
        change.note_cancelled(
            node.name for node in self._core.graph if not node.state.is_terminal
        )
        change.stop = "cancelled"


def same_spec(a: StageSpec, b: StageSpec) -> bool:
    """Whether two specs run the same function the same way (identity and builtins only)."""
    if a is b:
        return True
    return (
        a.fn is b.fn
        and a.when is b.when
        and (a.executor is b.executor or _plain_equal(a.executor, b.executor))
        and _plain_equal(a.name, b.name)
        and _plain_equal(a.retries, b.retries)
        and _plain_equal(a.backoff, b.backoff)
        and _plain_equal(a.timeout, b.timeout)
        and _plain_equal(a.trigger, b.trigger)
        and _plain_equal(a.limit, b.limit)
        and _plain_equal(a.params_key, b.params_key)
    )


def _plain_equal(a: object, b: object) -> bool:
    kind = type(a)
    return kind is type(b) and kind in _PLAIN and a == b


_PLAIN: Final = frozenset({str, int, float, type(None)})
