"""How a journal names a stage: registered function names and options, never code.

A journal stores a stage by the names its functions are registered under
(see `StageRegistry`): a resumed run finds each function again in its own
process. A stage whose functions could not be found that way is refused
when it is added to a journaled run (`check_restorable`), not when the
checkpoint is written. `SpecReferences` is what a journaled run hands its
requesters (``RunEnv.prepare_spec``): they check and name the specs of
their requests in their own task, before sending them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from dagvisor.actors import DagvisorError, NotRestorableError

if TYPE_CHECKING:
    from dagvisor.actors import StageRegistry, StageSpec

__all__ = ["SpecReferences", "check_restorable", "spec_ref"]


def check_restorable(registry: StageRegistry, spec: StageSpec) -> None:
    """Refuse a stage that a resumed run could not find again.

    Raises:
        NotRestorableError: saying which function and how to fix it.
    """
    for role, fn in (("function", spec.fn), ("when predicate", spec.when)):
        if fn is None:
            continue
        if registry.key_of(fn) is None:
            shown = getattr(fn, "__qualname__", repr(fn))
            msg = (
                f"stage {spec.name!r} cannot be journaled: its {role} {shown!r} is not "
                "registered under a stable name (a lambda, a closure or a nested "
                "function cannot be found again after a crash); define it at module "
                "level with @stage, or register it: StageRegistry.register(fn, name=...)"
            )
            raise NotRestorableError(msg)
    if not isinstance(spec.executor, str | type(None)):
        msg = (
            f"stage {spec.name!r} cannot be journaled with executor {spec.executor!r}; "
            "use 'thread' or 'process', or run without a journal"
        )
        raise NotRestorableError(msg)


def spec_ref(spec: StageSpec, registry: StageRegistry | None) -> dict[str, Any]:
    """How a journal names a stage spec: registered function names and options.

    A stage's own codec is named (a resume finds it among the codecs this
    process declared, or the built-in ones), and ``persist`` is recorded
    when false; journals written before either existed simply lack them.
    Parameters (plain JSON data, see `check_params`) are kept as they are,
    under ``"params"``, only when the stage has some.
    A named limit is recorded only when the stage has one (``"limit"``).
    """
    ref: dict[str, Any] = {
        "name": spec.name,
        "fn": None if registry is None else registry.key_of(spec.fn),
        "when": None
        if registry is None or spec.when is None
        else registry.key_of(spec.when),
        "retries": spec.retries,
        "backoff": spec.backoff,
        "timeout": spec.timeout,
        "trigger": spec.trigger,
        "executor": spec.executor if isinstance(spec.executor, str) else None,
    }
    if spec.codec is not None:
        ref["codec"] = spec.codec.name
    if not spec.persist:
        ref["persist"] = False
    if spec.params:
        ref["params"] = spec.params
    if spec.limit is not None:
        ref["limit"] = spec.limit
    return ref


@final
class SpecReferences:
    """Checks a spec restorable and names it, for a requester of a journaled run."""

    __slots__ = ("_registry",)

    def __init__(self, registry: StageRegistry) -> None:
        self._registry = registry

    def __call__(
        self, spec: StageSpec
    ) -> tuple[dict[str, Any] | None, DagvisorError | None]:
        """The spec's journal reference, or why a resume could not find it again."""
        try:
            check_restorable(self._registry, spec)
            return spec_ref(spec, self._registry), None
        except DagvisorError as exc:
            return None, exc
