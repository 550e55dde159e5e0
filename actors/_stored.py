"""How an encoded output travels from its stage to the journal (`Encoded`, `Stored`).

Text (`str`), UTF-8 text built in pieces (`bytearray`), bytes a binary
codec wrote (`memoryview`, stored as a BLOB), or any of these wrapped in
`Stored` when the stage's own codec wrote it, so that the journal records
that codec's name beside the output.
"""

from __future__ import annotations

from typing import TypeAlias, final

__all__ = ["Encoded", "Stored"]


@final
class Stored:
    """An output encoded by a stage's own codec, and that codec's name."""

    __slots__ = ("codec", "data")

    def __init__(self, codec: str, data: str | bytearray | memoryview) -> None:
        self.codec = codec
        self.data = data


Encoded: TypeAlias = "str | bytearray | memoryview | Stored"
"""An output as the journal stores it (see the module's docstring)."""
