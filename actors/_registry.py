"""The stage registry: the names under which stage functions can be found again.

A journal stores a stage by a registered name, never as pickled code or an
import path to follow: after a crash, the resuming process finds each stage's
function in its own registry, which `@stage` fills when the user's modules
are imported (or `StageRegistry.register` fills explicitly). A stage whose
function could not be found that way is refused when it is added to a
journaled run, not when the checkpoint is written.
"""

from __future__ import annotations

import threading
from collections import deque
from types import FunctionType
from typing import TYPE_CHECKING, Any, final

from ._journal_errors import NotRestorableError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["StageRegistry", "default_registry", "function_key"]


def function_key(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` for a module-level function, else None.

    Never raises: an object whose ``__module__`` or ``__qualname__`` raises,
    or is not a string, has no stable name.
    """
    try:
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", None)
    except Exception:  # a hostile attribute: no stable name
        return None
    if (
        type(module) is not str
        or type(qualname) is not str
        or not module
        or not qualname
        or "<locals>" in qualname
        or "<lambda>" in qualname
    ):
        return None
    return f"{module}:{qualname}"


@final
class StageRegistry:
    """Registered stage functions (and ``when`` predicates) by stable name.

    `stage` hands every function it declares to `remember`, which only
    queues it: its name is worked out, and it is filed under it, the first
    time the registry is consulted (`lookup`, `key_of`)
    or written to (`register`), in the order the functions came. Declaring
    200,000 stages in a program that never journals a run thus never pays
    for naming them, and a resumed run still finds each function it needs.
    """

    __slots__ = (
        "_codecs",
        "_declared",
        "_functions",
        "_keys",
        "_lock",
        "_queued",
        "_waiting",
    )

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._codecs: dict[str, Any] = {}
        """Codecs stages were declared with, by name (the last one of a name)."""
        self._waiting: deque[tuple[Callable[..., Any], Any]] = deque()
        """Remembered functions not yet filed under their names, oldest first."""
        self._queued: set[FunctionType] = set()
        """The plain functions in ``_waiting``: one entry each, however often declared."""
        self._declared: dict[Callable[..., Any], Any] = {}
        """The first stage spec each filed function was declared with (`declared`)."""
        self._lock = threading.Lock()
        """Held while the queue is filed: two threads filing it keep its order."""
        self._keys: dict[int, tuple[Callable[..., Any], str]] = {}
        """`key_of`'s answers for registered functions, by ``id`` (each checked by
        identity before it is trusted); forgotten whenever the registry changes."""

    def remember(self, fn: Callable[..., Any], spec: Any = None) -> None:
        """Register ``fn`` under ``module:qualname``, if it has one, before the next look-up.

        What `stage` calls for every declaration, with the stage spec it made
        (see `declared`); never raises. A lambda, a closure or a nested
        function is simply not registered (a journaled run refuses it when it
        is added, saying so).
        """
        if type(fn) is not FunctionType:  # an object with __call__, a builtin...
            key = function_key(fn)
            if key is not None:
                self._file()
                self._functions[key] = fn
                self._keys.clear()
                if spec is not None:
                    self._declared.setdefault(fn, spec)
            return
        qualname = fn.__qualname__
        if "<locals>" in qualname or "<lambda>" in qualname or fn in self._queued:
            return  # a closure or a lambda, which could not be found again; or queued
        self._queued.add(fn)
        self._waiting.append((fn, spec))

    def remember_codec(self, codec: Any) -> None:
        """Keep a codec a stage was declared with, so that a resume finds it by name.

        Only what this process declared is found: a journal naming a codec
        makes a resume use one of these (or a built-in one), never another.
        """
        self._codecs[codec.name] = codec

    def codec(self, name: str) -> Any:
        """The codec of that name a stage was declared with, or None."""
        return self._codecs.get(name)

    def _file(self) -> None:
        """File the remembered functions under their names, oldest first."""
        with self._lock:
            waiting, functions = self._waiting, self._functions
            declared = self._declared
            if waiting:
                self._keys.clear()
            while waiting:
                fn, spec = waiting.popleft()
                key = function_key(fn)
                if key is not None:
                    functions[key] = fn
                    if spec is not None and fn not in declared:
                        declared[fn] = spec
            self._queued.clear()

    def register(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        """Register ``fn`` under ``name`` (default ``module:qualname``); return the name."""
        key = name if name is not None else function_key(fn)
        if key is None:
            msg = (
                f"{fn!r} has no stable name (a lambda, a closure or a nested function); "
                "define it at module level or register it with an explicit name"
            )
            raise NotRestorableError(msg)
        self._file()  # what was declared before is filed before this
        self._functions[key] = fn
        self._keys.clear()
        return key

    def lookup(self, key: str) -> Callable[..., Any] | None:
        """The function registered as ``key``, or None."""
        if self._waiting:
            self._file()
        return self._functions.get(key)

    def declared(self, fn: Callable[..., Any]) -> Any:
        """The stage spec ``fn`` was first declared with by `stage`, or None.

        What a stage named by its registered function alone (the control
        API) runs as: the options it was declared with, not the defaults.
        """
        if self._waiting:
            self._file()
        return self._declared.get(fn)

    def key_of(self, fn: Callable[..., Any]) -> str | None:
        """The name ``fn`` is registered under, if it is."""
        if self._waiting:
            self._file()
        known = self._keys.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        found = None
        key = function_key(fn)
        if key is not None and self._functions.get(key) is fn:
            found = key
        else:
            for name, registered in self._functions.items():
                if registered is fn:
                    found = name
                    break
        if found is not None:  # registered: the registry keeps it alive anyway
            self._keys[id(fn)] = (fn, found)
        return found


default_registry = StageRegistry()
"""The registry `@stage` fills."""
