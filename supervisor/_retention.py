"""What a run keeps in memory: outputs released once read, finished stages dropped.

One mechanism for every policy:

* **Release** (``retain_outputs="final"`` and ``"journal"``): a succeeded
  stage's output is released (`RELEASED`) once every dependent that will
  read it has started or ended: ``node.readers`` counts the dependents still
  pending. `release_if_read` is the rule, applied wherever a count drops.
* **Drop** (``retain_outputs="journal"``, and streamed pipelines): a finished
  stage leaves memory once its dependents have all ended (a stage without
  dependents stays: it is a result), or, in a stream, once it is among the
  oldest beyond the window. `forget` is the one way out: the node becomes a
  husk (name, state, times, spec) that dependents still in memory may keep
  among their dependencies, never its item, output or upstream stages; its
  name stays taken (`GoneNames`), and the audit record that added it may
  leave memory too (its pin is dropped).

Everything here is synchronous and called by the supervisor only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Literal, TypeAlias, final

from dagvisor.actors import NO_ITEM, DuplicateStageError, StageState, StageStateError

from ._gone import GoneNames
from ._graph import NO_DEPENDENTS, RELEASED, Node

if TYPE_CHECKING:
    from ._audit import AuditLog
    from ._graph import LiveGraph

__all__ = ["RetainOutputs", "Retention"]

RetainOutputs: TypeAlias = Literal["all", "final", "journal"]

SUCCEEDED = StageState.SUCCEEDED


@final
class Retention:
    """Releases outputs and drops finished stages of one run, as its policy says."""

    __slots__ = (
        "_audit",
        "_ended",
        "_graph",
        "_window",
        "drop",
        "evicted",
        "gone",
        "release",
        "streamed",
        "watches_added",
    )

    def __init__(
        self,
        graph: LiveGraph,
        audit: AuditLog,
        policy: RetainOutputs,
        *,
        window: int | None = None,
    ) -> None:
        self._graph = graph
        self._audit = audit
        self.release = policy in ("final", "journal")
        self.drop = policy == "journal"
        self._window = window
        self._ended: list[Node] = []
        self.gone = GoneNames()
        """Names of the stages that left memory: they stay taken."""
        self.evicted: dict[StageState, int] = dict.fromkeys(StageState, 0)
        """How many stages left memory, by the state they ended in."""
        # A streamed run's stages, oldest first (streamed and added at run
        # time alike): the oldest finished ones leave memory as it goes on.
        self.streamed: deque[Node] | None = None if window is None else deque()
        self.watches_added = audit.bounded or window is not None
        """Whether `added` has anything to do (the supervisor skips it if not)."""

    # -- release ---------------------------------------------------------------

    def release_if_read(self, node: Node) -> None:
        """Release ``node``'s output if no pending dependent will read it any more."""
        if node.readers == 0 and node.state is SUCCEEDED and node.dependents:
            node.output = RELEASED

    def left_pending(self, node: Node) -> None:
        """``node`` starts or ends: its dependencies have one reader less."""
        for dep in node.deps:
            dep.readers -= 1
            self.release_if_read(dep)

    @staticmethod
    def check_readable(dep: Node, name: str) -> None:
        """A new dependency needs its upstream output still held.

        Raises:
            StageStateError: the output was released.
        """
        if dep.output is RELEASED:
            raise StageStateError(
                dep.name,
                "succeeded, and its output was released (retain_outputs='final', or "
                "kept out of the journal with persist=False)",
                f"make {name!r} read",
            )

    # -- stages coming and going --------------------------------------------------

    def added(self, node: Node) -> None:
        """A change added ``node``: keep the record that added it; track it in a stream."""
        self._audit.pin(node.created_by)
        if self.streamed is not None:
            self.streamed.append(node)

    def streamed_in(self, node: Node) -> None:
        """A streamed pipeline yielded ``node``."""
        assert self.streamed is not None
        self.streamed.append(node)

    def removed(self, node: Node) -> None:
        """A change took pending ``node`` out of the graph (or a change was undone)."""
        self._audit.unpin(node.created_by)

    def ended(self, node: Node) -> None:
        """``node`` reached a terminal state (dropped between messages, if it may)."""
        if self.drop:
            self._ended.append(node)

    # -- dropping -----------------------------------------------------------------

    def drop_ended(self) -> None:
        """Drop the finished stages whose dependents have all ended (between messages)."""
        if not self._ended:
            return
        ended, self._ended = self._ended, []
        for node in ended:
            for dep in node.deps:  # first: dropping the node unlinks them
                self._drop_if_done(dep)
            self._drop_if_done(node)

    def drop_all_ended(self, nodes: list[Node]) -> None:
        """After a resume: drop what the replayed graph holds that may go."""
        if self.drop:
            self._ended.extend(node for node in nodes if node.state.is_terminal)
            self.drop_ended()

    def _drop_if_done(self, node: Node) -> None:
        if not node.state.is_terminal or node.order < 0:  # running, or gone
            return
        dependents = node.dependents
        if not dependents:
            return
        seen = node.ended_dependents
        while seen < len(dependents) and dependents[seen].state.is_terminal:
            seen += 1
        node.ended_dependents = seen
        if seen < len(dependents):
            return
        self.forget(node)

    def evict(self) -> None:
        """Let the oldest finished stages of a stream beyond its window leave memory."""
        streamed = self.streamed
        assert streamed is not None
        assert self._window is not None
        nodes = self._graph.nodes
        while len(streamed) > self._window:
            node = streamed[0]
            if nodes.get(node.name) is not node:  # removed, or a change undone
                streamed.popleft()
                continue
            if not node.state.is_terminal or any(
                not child.state.is_terminal for child in node.dependents
            ):
                break
            streamed.popleft()
            self.forget(node)

    def forget(self, node: Node) -> None:
        """Let a finished stage leave memory; its name stays taken (see the module)."""
        nodes = self._graph.nodes
        if nodes.get(node.name) is node:
            del nodes[node.name]
            audit = self._audit
            requester = (
                None if node.created_by < 0 else audit[node.created_by].requester
            )
            self.gone.add(node.name, node.created_by, requester)
            audit.unpin(node.created_by)
            self.evicted[node.state] += 1
        node.deps = ()
        node.dependents = NO_DEPENDENTS
        node.item = NO_ITEM
        node.item_print = None
        node.output = None
        node.order = -1  # never in an order region again (see LiveGraph)

    # -- names of stages that left --------------------------------------------------

    def gone_error(self, name: str, action: str) -> StageStateError:
        """The refusal of a change that names a stage that left memory."""
        return StageStateError(
            name,
            "ended, and left memory (retain_outputs='journal' and streamed "
            "pipelines drop finished stages; a journal keeps their record)",
            action,
        )

    def asked_again(self, name: str, requester: str, where: str) -> bool:
        """Whether ``name`` left memory and is asked for again by the one who added it.

        That is the idempotent re-add of a stage that has already run (a
        stage run again after a resume asks for its changes again). Its spec
        and item are no longer in memory: it is matched by requester and name.

        Raises:
            DuplicateStageError: the name left memory and someone else asks.
        """
        if name not in self.gone:
            return False
        if self.gone.added_by(name, requester):
            return True
        raise DuplicateStageError(name, where=where)
