"""Named concurrency limits: the tokens stages hold while they run.

``runtime(limits={"db": 4})`` makes one `trio.CapacityLimiter` per name,
shared by every run of the runtime; a stage declared ``@stage(limit="db")``
takes a token before each attempt (before its executor slot, and before its
timer starts: waiting is queue time) and gives it back when its body has
really ended. A body that outlives its attempt (a Dask task, which cannot be
interrupted) keeps the token until it ends: the token is handed over to
whoever knows when that is (`Held.hand_over`).

A limit the runtime does not define is refused before anything runs:
`unknown_limit` is what runs, resumes and requesters check with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ._errors import UnknownLimitError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import trio

    from ._spec import StageSpec

__all__ = ["Held", "unknown_limit", "unknown_limits"]


def unknown_limit(
    spec: StageSpec, limits: Mapping[str, trio.CapacityLimiter]
) -> UnknownLimitError | None:
    """Why ``spec`` cannot run under ``limits``, or None if it can."""
    limit = spec.limit
    if limit is None or limit in limits:
        return None
    return UnknownLimitError(limit, spec.name, limits)


def unknown_limits(
    specs: Iterable[StageSpec], limits: Mapping[str, trio.CapacityLimiter]
) -> None:
    """Refuse the first of ``specs`` naming a limit ``limits`` lacks.

    Raises:
        UnknownLimitError: naming the stage and the limit.
    """
    for spec in specs:
        limit = spec.limit
        if limit is not None and limit not in limits:
            raise UnknownLimitError(limit, spec.name, limits)


@final
class Held:
    """One attempt's token of a named limit, given back exactly once.

    The attempt that took it gives it back when its body has ended
    (`release`), unless it handed it over to the slot its body runs in
    (`hand_over`), which gives it back when the body really ends.
    """

    __slots__ = ("_handed_over", "_limiter", "_released")

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._released = True
        self._handed_over = False

    async def acquire(self) -> None:
        """Wait for a token (cancellable: nothing is held until it returns)."""
        await self._limiter.acquire_on_behalf_of(self)
        self._released = False

    def hand_over(self) -> Held:
        """The holder of the body takes it over: `release` no longer gives it back."""
        self._handed_over = True
        return self

    def release(self) -> None:
        """Give the token back, if this attempt still holds it."""
        if not self._released and not self._handed_over:
            self._released = True
            self._limiter.release_on_behalf_of(self)

    def release_handed_over(self) -> None:
        """Give back a token handed over (`hand_over`): the body has ended."""
        if not self._released:
            self._released = True
            self._limiter.release_on_behalf_of(self)
