"""Carrying out what a handled change left to the event loop.

`CarryOut` is the part of `GraphSupervisor` that serves a change request
and then does what the change could not do as pure graph logic: cancel the
scopes it asked to cancel, end the stream, stop the run; and the same after
a streamed pipeline's refill. The message loop and its dispatch stay in
`_supervisor`; how a change is validated and applied is `_changes`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagvisor.actors._messages import CancelRun

from ._run_end import RunEnd

if TYPE_CHECKING:
    from dagvisor.actors._messages import Request

    from ._options import FailurePolicy
    from ._stream import StreamFeed

__all__ = ["CarryOut"]


class CarryOut(RunEnd):
    """How a `GraphSupervisor` carries out changes (see the module's docstring)."""

    # Set by GraphSupervisor.__init__.
    _policy: FailurePolicy
    _stream: StreamFeed | None

    def _start_ready(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _serve(self, request: Request) -> None:
        if self._stopping:
            # The run is ending (a failure under fail-fast, or a cancel): a new
            # stage would never start, so the change is refused, not dropped.
            self._changes.refuse_closed(request)
            return
        change = self._changes.serve(request)
        if change is None:
            return
        if change.stop is not None and isinstance(request, CancelRun):
            self._cancel_reason = request.reason
        # Carry out what an applied change left to the event loop.
        if change.cancel is not None:
            for scope in change.cancel:
                scope.cancel()
        if change.ends_stream and self._stream is not None:
            self._stream.end()
        self.core.after_change()
        if change.stop is not None:
            self._stop(change.stop)

    def _refill(self, stream: StreamFeed) -> None:
        failure = stream.refill()
        self.core.after_change()
        if failure is not None:
            name, error = failure
            self.errors[name] = error
            if self._policy == "cancel":
                self._stop("failed")
        if self.core.ready:
            self._start_ready()
