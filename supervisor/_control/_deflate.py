"""The event stream compressed once for every client (``Content-Encoding: deflate``).

A run's events are text that repeats itself (``event: stage_finished``,
``data: {"stage":...``): deflated, it is about a twentieth of its size. The
feed compresses each batch once, with one compressor whose state is reset
after each batch (a full flush), so that a batch's compressed bytes stand
alone and any client may start at any batch: each client is sent the zlib
header, the batches it reads as they were compressed, and at the end a
last block and the checksum of the text it was sent, combined from the
batches' checksums. A client that does not ask for ``deflate`` is sent the
text itself.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "HEADER",
    "accepts_deflate",
    "adler_combine",
    "alone",
    "last",
    "pack",
    "packer",
]

HEADER = b"\x78\x01"
"""A zlib stream's header: deflate, a 32 KiB window, the fastest level."""

_BASE = 65521


def adler_combine(first: int, second: int, second_size: int) -> int:
    """The Adler-32 checksum of two texts one after the other, from theirs
    (zlib's ``adler32_combine``; Python's zlib does not expose it)."""
    rem = second_size % _BASE
    low = (first & 0xFFFF) + (second & 0xFFFF) + _BASE - 1
    high = rem * (first & 0xFFFF) + (first >> 16) + (second >> 16) + _BASE - rem
    return (low % _BASE) | ((high % _BASE) << 16)


def packer() -> zlib._Compress:
    """A compressor of batches: raw deflate, reset after each (see `pack`)."""
    return zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)


def pack(compressor: zlib._Compress, text: bytes) -> bytes:
    """``text`` deflated into blocks that stand alone (a full flush after it)."""
    return compressor.compress(text) + compressor.flush(zlib.Z_FULL_FLUSH)


def alone(text: bytes) -> bytes:
    """``text`` deflated into blocks that stand alone, for one client."""
    return pack(packer(), text)


def last(text: bytes, checksum: int, size: int) -> bytes:
    """``text`` deflated as the stream's last block, then the zlib trailer:
    the Adler-32 checksum of all the text sent, ``checksum`` for the
    ``size`` bytes before ``text``."""
    compressor = packer()
    body = compressor.compress(text) + compressor.flush(zlib.Z_FINISH)
    whole = adler_combine(checksum, zlib.adler32(text), len(text))
    return body + struct.pack(">I", whole)


def accepts_deflate(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header asks for ``deflate`` (with a
    weight above 0; anything unreadable is taken as no)."""
    for item in header.split(",")[:64]:
        name, _, params = item.partition(";")
        if name.strip().lower() != "deflate":
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    return False
        return 0 < weight <= 1
    return False
