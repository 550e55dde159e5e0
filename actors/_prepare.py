"""Preparing a change request in the requester's own task, before it is sent.

* names become plain ``str`` (a subclass could redefine ``__eq__``/``__hash__``);
* mapped items are frozen (see `_freeze`), encoded for the journal when the run
  has one, and fingerprinted, so that "is this the same request again?" (a
  retried or resumed stage asking again) never compares user objects;
* stage specs are checked to name only limits the runtime defines, and,
  in a journaled run, restorable and given the reference the journal
  stores (``RunEnv.prepare_spec``).

So the supervisor, the single writer of the graph, never runs user code. A
problem found while preparing (an item the journal cannot encode, a key
function that raised, an unregistered function) is not raised: it travels
with the request as ``refused``, and the supervisor audits the request and
answers with it, like any refusal. Only a call whose arguments have the
wrong types (a spec that is not a stage) raises at once, as any Python call
would.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

from ._errors import DagvisorError, InvalidRequestError
from ._freeze import freeze
from ._journal_errors import NotRestorableError
from ._limits import unknown_limit
from ._messages import (
    AddEdge,
    AddStage,
    Expand,
    ReplacePending,
    ReplySlot,
    add_stage_request,
)
from ._pipeline import Pipeline, StageRef, ref_names
from ._spec import StageSpec

if TYPE_CHECKING:
    from ._env import RunEnv

ItemParams: TypeAlias = (
    "Callable[[Any], Mapping[str, Any]] | Iterable[Mapping[str, Any]]"
)
"""``expand(params=...)``: one parameter mapping per item, or a function of the item."""

__all__ = ["ItemParams", "Preparer", "fingerprint", "one_name", "same_print"]


# Items compared by value in the supervisor: builtin equality, no user code.
_PLAIN: Final = frozenset({int, str, bool, type(None)})


@final
class _Identity:
    """The fingerprint of an item that cannot be pickled: the item itself, by identity."""

    __slots__ = ("item",)

    def __init__(self, item: object) -> None:
        self.item = item


class _Hasher:
    """A file-like sink for pickle that only hashes what it is given."""

    __slots__ = ("digest",)

    def __init__(self) -> None:
        self.digest = hashlib.blake2b(digest_size=16)

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def fingerprint(item: object, encoded: str | None) -> object:
    """What tells ``item`` from another without comparing the items themselves.

    The journal's encoding when there is one; else plain scalars as they are,
    and anything else by a digest of its pickle; an item that cannot be
    pickled is known only by its identity. Compared with `same_print`.
    """
    if encoded is not None:
        return hashlib.blake2b(
            encoded.encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
    if type(item) in _PLAIN:
        return item
    sink = _Hasher()
    try:
        pickle.Pickler(sink, protocol=5).dump(item)
    except Exception:
        return _Identity(item)
    return sink.digest.digest()


def same_print(a: object, b: object) -> bool:
    """Whether two fingerprints are of the same item (builtin comparisons only)."""
    if type(a) is not type(b):
        return False
    if type(a) is _Identity:
        return a.item is b.item  # type: ignore[attr-defined]  # both are _Identity
    return a == b


def _stage(spec: object, action: str) -> StageSpec:
    if not isinstance(spec, StageSpec):
        msg = (
            f"{action} needs a stage (decorate the function with @stage), not {spec!r}"
        )
        raise TypeError(msg)
    return spec


def one_name(ref: StageRef) -> str:
    (name,) = ref_names(ref)
    return name


def _names(refs: StageRef | Iterable[StageRef] | None, what: str) -> tuple[str, ...]:
    if refs is None:
        return ()
    if (
        (type(refs) is list or type(refs) is tuple)
        and len(refs) == 1
        and type(refs[0]) is str
    ):
        return (refs[0],)  # the common `after=[name]`: nothing else to check
    try:
        return ref_names(refs)
    except TypeError:
        raise
    except Exception as exc:
        msg = f"the {what} stages could not be read: {type(exc).__name__}: {exc}"
        raise InvalidRequestError(msg) from exc


class Preparer:
    """Prepares the requests of one requester in one run (see the module docstring)."""

    __slots__ = ("env", "requester")

    def __init__(self, env: RunEnv, requester: str) -> None:
        self.env = env
        self.requester = requester

    def spec(
        self, spec: StageSpec
    ) -> tuple[dict[str, Any] | None, DagvisorError | None]:
        if spec.limit is not None:
            unknown = unknown_limit(spec, self.env.limits)
            if unknown is not None:
                return None, unknown
        prepare = self.env.prepare_spec  # a journaled run's: see RunEnv
        return (None, None) if prepare is None else prepare(spec)

    def add_stage(
        self,
        spec: StageSpec,
        after: StageRef | Iterable[StageRef] | None,
        before: StageRef | Iterable[StageRef] | None,
        reason: str,
    ) -> AddStage:
        spec = _stage(spec, "add_stage")
        after_names, before_names = _names(after, "after="), _names(before, "before=")
        ref, refused = self.spec(spec)
        return add_stage_request(
            spec, after_names, before_names, reason, self.requester, ref, refused
        )

    def add_edge(
        self, upstream: StageRef, downstream: StageRef, reason: str
    ) -> AddEdge:
        return AddEdge(
            upstream=one_name(upstream),
            downstream=one_name(downstream),
            reason=reason,
            requester=self.requester,
            reply=ReplySlot(),
        )

    def expand(
        self,
        spec: StageSpec,
        items: Iterable[Any],
        reason: str,
        key: Callable[[Any], object] | None,
        after: StageRef | Iterable[StageRef] | None,
        key_prefix: str,
        params: ItemParams | None = None,
    ) -> Expand:
        spec = _stage(spec, "expand")
        after_names = _names(after, "after=")
        ref, refused = self.spec(spec)
        frozen: tuple[Any, ...] = ()
        keys: tuple[str, ...] = ()
        encoded: tuple[str, ...] | None = None
        prints: tuple[object, ...] = ()
        item_specs: tuple[StageSpec, ...] = ()
        try:
            frozen = tuple([freeze(item) for item in items])
            keys = _keys(spec, frozen, key, key_prefix)
            if params is not None:
                item_specs = _item_specs(spec, frozen, params)
            codec = self.env.codec
            if codec is not None and refused is None:
                encoded = tuple([_encode(codec, item) for item in frozen])
                if self.env.check_output is not None:  # one record holds them all
                    self.env.check_output(
                        encoded, f"the items of expand of {spec.name!r}"
                    )
            prints = tuple(
                [
                    fingerprint(item, None if encoded is None else text)
                    for item, text in zip(frozen, encoded or frozen, strict=True)
                ]
            )
        except DagvisorError as exc:
            refused = refused or exc
        except Exception as exc:
            msg = (
                f"expand of {spec.name!r}: its items, keys or parameters could not be read: "
                f"{type(exc).__name__}: {exc}"
            )
            refused = refused or InvalidRequestError(msg)
        if refused is not None:  # sent only to be audited and refused
            frozen, keys, encoded, prints, item_specs = (), (), None, (), ()
        return Expand(
            spec=spec,
            items=frozen,
            keys=keys,
            after=after_names,
            reason=reason,
            requester=self.requester,
            reply=ReplySlot(),
            prints=prints,
            encoded=encoded,
            ref=ref,
            refused=refused,
            item_specs=item_specs,
        )

    def replace_pending(self, pipeline: Pipeline, reason: str) -> ReplacePending:
        if not isinstance(pipeline, Pipeline):
            msg = f"replace_pending needs a Pipeline, not {pipeline!r}"
            raise TypeError(msg)
        refs: list[dict[str, Any]] | None = None
        refused = None
        if self.env.prepare_spec is not None:
            refs = []
            for spec, _ in pipeline.entries():
                ref, refused = self.spec(spec)
                if refused is not None:
                    break
                assert ref is not None
                refs.append(ref)
        else:
            for spec in pipeline._specs():
                if spec.limit is not None:
                    refused = unknown_limit(spec, self.env.limits)
                    if refused is not None:
                        break
        return ReplacePending(
            pipeline=pipeline,
            reason=reason,
            requester=self.requester,
            reply=ReplySlot(),
            refs=None if refs is None or refused is not None else tuple(refs),
            refused=refused,
        )


def _keys(
    spec: StageSpec,
    items: tuple[Any, ...],
    key: Callable[[Any], object] | None,
    prefix: str,
) -> tuple[str, ...]:
    if key is None:
        return tuple([f"{prefix}{position}" for position in range(len(items))])
    keys = tuple([f"{prefix}{key(item)}" for item in items])
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        clash = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]  # set.add returns None: the `or` keeps scanning
        msg = (
            f"expand of {spec.name!r}: two items have the key {clash!r}; "
            "the key function must give each item its own key"
        )
        raise InvalidRequestError(msg)
    return keys


def _item_specs(
    spec: StageSpec, items: tuple[Any, ...], params: ItemParams
) -> tuple[StageSpec, ...]:
    """``spec`` once per item, with that item's parameters over its own."""
    if isinstance(params, Mapping):
        msg = (
            f"expand of {spec.name!r}: params= is one mapping per item (a list) or "
            "a function of the item, not one mapping; for parameters every item "
            f"shares, expand {spec.name}.with_params(...)"
        )
        raise InvalidRequestError(msg)
    if callable(params):
        given = []
        for item in items:
            item_params = params(item)
            if inspect.isawaitable(item_params):
                if inspect.iscoroutine(item_params):
                    item_params.close()  # never awaited: closed, not warned about
                msg = (
                    f"expand of {spec.name!r}: params= returned an awaitable "
                    f"({type(item_params).__qualname__}); give a plain function "
                    "that returns the item's mapping"
                )
                raise InvalidRequestError(msg)
            given.append(item_params)
    elif isinstance(params, str | bytes) or not isinstance(params, Iterable):
        msg = (
            f"expand of {spec.name!r}: params= must be one mapping per item (a list) "
            f"or a function of the item, not {type(params).__qualname__}"
        )
        raise InvalidRequestError(msg)
    else:
        given = list(params)
    if len(given) != len(items):
        msg = (
            f"expand of {spec.name!r}: {len(given)} parameter sets for "
            f"{len(items)} items; give one mapping per item"
        )
        raise InvalidRequestError(msg)
    specs = []
    for position, item_params in enumerate(given):
        try:
            merged = (
                {**spec.params, **item_params}
                if isinstance(item_params, Mapping)
                else item_params
            )
            specs.append(spec.named(spec.name, params=merged))
        except TypeError as exc:
            msg = f"expand of {spec.name!r}, item {position}: {exc}"
            raise InvalidRequestError(msg) from None
    return tuple(specs)


def _encode(codec: Any, item: object) -> str:
    try:
        text = codec.encode(item)
    except NotRestorableError:
        raise
    except Exception as exc:
        msg = (
            f"an item of type {type(item).__qualname__} cannot be written to the "
            f"journal ({type(exc).__name__}: {exc}); map over plain data"
        )
        raise NotRestorableError(msg) from exc
    if type(text) is not str:
        msg = (
            f"an item of type {type(item).__qualname__} is journaled as text, and "
            f"codec {codec.name!r} wrote {type(text).__name__}: arrays and frames "
            "travel as stage outputs, not mapped items; map over plain data (row "
            "numbers, keys, .tolist())"
        )
        raise NotRestorableError(msg)
    return text
