"""Streamed pipelines: stages pulled from the user's iterable as the run advances.

`StreamFeed.refill` runs between messages, like a change: it first lets the
oldest finished stages leave memory (`Retention.evict`), then adds streamed
stages until ``window`` stages are unfinished or the stream ends. The
iterable is the user's code, read here: whatever it raises, or yields that
is not a stage, fails the stream with a typed error (and the run under its
failure policy), never the supervisor. A streamed stage may depend only on
stages still in memory; its name must never have been used in the run,
and a limit it names must be one the runtime defines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from dagvisor.actors import (
    DagvisorError,
    DuplicateStageError,
    InvalidRequestError,
    StageSpec,
    UnknownStageError,
)
from dagvisor.actors._limits import unknown_limit
from dagvisor.actors._pipeline import ref_names

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import trio

    from dagvisor.actors import StreamedPipeline, StreamItem

    from ._core import RunCore

__all__ = ["StreamFeed"]


@final
class StreamFeed:
    """The rest of a streamed pipeline, materialised a window at a time."""

    __slots__ = (
        "_core",
        "_items",
        "_limits",
        "_previous",
        "_where",
        "refill_at",
        "window",
    )

    def __init__(
        self,
        core: RunCore,
        pipeline: StreamedPipeline,
        where: str,
        limits: Mapping[str, trio.CapacityLimiter],
    ) -> None:
        self._core = core
        self._limits = limits
        self._items: Iterator[StreamItem] | None = pipeline.take()
        self.window = pipeline.window
        self.refill_at = max(1, pipeline.window // 2)
        """Refill when fewer stages than this are unfinished."""
        self._previous: str | None = None
        self._where = where

    @property
    def open(self) -> bool:
        """Whether the stream may still yield stages."""
        return self._items is not None

    def end(self) -> None:
        """Stop pulling (the pending part of the pipeline was replaced)."""
        self._items = None

    def refill(self) -> tuple[str, Exception] | None:
        """Add streamed stages up to the window; the failed item's name and error, if any."""
        core = self._core
        core.retention.evict()
        items = self._items
        assert items is not None
        nodes = core.graph.nodes
        where = f"{self._where} (a streamed stage may only depend on the last {self.window} stages)"
        while core.unfinished < self.window:
            try:
                item = next(items)
            except StopIteration:
                self._items = None
                return None
            except Exception as exc:  # the user's iterable failed
                self._items = None
                return "<stream>", exc
            try:
                spec, after = self._stage_of(item)
                name = spec.name
                if name in nodes or name in core.retention.gone:
                    raise DuplicateStageError(name, where=self._where)
                if spec.limit is not None:
                    unknown = unknown_limit(spec, self._limits)
                    if unknown is not None:
                        raise unknown
                deps = []
                for dep_name in after:
                    dep = nodes.get(dep_name)
                    if dep is None:
                        raise UnknownStageError(dep_name, referrer=name, where=where)
                    core.retention.check_readable(dep, name)
                    deps.append(dep)
            except DagvisorError as exc:
                self._items = None
                return _item_name(item), exc
            node = core.graph.add_node(spec, deps)
            core.unfinished += 1
            core.retention.streamed_in(node)
            self._previous = name
            core.settle_new(node)
        return None

    def _stage_of(self, item: object) -> tuple[StageSpec, tuple[str, ...]]:
        """The stage a streamed item names and what it comes after.

        The ``after=`` part is the user's iterable, read here; whatever it
        raises fails the stream with a typed error.
        """
        if isinstance(item, StageSpec):
            return item, () if self._previous is None else (self._previous,)
        if type(item) is tuple and len(item) == 2 and isinstance(item[0], StageSpec):
            try:
                return item[0], ref_names(item[1])
            except Exception as exc:
                msg = (
                    f"the stages streamed stage {item[0].name!r} comes after could "
                    f"not be read ({type(exc).__name__}: {exc}); yield a list of names"
                )
                raise InvalidRequestError(msg) from exc
        msg = (
            "a streamed pipeline yields stages or (stage, after) pairs, not a "
            f"{type(item).__qualname__}"
        )
        raise InvalidRequestError(msg)


def _item_name(item: object) -> str:
    """The stage a streamed item names, for error reports; ``<stream>`` if none."""
    if type(item) is tuple and item:
        item = item[0]
    return item.name if isinstance(item, StageSpec) else "<stream>"
