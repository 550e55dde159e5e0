"""What every stage of one run shares: the way to its supervisor, limits, hooks."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import InvalidRequestError

if TYPE_CHECKING:
    from types import MappingProxyType

    import trio

    from ._errors import DagvisorError
    from ._messages import Message
    from ._spec import StageSpec

__all__ = ["Hook", "Hooks", "RunEnv"]


Hook = tuple[str, Callable[..., Awaitable[Any]]]
"""An interceptor hook, with the requester name its changes are audited under."""


@attrs.frozen
class Hooks:
    """The interceptor hooks of a runtime, in call order, grouped by moment."""

    before: tuple[Hook, ...] = ()
    after: tuple[Hook, ...] = ()
    error: tuple[Hook, ...] = ()

    @classmethod
    def from_interceptors(cls, interceptors: Iterable[object]) -> Hooks:
        """Collect the ``before_stage``/``after_stage``/``on_error`` methods present."""
        before: list[Hook] = []
        after: list[Hook] = []
        error: list[Hook] = []
        for interceptor in interceptors:
            label = getattr(interceptor, "name", None) or type(interceptor).__name__
            requester = f"interceptor:{label}"
            found = False
            for attr, into in (
                ("before_stage", before),
                ("after_stage", after),
                ("on_error", error),
            ):
                hook = getattr(interceptor, attr, None)
                if hook is None:
                    continue
                if not inspect.iscoroutinefunction(hook):
                    msg = f"interceptor {label!r}: {attr} must be an async method (async def)"
                    raise InvalidRequestError(msg)
                into.append((requester, hook))
                found = True
            if not found:
                msg = (
                    f"interceptor {label!r} has none of before_stage, after_stage, on_error; "
                    "define at least one as an async method"
                )
                raise InvalidRequestError(msg)
        return cls(tuple(before), tuple(after), tuple(error))

    def __bool__(self) -> bool:
        return bool(self.before or self.after or self.error)


@attrs.define(eq=False)
class RunEnv:
    """What every stage of one run shares: the way to its supervisor, and limits.

    Attributes:
        run_id: the run's id.
        outbox: the supervisor's inbox (a clone owned by the run).
        run_inputs: the inputs the run was started with, read-only.
        thread_limiter: bounds how many thread stages run at once.
        cleanup_timeout: seconds a stage's resources get to close.
        hooks: interceptor hooks called around every stage attempt.
        limits: the runtime's named concurrency limits, by name (shared by
            all its runs).
        process_limiter: bounds how many process stages run at once
            (``runtime(process_workers=...)``); None for trio-parallel's
            default, one per CPU.
    """

    run_id: str
    outbox: trio.MemorySendChannel[Message]
    run_inputs: MappingProxyType[str, Any]
    thread_limiter: trio.CapacityLimiter
    cleanup_timeout: float
    hooks: Hooks = Hooks()
    default_executor: Any = "thread"
    """Where plain-function stages without an executor of their own run."""
    codec: Any = None
    """With a journal: encodes each output as the stage ends (a `Codec`)."""
    prepare_spec: (
        Callable[[StageSpec], tuple[dict[str, Any] | None, DagvisorError | None]] | None
    ) = None
    """With a journal: checks a spec restorable and gives the reference the journal
    stores (or why it cannot); called by requesters in their own task."""
    check_output: (
        Callable[[str | bytearray | memoryview | Sequence[str], str], None] | None
    ) = None
    """With a journal: ``check_output(encoded, what)`` raises `OutputTooLargeError`
    for an encoded value (or the items one record holds) it cannot store."""
    limits: Mapping[str, trio.CapacityLimiter] = attrs.Factory(dict)
    process_limiter: trio.CapacityLimiter | None = None
    has_hooks: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.has_hooks = bool(self.hooks)
