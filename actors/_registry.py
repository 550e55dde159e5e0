"""The stage registry: how a journal names the code of a stage.

A journal stores a stage by a registered name, never as pickled code or an
import path to follow: after a crash, the resuming process finds each stage's
function in its own registry, which `@stage` fills when the user's modules
are imported (or `StageRegistry.register` fills explicitly). A stage whose
function could not be found that way is refused when it is added to a
journaled run, not when the checkpoint is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from ._errors import NotRestorableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._spec import StageSpec

__all__ = ["StageRegistry", "default_registry", "function_key", "spec_ref"]


def function_key(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` for a module-level function, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return None
    return f"{module}:{qualname}"


@final
class StageRegistry:
    """Registered stage functions (and ``when`` predicates) by stable name."""

    __slots__ = ("_functions",)

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    def register(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        """Register ``fn`` under ``name`` (default ``module:qualname``); return the name."""
        key = name if name is not None else function_key(fn)
        if key is None:
            msg = (
                f"{fn!r} has no stable name (a lambda, a closure or a nested function); "
                "define it at module level or register it with an explicit name"
            )
            raise NotRestorableError(msg)
        self._functions[key] = fn
        return key

    def lookup(self, key: str) -> Callable[..., Any] | None:
        """The function registered as ``key``, or None."""
        return self._functions.get(key)

    def key_of(self, fn: Callable[..., Any]) -> str | None:
        """The name ``fn`` is registered under, if it is."""
        key = function_key(fn)
        if key is not None and self._functions.get(key) is fn:
            return key
        for name, registered in self._functions.items():
            if registered is fn:
                return name
        return None

    def check_restorable(self, spec: StageSpec) -> None:
        """Refuse a stage that a resumed run could not find again.

        Raises:
            NotRestorableError: saying which function and how to fix it.
        """
        for role, fn in (("function", spec.fn), ("when predicate", spec.when)):
            if fn is None:
                continue
            if self.key_of(fn) is None:
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
    """How a journal names a stage spec: registered function names and options."""
    return {
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


default_registry = StageRegistry()
"""The registry `@stage` fills."""
