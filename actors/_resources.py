"""What a stage attempt opened with ``ctx.enter``, and how it is closed.

Every resource entered on a stage's behalf (by its body, by an interceptor
hook, from a worker thread through ``trio.from_thread``) goes on the open
attempt's list, and is closed when the part of the attempt that entered it
ends, however it ends: in reverse order, each one shielded from
cancellation and bounded by the runtime's ``cleanup_timeout`` on its own,
so one exit that hangs neither uses up the others' time nor leaves them
open.

Each ``__aexit__`` is told how the attempt ended (the exception, or none),
so a transaction can roll back a failed attempt. Its return value is
ignored: a resource cannot turn a failed attempt into a success.

What a resource that does not close does to the attempt:

* The attempt had succeeded: it fails with `ResourceCloseError` naming the
  stage and the resource (retried if retries are left). Closing may be what
  commits the work, so an exit that raised or was abandoned is never
  reported as a success.
* The attempt had failed: it keeps its own error; the close failure is
  added to it as a note.
* The attempt was cancelled: it stays cancelled; the close failure is
  logged as a warning on the ``dagvisor`` logger.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from ._stage_errors import ResourceCloseError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

__all__ = ["CLOSED", "Exits", "close_all", "enter_into"]

T = TypeVar("T")

logger = logging.getLogger("dagvisor")

Exits = list[tuple[Any, "Callable[..., Awaitable[Any]]"]]
"""The open resources of an attempt with their ``__aexit__``, in entry order."""

CLOSED: Final[Exits] = []
"""Stands for the resources of a stage that has ended: nothing may be entered."""


async def enter_into(exits: Exits, resource: AbstractAsyncContextManager[T]) -> T:
    """Enter ``resource`` and remember to close it.

    Raises:
        TypeError: ``resource`` is not an async context manager.
    """
    kind = type(resource)
    try:
        aenter = kind.__aenter__  # checked here, at run time: any object may come
        aexit = kind.__aexit__
    except AttributeError:
        msg = (
            f"ctx.enter needs an async context manager (what `async with` takes), "
            f"not {resource!r}"
        )
        raise TypeError(msg) from None
    value: T = await aenter(resource)
    exits.append((resource, aexit))
    return value


async def close_all(
    stage: str, exits: Exits, ended_by: BaseException | None, bound: float
) -> None:
    """Close every resource in ``exits``, last entered first; empty the list.

    ``ended_by`` is how the part of the attempt that entered them ended;
    ``bound`` the seconds each one gets to close (the cleanup timeout).

    Raises:
        ResourceCloseError: ``ended_by`` is None and a resource did not close
            (the first one; the others are added to it as notes).
    """
    failures: list[ResourceCloseError] = []
    interrupt: BaseException | None = None
    info = (None, None, None)
    if ended_by is not None:
        info = (type(ended_by), ended_by, ended_by.__traceback__)  # type: ignore[assignment]
    while exits:
        resource, aexit = exits.pop()
        shown = _shown(resource)
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = bound
            try:
                await aexit(resource, *info)
            except BaseException as exc:
                if exc is ended_by:
                    pass  # re-raised as it was given: it is the attempt's own error
                elif isinstance(exc, Exception):
                    failures.append(ResourceCloseError(stage, shown, error=exc))
                    failures[-1].__cause__ = exc
                elif isinstance(exc, trio.Cancelled):
                    raise  # our own deadline (caught by this scope just below)
                else:
                    # KeyboardInterrupt, SystemExit...: close the others first.
                    interrupt = interrupt or exc
        if scope.cancelled_caught:
            failures.append(ResourceCloseError(stage, shown, timeout=bound))
    if interrupt is not None:
        raise interrupt
    if not failures:
        return
    if ended_by is None:
        first = failures[0]
        for other in failures[1:]:
            first.add_note(f"also: {other}")
        raise first
    if isinstance(ended_by, Exception):
        for failure in failures:
            ended_by.add_note(f"while the attempt ended: {failure}")
    else:
        for failure in failures:
            logger.warning("%s (the attempt was cancelled)", failure)


def _shown(resource: object) -> str:
    try:
        text = repr(resource)
    except Exception:  # a hostile __repr__ must not hide which resource it was
        return f"<{type(resource).__qualname__} object>"
    return text if len(text) <= 200 else text[:197] + "..."
