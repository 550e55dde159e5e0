"""Pipelines: immutable descriptions of stages and their dependencies.

Invariants:

* A pipeline is acyclic and every dependency names a stage of the pipeline.
  `Pipeline.add` only accepts dependencies on stages already present, and
  `Pipeline.add_edge` refuses an edge that would close a cycle, so a pipeline
  that exists is valid: running it needs no further graph check.
* A pipeline never changes once built: every method returns a new pipeline.
  To keep building a long pipeline one change at a time O(1) a change, the
  versions of one line share a `PipelineStore` (see
  `dagvisor.actors._pipeline_store`); a version is its store, how many
  stages it sees (``_count``) and the store's count of changes when it was
  made (``_stamp``). Changing an older version (a branch) copies its view.
* ``_in_order``: no edge was added against insertion order, which is then
  a topological order (the run's graph is built in it, with no sorting).
* Every algorithm here is iterative, never recursive, so million-stage
  pipelines are fine under Python's default recursion limit.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, TypeAlias, final

from ._errors import CycleError, DuplicateStageError, UnknownStageError
from ._pipeline_store import PipelineStore, kahn
from ._spec import StageSpec

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["Pipeline", "StreamItem", "StreamedPipeline", "compose"]

StageRef = str | StageSpec
"""A stage named by its name, or by its spec (whose name is used)."""


def _ref_name(ref: StageRef) -> str:
    if isinstance(ref, StageSpec):
        return ref.name
    if type(ref) is str:
        return ref
    if isinstance(ref, str):
        # A str subclass may redefine __eq__ and __hash__: the run only ever
        # sees the plain string (str.__str__ bypasses an overridden __str__).
        return str.__str__(ref)
    msg = f"a dependency must be a stage name or a stage, not {ref!r}"
    raise TypeError(msg)


def ref_names(refs: StageRef | Iterable[StageRef] | None) -> tuple[str, ...]:
    """Turn ``after=``/``before=`` arguments into a tuple of distinct names."""
    if refs is None:
        return ()
    if isinstance(refs, str | StageSpec):
        return (_ref_name(refs),)
    return tuple(dict.fromkeys(_ref_name(ref) for ref in refs))


@final
class Pipeline:
    """An immutable DAG of stages, built fluently.

    Example:
        >>> p = Pipeline("demo").add(fetch).add(plan, after=["fetch"])  # doctest: +SKIP
        >>> long = Pipeline.chain(step.named(f"s{i}") for i in range(10**6))  # doctest: +SKIP
    """

    __slots__ = ("_count", "_in_order", "_name", "_stamp", "_store")

    _name: str
    _store: PipelineStore
    _count: int
    _stamp: int
    _in_order: bool

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            msg = f"a pipeline name must be a non-empty string, not {name!r}"
            raise ValueError(msg)
        self._init(name, PipelineStore([], [], {}), 0, in_order=True)

    def _init(
        self, name: str, store: PipelineStore, count: int, *, in_order: bool
    ) -> None:
        set_ = object.__setattr__
        set_(self, "_name", name)
        set_(self, "_store", store)
        set_(self, "_count", count)
        set_(self, "_stamp", store.stamp)
        set_(self, "_in_order", in_order)

    @classmethod
    def _make(
        cls, name: str, store: PipelineStore, count: int, *, in_order: bool
    ) -> Pipeline:
        pipeline = cls.__new__(cls)
        pipeline._init(name, store, count, in_order=in_order)
        return pipeline

    def __setattr__(self, name: str, value: Any) -> None:
        msg = "a Pipeline is immutable; its methods return new pipelines"
        raise AttributeError(msg)

    # -- reading ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The pipeline's name (used in messages and as the run's name)."""
        return self._name

    def __len__(self) -> int:
        return self._count

    def _position(self, name: str) -> int | None:
        pos = self._store.index.get(name)
        if pos is None or pos >= self._count:
            return None
        return pos

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._position(name) is not None

    def __iter__(self) -> Iterator[str]:
        """The stage names, in the order they were added."""
        specs = self._store.specs
        for pos in range(self._count):
            yield specs[pos].name

    def _specs(self) -> Iterator[StageSpec]:
        """Every stage's spec, in the order they were added (cheaper than `entries`)."""
        return itertools.islice(self._store.specs, self._count)

    def spec(self, name: str) -> StageSpec:
        """The spec of stage ``name``."""
        return self._store.specs[self._require(name)]

    def dependencies(self, name: str) -> tuple[str, ...]:
        """The names of the stages that ``name`` waits for."""
        return self._store.deps_at(self._require(name), self._stamp)

    def edges(self) -> Iterator[tuple[str, str]]:
        """Every dependency as an ``(upstream, downstream)`` pair."""
        specs = self._store.specs
        for pos, deps in self._deps_in(range(self._count)):
            for dep in deps:
                yield dep, specs[pos].name

    def __repr__(self) -> str:
        return f"Pipeline({self._name!r}, {self._count} stages)"

    def _require(self, name: str) -> int:
        pos = self._position(name)
        if pos is None:
            raise UnknownStageError(name, where=f"pipeline {self._name!r}")
        return pos

    def entries(self) -> Iterator[tuple[StageSpec, tuple[str, ...]]]:
        """Every ``(spec, dependency names)``, each after its dependencies."""
        store, count = self._store, self._count
        specs = store.specs
        if self._in_order:
            positions: Iterable[int] = range(count)
        else:
            positions = kahn(store.deps_view(count, self._stamp), store.index, count)
        for pos, deps in self._deps_in(positions):
            yield specs[pos], deps

    def _deps_in(
        self, positions: Iterable[int]
    ) -> Iterator[tuple[int, tuple[str, ...]]]:
        """``(pos, dependencies)`` for each of ``positions``, as this version sees them.

        The newest version reads the store's own list: should a newer
        version change it while this one is being read, the rest is read
        from the store's history.
        """
        store, stamp = self._store, self._stamp
        deps = store.deps_view(self._count, stamp)
        for pos in positions:
            if deps is store.deps and store.stamp != stamp:
                deps = store.deps_view(self._count, stamp)
            yield pos, deps[pos]

    # -- building ----------------------------------------------------------------

    def _own_store(self) -> PipelineStore:
        """The store this version may change: its own if it is the newest, else a copy."""
        store = self._store
        if self._stamp == store.stamp:
            return store
        return store.branch(self._count, self._stamp, labelled=not self._in_order)

    def add(
        self, spec: StageSpec, *, after: StageRef | Iterable[StageRef] | None = None
    ) -> Pipeline:
        """Return a new pipeline with ``spec`` added, waiting for ``after``.

        Raises:
            DuplicateStageError: a stage of that name is already in the pipeline.
            UnknownStageError: a dependency names a stage not yet added.
            CycleError: the stage depends on itself.
        """
        if not isinstance(spec, StageSpec):
            msg = f"Pipeline.add needs a stage (decorate the function with @stage), not {spec!r}"
            raise TypeError(msg)
        name = spec.name
        where = f"pipeline {self._name!r}"
        if self._position(name) is not None:
            raise DuplicateStageError(name, where=where)
        deps = ref_names(after)
        for dep in deps:
            if dep == name:
                raise CycleError((name, name), where=where)
            if self._position(dep) is None:
                raise UnknownStageError(dep, referrer=name, where=where)
        store = self._own_store()
        store.append(spec, deps, self._count)
        return Pipeline._make(
            self._name, store, self._count + 1, in_order=self._in_order
        )

    def add_edge(self, upstream: StageRef, downstream: StageRef) -> Pipeline:
        """Return a new pipeline where ``downstream`` also waits for ``upstream``.

        Costs what the edge touches: nothing more when ``upstream`` already
        comes first in the pipeline's order, else a search of the stages
        that reach ``upstream`` and are ordered after ``downstream``.

        Raises:
            UnknownStageError: either stage is not in the pipeline.
            CycleError: ``upstream`` already depends on ``downstream``.
        """
        up, down = _ref_name(upstream), _ref_name(downstream)
        up_pos, down_pos = self._require(up), self._require(down)
        before = self._store.deps_at(down_pos, self._stamp)
        if up in before:
            return self
        if up_pos == down_pos:
            raise CycleError((up, up), where=f"pipeline {self._name!r}")
        in_order = self._in_order and up_pos < down_pos
        region = None
        if not in_order:
            region, path = self._store.region(
                up_pos, down_pos, self._stamp, labelled=not self._in_order
            )
            if path is not None:
                raise CycleError((up, *path), where=f"pipeline {self._name!r}")
        store = self._own_store()
        store.set_deps(down_pos, (*before, up))
        if region:
            store.move_below(region, down_pos, self._count)
        return Pipeline._make(self._name, store, self._count, in_order=in_order)

    @staticmethod
    def stream(
        items: Iterable[StreamItem], *, name: str = "stream", window: int = 10_000
    ) -> StreamedPipeline:
        """A pipeline pulled from ``items`` as the run advances; see `StreamedPipeline`.

        Example:
            >>> Pipeline.stream((step.named(f"s{i}") for i in range(10**7)), name="deep")  # doctest: +SKIP
        """
        return StreamedPipeline(items, name=name, window=window)

    @classmethod
    def chain(cls, specs: Iterable[StageSpec], *, name: str = "chain") -> Pipeline:
        """A linear pipeline: each stage waits for the one before it.

        ``specs`` may be any iterable, a generator of a million specs included;
        it is consumed once.

        Example:
            >>> Pipeline.chain((step.named(f"s{i}") for i in range(1000)), name="deep")  # doctest: +SKIP
        """
        pipeline = cls(name)
        spec_list: list[StageSpec] = []
        dep_list: list[tuple[str, ...]] = []
        index: dict[str, int] = {}
        where = f"pipeline {name!r}"
        previous: tuple[str, ...] = ()
        for spec in specs:
            if not isinstance(spec, StageSpec):
                msg = f"Pipeline.chain needs stages (decorate functions with @stage), not {spec!r}"
                raise TypeError(msg)
            stage_name = spec.name
            if stage_name in index:
                raise DuplicateStageError(stage_name, where=where)
            index[stage_name] = len(spec_list)
            spec_list.append(spec)
            dep_list.append(previous)
            previous = (stage_name,)
        store = PipelineStore(spec_list, dep_list, index)
        pipeline._init(name, store, len(spec_list), in_order=True)
        return pipeline


def compose(*pipelines: Pipeline, name: str | None = None) -> Pipeline:
    """Merge pipelines into one; stage names must not clash.

    The result keeps every stage and dependency of each part. Wire the parts
    together with `Pipeline.add_edge` or by adding stages after them.

    Raises:
        DuplicateStageError: two parts have a stage of the same name.
    """
    if not pipelines:
        msg = "compose() needs at least one pipeline"
        raise ValueError(msg)
    merged_name = name if name is not None else "+".join(p.name for p in pipelines)
    specs: list[StageSpec] = []
    deps: list[tuple[str, ...]] = []
    index: dict[str, int] = {}
    owner: dict[str, str] = {}
    for part in pipelines:
        if not isinstance(part, Pipeline):
            msg = f"compose() takes pipelines, not {part!r}"
            raise TypeError(msg)
        for spec, spec_deps in part.entries():
            stage_name = spec.name
            if stage_name in index:
                raise DuplicateStageError(
                    stage_name,
                    where=f"both pipeline {owner[stage_name]!r} and pipeline {part.name!r}",
                )
            index[stage_name] = len(specs)
            owner[stage_name] = part.name
            specs.append(spec)
            deps.append(spec_deps)
    # Each part's entries come after their dependencies: the merged
    # insertion order is a topological order.
    store = PipelineStore(specs, deps, index)
    return Pipeline._make(merged_name, store, len(specs), in_order=True)


StreamItem: TypeAlias = (
    "StageSpec | tuple[StageSpec, StageRef | Iterable[StageRef] | None]"
)
"""One streamed stage: a spec (after the previous one), or ``(spec, after)``."""


@final
class StreamedPipeline:
    """A pipeline whose stages are pulled from an iterable as the run advances.

    Only a window of stages exists in the live graph at any time: stages are
    materialised while fewer than ``window`` are unfinished, and finished
    ones are dropped, oldest first, once every stage after them has ended. A
    10,000,000-stage chain never exists in memory at once.

    Each item is a `StageSpec`, which runs after the item before it (a chain),
    or a ``(spec, after)`` pair naming its dependencies; those must be recent
    enough to still be in the live graph. A streamed pipeline is consumed by
    the run that reads it: run it once.

    Example:
        >>> steps = (step.named(f"s{i}") for i in range(10_000_000))  # doctest: +SKIP
        >>> await rt.run(Pipeline.stream(steps, name="deep"))  # doctest: +SKIP
    """

    __slots__ = ("_items", "_name", "_taken", "_window")

    def __init__(self, items: Iterable[StreamItem], *, name: str, window: int) -> None:
        if not isinstance(name, str) or not name.strip():
            msg = f"a pipeline name must be a non-empty string, not {name!r}"
            raise ValueError(msg)
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            msg = f"window must be a whole number >= 2, not {window!r}"
            raise ValueError(msg)
        self._name = name
        self._window = window
        self._items: Iterator[StreamItem] = iter(items)
        self._taken = False

    @property
    def name(self) -> str:
        """The pipeline's name (used as the run's name)."""
        return self._name

    @property
    def window(self) -> int:
        """How many unfinished stages the run keeps materialised at most."""
        return self._window

    def __repr__(self) -> str:
        return f"StreamedPipeline({self._name!r}, window={self._window})"

    def take(self) -> Iterator[StreamItem]:
        """The items, for the one run that consumes them."""
        if self._taken:
            msg = f"streamed pipeline {self._name!r} was already run; make a new one"
            raise ValueError(msg)
        self._taken = True
        return self._items
