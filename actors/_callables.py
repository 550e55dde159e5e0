"""What a stage function is: what calling it gives, whether ``fn(ctx)`` binds.

Declaring a stage asks both of every function, so a plain function is read
from its code object directly (``inspect`` costs several times more), and
only other callables (objects with ``__call__``, builtins, partials, bound
methods) go through ``inspect``. A user's callable may answer these
questions with an exception (a ``__signature__`` or ``__name__`` that
raises): none escapes from here; what cannot be told is found out when the
stage runs.
"""

from __future__ import annotations

import inspect
from types import CodeType, FunctionType
from typing import Any, Final

__all__ = ["ASYNC", "GENERATORS", "binds_one", "flags", "shown"]

ASYNC: Final = inspect.CO_COROUTINE
"""Calling the function gives a coroutine (``async def``)."""

ASYNC_GENERATOR: Final = inspect.CO_ASYNC_GENERATOR
GENERATORS: Final = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
"""Calling the function gives a generator: none of its body runs."""

_SHOWN_KEPT: Final = 200


def shown(value: object) -> str:
    """``repr(value)`` for a message, cut short; never raises.

    A function (or anything with a qualified name) shows as that name. A
    ``__repr__`` that raises (or an integer too long to print) shows as
    the type's name.
    """
    try:
        qualname = getattr(value, "__qualname__", None)
        text = repr(qualname if type(qualname) is str and qualname else value)
    except Exception:  # a hostile __repr__ must not replace the refusal
        return f"<{type(value).__qualname__} object>"
    return text if len(text) <= _SHOWN_KEPT else text[: _SHOWN_KEPT - 3] + "..."


def flags(fn: Any) -> int:
    """The code flags that say what calling ``fn`` gives: a coroutine, a generator...

    A plain function's own flags (the common case, read directly);
    otherwise the flags of what ``inspect`` finds behind it, or of an
    object's ``__call__``.
    """
    if type(fn) is FunctionType:
        found: int = fn.__code__.co_flags
        return found
    try:
        found = _inspected_flags(fn)
        if found or isinstance(fn, type) or inspect.isroutine(fn):
            return found
    except Exception:  # an attribute that raises (inspect reads __name__)
        pass
    try:
        # An object with a __call__ method: one level down, never further
        # (a __call__ that is itself such an object would loop forever).
        return _inspected_flags(type(fn).__call__)
    except Exception:  # nothing can be told
        return 0


def _inspected_flags(fn: Any) -> int:
    found = 0
    if inspect.iscoroutinefunction(fn):
        found |= ASYNC
    if inspect.isasyncgenfunction(fn):
        found |= ASYNC_GENERATOR
    if inspect.isgeneratorfunction(fn):
        found |= inspect.CO_GENERATOR
    return found


def binds_one(fn: Any) -> bool | None:
    """Whether ``fn(ctx)`` binds; None when it cannot be told (no signature)."""
    if type(fn) is FunctionType:  # from the code object: inspect.signature is slow
        return _code_binds_one(fn.__code__, fn.__defaults__, fn.__kwdefaults__)
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return False
    except Exception:
        # No signature (some builtins), inspect looping on an odd __call__,
        # or an attribute that raises: find out at run time.
        return None
    return True


def _code_binds_one(
    code: CodeType, defaults: tuple[Any, ...] | None, kwdefaults: dict[str, Any] | None
) -> bool:
    if code.co_kwonlyargcount > len(kwdefaults or ()):
        return False  # a keyword-only argument without a default
    if code.co_argcount == 0:
        return bool(code.co_flags & inspect.CO_VARARGS)
    return code.co_argcount - len(defaults or ()) <= 1
