"""What `@stage` refuses: each option's full check, and the stage function's.

A declaration that cannot work is refused when it is made, with
`InvalidStageError` saying what to change. Each check also hands back the
value to keep, made plain: a subclass of ``str``, ``int`` or ``float`` may
redefine ``__eq__``, comparisons or ``__float__``, so its plain value is
what is checked and kept, and nothing a user's object does can make the
run see another value than the one checked. `dagvisor.actors._spec` runs
fast paths for the common plain values first and calls these for the rest.
"""

from __future__ import annotations

import math
from typing import Any, Final, cast

from ._callables import ASYNC, ASYNC_GENERATOR, GENERATORS, binds_one, flags, shown
from ._errors import InvalidStageError
from ._executors import Executor

__all__ = [
    "MOST_RETRIES",
    "TRIGGERS",
    "check_backoff",
    "check_codec",
    "check_executor",
    "check_function",
    "check_limit",
    "check_name",
    "check_persist",
    "check_retries",
    "check_timeout",
    "check_trigger",
    "check_when",
]

TRIGGERS = ("all_succeeded", "none_failed")
_EXECUTORS = ("loop", "thread", "process")
MOST_RETRIES: Final = 2**63 - 1
"""What a journal can store (SQLite's largest integer)."""


def check_name(name: str) -> str:
    if type(name) is str and name and not name.isspace():
        return name
    if not isinstance(name, str) or not str.strip(name):
        msg = f"a stage name must be a non-empty string, not {shown(name)}"
        raise InvalidStageError(msg)
    # A str subclass may redefine __eq__ and __hash__: keep the plain string.
    return str.__str__(name)


def _plain_text(value: object) -> str | None:
    """``value`` as a plain string (a str subclass may redefine ``__eq__``), or None."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return None


def _real(value: object) -> int | float | None:
    """``value`` as a plain int or float, or None if it is not one (a bool is not).

    A subclass of int or float may redefine comparisons and ``__float__``:
    its plain value is what is checked and kept.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return None


def _seconds(value: object) -> float | None:
    """``value`` as a float of seconds, or None if it is not a real number that fits one."""
    if type(value) is float:
        return value
    number = _real(value)
    if number is None:
        return None
    try:
        return float(number)
    except OverflowError:  # an int past the largest float
        return None


def check_retries(retries: object) -> int:
    if type(retries) is int and 0 <= retries <= MOST_RETRIES:
        return retries
    whole = _real(retries)
    if type(whole) is not int or not 0 <= whole <= MOST_RETRIES:
        msg = f"retries must be a whole number >= 0 (at most 2**63 - 1), not {shown(retries)}"
        raise InvalidStageError(msg)
    return whole


def check_backoff(backoff: object) -> float:
    seconds = _seconds(backoff)
    if seconds is None or not 0.0 <= seconds < math.inf:  # NaN fails both
        msg = f"backoff must be a number of seconds >= 0, not {shown(backoff)}"
        raise InvalidStageError(msg)
    return seconds


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    seconds = _seconds(timeout)
    if seconds is None or not seconds > 0.0:  # NaN fails too
        msg = f"timeout must be a number of seconds > 0 or None, not {shown(timeout)}"
        raise InvalidStageError(msg)
    return seconds


def check_limit(limit: object) -> str | None:
    """A limit's name: a non-empty plain string, or None for no limit."""
    if limit is None:
        return None
    text = _plain_text(limit)
    if text is None or not text.strip():
        msg = (
            "limit must be the name of a concurrency limit (a non-empty string, "
            f"defined by runtime(limits=...)) or None, not {shown(limit)}"
        )
        raise InvalidStageError(msg)
    return text


def check_when(when: object) -> None:
    if not callable(when):
        msg = f"when must be a predicate taking the stage context, not {shown(when)}"
        raise InvalidStageError(msg)
    if flags(when) & GENERATORS:
        msg = (
            f"when={shown(when)} is a generator (a function with `yield`): it "
            "must return true or false (an async predicate is awaited)"
        )
        raise InvalidStageError(msg)


def check_trigger(trigger: object) -> str:
    text = _plain_text(trigger)
    if text is None or text not in TRIGGERS:
        msg = f"trigger must be one of {TRIGGERS}, not {shown(trigger)}"
        raise InvalidStageError(msg)
    return text


def check_function(fn: object) -> int:
    """The code flags of a stage function, or `InvalidStageError` if it cannot work."""
    if not callable(fn):
        msg = f"@stage needs a function taking one argument (ctx), not {shown(fn)}"
        raise InvalidStageError(msg)
    if binds_one(fn) is False:
        msg = (
            f"stage function {shown(fn)} must accept exactly "
            "one positional argument, the stage context: def f(ctx): ..."
        )
        raise InvalidStageError(msg)
    found = flags(fn)
    if found & GENERATORS:
        kind = "an async generator" if found & ASYNC_GENERATOR else "a generator"
        msg = (
            f"stage function {shown(fn)} is {kind} (a function with `yield`): "
            "calling it runs none of its body, so the stage would succeed without "
            "doing its work; return the value instead (collect what it yields "
            "into a list)"
        )
        raise InvalidStageError(msg)
    return found


def _is_executor(value: object) -> bool:
    try:
        return isinstance(value, Executor)
    except Exception:  # the protocol check reads attributes, which may raise
        return False


def check_executor(fn: object, found: int, executor: object) -> str | Executor:
    """The executor asked for, as a plain string or an `Executor`, if ``fn`` can run on it.

    ``found`` is ``fn``'s code flags (`check_function`).
    """
    text = _plain_text(executor)
    if (text is None and not _is_executor(executor)) or (
        text is not None and text not in _EXECUTORS
    ):
        msg = (
            f"executor must be one of {_EXECUTORS} or an Executor such as "
            f"DaskExecutor, not {shown(executor)}"
        )
        raise InvalidStageError(msg)
    on_loop = text == "loop"  # a plain string: never calls an Executor's __eq__
    if not on_loop and found & ASYNC:
        msg = (
            f"stage {shown(fn)} is `async def`: it runs on the event loop, not on "
            f"executor {shown(executor)}; make it a plain function, or keep it async "
            "and call `await ctx.run_in(executor, fn, ...)` for the heavy part"
        )
        raise InvalidStageError(msg)
    if on_loop and not found & ASYNC:
        msg = (
            f"stage {shown(fn)} is a plain function and would "
            "block the event loop; make it `async def` or use executor='thread'"
        )
        raise InvalidStageError(msg)
    if text is None:
        return cast("Executor", executor)  # checked above
    return text


def check_codec(codec: object) -> Any:
    """A stage's codec: a built-in one by name, or an object with the codec methods.

    Raises:
        InvalidStageError: an unknown name, or an object that is not a codec.
    """
    from ._datacodec import BUILT_IN, codec_named

    name = _plain_text(codec)
    if name is not None:
        if name not in BUILT_IN:
            msg = (
                f"no built-in codec is named {shown(codec)}; choose one of "
                f"{', '.join(BUILT_IN)}, or pass a codec object"
            )
            raise InvalidStageError(msg)
        return codec_named(name)
    try:
        named = type(getattr(codec, "name", None)) is str
        usable = callable(getattr(codec, "encode", None)) and callable(
            getattr(codec, "decode", None)
        )
    except Exception:  # a hostile attribute: not a codec
        named = usable = False
    if not named or not usable:
        msg = (
            f"codec must be a codec (a name str, encode and decode methods, as "
            f"JsonCodec) or one of {', '.join(BUILT_IN)}, not {shown(codec)}"
        )
        raise InvalidStageError(msg)
    return codec


def check_persist(persist: object) -> bool:
    """``persist``: True or False, nothing else."""
    if type(persist) is not bool:
        msg = f"persist must be True or False, not {shown(persist)}"
        raise InvalidStageError(msg)
    return persist
