"""Checking and encoding a signal in its sender's task, decoding it in its receiver's.

A signal's name is a printable, non-empty plain string of at most
`MAX_SIGNAL_NAME` characters. Its payload is plain JSON data (what stage
parameters may be: see `_params`), at most `MAX_SIGNAL_BYTES` once encoded.
The supervisor sees only the text: it never runs a user's ``__eq__``,
``__hash__`` or encoder, and a receiver decodes its own copy.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

from ._errors import InvalidSignalError
from ._jsonform import Malformed, dump_json, load_json
from ._params import plain_json

__all__ = [
    "MAX_SIGNAL_BYTES",
    "MAX_SIGNAL_NAME",
    "check_signal_name",
    "decode_payload",
    "encode_payload",
    "summarize",
]

MAX_SIGNAL_NAME: Final = 200
"""The longest signal name, in characters."""

MAX_SIGNAL_BYTES: Final = 1_000_000
"""The largest payload, in bytes of its JSON text."""

_SUMMARY: Final = 80  # characters of the payload's text the audit trail shows


def check_signal_name(name: object) -> str:
    """``name`` as a plain string.

    Raises:
        InvalidSignalError: not a printable, non-empty string of at most
            `MAX_SIGNAL_NAME` characters.
    """
    if not isinstance(name, str):
        msg = f"a signal's name is a string, not {type(name).__qualname__}"
        raise InvalidSignalError(msg)
    plain = str.__str__(name)  # a subclass: its plain string, no method of its own
    if not plain.strip() or len(plain) > MAX_SIGNAL_NAME or not plain.isprintable():
        shown = ascii(plain[:60])
        msg = (
            f"signal name {shown} is not allowed: a signal's name is printable, "
            f"not blank, and at most {MAX_SIGNAL_NAME} characters"
        )
        raise InvalidSignalError(msg)
    return plain


def encode_payload(name: str, payload: object) -> tuple[str, str]:
    """The payload's JSON text and its summary for the audit trail.

    Raises:
        InvalidSignalError: the payload is not plain JSON data, or too large
            once encoded; the message names the value that is not.
    """

    def refuse(where: str, what: str) -> NoReturn:
        shown = f"its payload{where}" if where else "its payload"
        msg = (
            f"signal {name!r} cannot be sent: {shown} {what}; a payload is plain "
            "JSON data (None, booleans, whole numbers within 64 bits, finite "
            "floats, strings, lists and mappings with string keys)"
        )
        raise InvalidSignalError(msg)

    try:
        plain = plain_json({"": payload}, lambda where, what: refuse(where[4:], what))
    except RecursionError:  # pragma: no cover - plain_json does not recurse
        refuse("", "is nested too deeply")
    text = dump_json(plain[""])
    size = len(text.encode("utf-8"))
    if size > MAX_SIGNAL_BYTES:
        refuse(
            "",
            f"is {size:,} bytes of JSON, over the limit of {MAX_SIGNAL_BYTES:,}; "
            "send a reference to the data (a path, a key) instead",
        )
    return text, summarize(text)


def summarize(text: str) -> str:
    """What the audit trail shows of a payload's text: short, with its size if cut."""
    if len(text) <= _SUMMARY:
        return text
    return f"{text[: _SUMMARY - 20]}... ({len(text.encode('utf-8')):,} bytes)"


def decode_payload(text: str) -> Any:
    """The payload of a signal's text: a fresh copy of plain JSON data.

    Raises:
        InvalidSignalError: the text is not JSON (never so as sent; a journal
            is checked when it is read).
    """
    try:
        return load_json(text)
    except Malformed as exc:
        msg = f"a signal's payload cannot be read: {exc}"
        raise InvalidSignalError(msg) from None
