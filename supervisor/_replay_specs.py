"""Stage specs rebuilt from a journal's references: registered functions, never code.

A journal names each stage's function (and ``when`` predicate) by the name
it is registered under and its codec by name. Reading a run back, a
function this process does not know stands as `_unavailable`; resuming
(``strict``), every one must be found, and those that are not are listed
together (``missing``) so the user fixes them at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from dagvisor.actors import NotRestorableError, StageSpec

from ._records import spec_options
from ._replay_values import find_codec

if TYPE_CHECKING:
    from dagvisor.actors import Codec, StageRegistry

__all__ = ["SpecResolver"]


async def _unavailable(ctx: Any) -> None:  # pragma: no cover - never run
    """Stands for a stage function this process has not registered (read-only use)."""
    msg = "this stage's function is not registered in this process"
    raise NotRestorableError(msg)


@final
class SpecResolver:
    """Rebuilds the stage specs of one replay, each function and codec found once."""

    def __init__(self, registry: StageRegistry | None, codec: Codec | None) -> None:
        self.registry = registry
        self.codec = codec
        self.strict = codec is not None  # resuming, not reading
        self.missing: dict[str, str] = {}
        """What a resume could not find (a function name, a codec) -> a stage using it."""
        self.functions: set[Any] = set()
        """The functions found, for the allow-list of a resume."""
        self.codecs: dict[str, Any] = {}
        """Stage codecs by name, found once each."""

    def function(self, key: str | None, stage_name: str) -> Any:
        if key is None:
            if self.strict:
                self.missing.setdefault(f"<unnamed function of {stage_name!r}>", "")
            return _unavailable
        fn = None if self.registry is None else self.registry.lookup(key)
        if fn is None:
            if self.strict:
                self.missing.setdefault(key, stage_name)
            return _unavailable
        self.functions.add(fn)
        return fn

    def stage_codec(self, name: str | None, stage_name: str) -> Any:
        """The codec a stage was declared with, found by name (resuming only).

        Only what this process trusts: the runtime's codec, a codec one of
        its stages was declared with, or a built-in one that runs no code
        from the file; never a codec the file alone names.
        """
        if name is None or not self.strict:
            return None
        found = self.codecs.get(name)
        if found is None:
            found = find_codec(name, self.codec, self.registry)
            if found is None:
                self.missing.setdefault(f"codec {name!r}", stage_name)
                return None
            self.codecs[name] = found
        return found

    def spec(self, ref: Any) -> StageSpec:
        options = spec_options(ref)
        name = options["name"]
        when_key = options["when"]
        return StageSpec(
            codec=self.stage_codec(options["codec"], name),
            persist=options["persist"],
            fn=self.function(options["fn"], name),
            name=name,
            retries=options["retries"],
            backoff=options["backoff"],
            timeout=options["timeout"],
            when=None if when_key is None else self.function(when_key, name),
            trigger=options["trigger"],
            executor=options["executor"],
            limit=options["limit"],
            params=options["params"],
        )
