"""Stage specs rebuilt from a journal's references (registered functions, never
code), and the stages each change added, mapped items with their parameters.

A journal names each stage's function (and ``when`` predicate) by the name
it is registered under and its codec by name. Reading a run back, a
function this process does not know stands as `_unavailable`; resuming
(``strict``), every one must be found, and those that are not are listed
together (``missing``) so the user fixes them at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, final

from dagvisor.actors import NotRestorableError, StageSpec
from dagvisor.actors._prepare import fingerprint

from ._records import BadRecord, spec_options, text
from ._replay_values import find_codec

if TYPE_CHECKING:
    from collections.abc import Callable

    from dagvisor.actors import Codec, StageRegistry

    from ._audit import AuditRecord

__all__ = ["Made", "SpecResolver"]

Made: TypeAlias = tuple[StageSpec, str | None, str | None, object]
"""A stage a change added: its spec, encoded item, key and the item's fingerprint."""


async def _unavailable(ctx: Any) -> None:  # pragma: no cover - never run
    """Stands for a stage function this process has not registered (read-only use)."""
    msg = "this stage's function is not registered in this process"
    raise NotRestorableError(msg)


@final
class SpecResolver:
    """Rebuilds the stage specs of one replay, each function and codec found once."""

    def __init__(
        self,
        registry: StageRegistry | None,
        codec: Codec | None,
        fail: Callable[[str], NoReturn],
    ) -> None:
        self.registry = registry
        self.fail = fail
        """Refuses the journal, saying what is wrong (`JournalError`)."""
        self.pending_items: list[tuple[str, Any]] = []
        """"item" events awaiting their expansion's record: (encoded item, params)."""
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

    def added(self, record: AuditRecord, request: dict[str, Any]) -> dict[str, Made]:
        """The stages a change added: spec, encoded item (mapped), key, fingerprint."""
        match record.kind:
            case "add_stage":
                spec = self.spec(request["spec"])
                return {spec.name: (spec, None, None, None)}
            case "expand":
                return self.mapped(record, request)
            case "replace_pending":
                stages = request["stages"]
                if type(stages) is not list:
                    msg = "its stages are not a list"
                    raise BadRecord(msg)
                specs = [self.spec(entry["spec"]) for entry in stages]
                return {spec.name: (spec, None, None, None) for spec in specs}
            case "change_set":
                parts = request["parts"]
                if type(parts) is not list:
                    msg = "its parts are not a list"
                    raise BadRecord(msg)
                made: dict[str, Made] = {}
                for part in parts:
                    if part["kind"] == "add_stage":
                        spec = self.spec(part["spec"])
                        made[spec.name] = (spec, None, None, None)
                    elif part["kind"] == "expand":
                        made.update(self.mapped(record, part))
                return made
            case _:
                self.fail(f"a {record.kind} record cannot add stages")

    def mapped(self, record: AuditRecord, request: dict[str, Any]) -> dict[str, Made]:
        """The stages an expansion added (their items decoded later, in `finish`)."""
        spec = self.spec(request["spec"])
        keys = request["keys"]
        items = request["items"]
        if type(items) is dict and type(items.get("events")) is int:
            # Written as the "item" events just before the record.
            count = items["events"]
            pending = self.pending_items
            if not 0 <= count <= len(pending):
                self.fail(f"expand record {record.seq} lacks its items")
            if count == 0:
                return {}  # asked again: it added nothing
            items, self.pending_items = pending[:count], pending[count:]
        elif type(items) is list:  # written inside the record (format 2)
            items = [(item, None) for item in items]
        if type(keys) is not list or type(items) is not list:
            self.fail(f"expand record {record.seq} lacks its keys or items")
        if len(items) != len(keys):
            self.fail(f"expand record {record.seq} lacks its items")
        made: dict[str, Made] = {}
        for key, (item, params) in zip(keys, items, strict=True):
            encoded = text(item, "item")
            name = f"{spec.name}[{key}]"
            made[name] = (
                spec if params is None else spec.named(spec.name, params=params),
                encoded,
                str(key),
                fingerprint(None, encoded),
            )
        return made

    def refuse_missing(self, run_id: str) -> None:
        """Refuse a resume that could not find some of its functions or codecs.

        Raises:
            NotRestorableError: naming the first five, and how many more.
        """
        missing = self.missing
        if not missing:
            return
        shown = ", ".join(
            f"{key!r} (stage {stage!r})" if stage else key
            for key, stage in list(missing.items())[:5]
        )
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        msg = (
            f"run {run_id!r} cannot be resumed: its stage functions {shown}{more} "
            "are not registered in this process; import the modules that define them "
            "(or StageRegistry.register them) before resuming"
        )
        raise NotRestorableError(msg)
