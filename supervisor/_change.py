"""One change in progress (`Change`): what it did so far, and what it leaves to do.

A handler (`_handlers`) records in it each step it applies: for the
change's audit record and its answer, for undoing a change set's earlier
parts when a later one is refused, and what the supervisor must carry out
on the event loop afterwards (cancel scopes, stop the run, end a stream).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, final

if TYPE_CHECKING:
    from collections.abc import Iterable

    import trio

    from dagvisor.actors._messages import Expand

__all__ = ["Change"]


@final
class Change:
    """What a change did so far: for its audit record, its answer, its undoing,
    and what it leaves the supervisor to do."""

    __slots__ = (
        "added",
        "cancel",
        "cancelled",
        "edges",
        "ends_stream",
        "mapped",
        "parts",
        "removed",
        "stop",
        "undoable",
        "value",
    )

    def __init__(self) -> None:
        self.value: Any = None
        self.added: list[str] = []
        self.edges: list[tuple[str, str]] = []
        # What most changes never do starts as None (one list fewer per change).
        self.removed: list[str] | None = None
        self.cancelled: list[str] | None = None
        self.parts: list[tuple[str, tuple[str, ...]]] | None = None
        self.mapped: list[Expand] | None = None
        """The expansions that added their stages (their items are journaled)."""
        self.undoable = True
        self.cancel: list[trio.CancelScope] | None = None
        """Scopes of running stages to cancel."""
        self.stop: Literal["cancelled"] | None = None
        """Set when the whole run is to stop."""
        self.ends_stream = False
        """Set when the rest of a streamed pipeline is replaced."""

    @property
    def empty(self) -> bool:
        """Whether the graph is as it was (the version does not move)."""
        return not (self.added or self.removed or self.edges or self.cancelled)

    def remove(self, name: str) -> None:
        """Note a stage the change removed."""
        if self.removed is None:
            self.removed = []
        self.removed.append(name)

    def note_cancelled(self, names: Iterable[str]) -> None:
        """Note stages the change cancelled."""
        if self.cancelled is None:
            self.cancelled = []
        self.cancelled.extend(names)
