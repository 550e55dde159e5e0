"""How a replay decodes the values a journal stores: outputs, mapped items, inputs.

Each output is decoded by the codec that wrote it: the run's (named in the
run's record), or the stage's own (named beside the output). Reading a run
back rebuilds no class and runs no codec's code but the built-in readers:

* `JsonCodec` text (the ``json`` and ``data`` codecs' text) becomes plain
  data, with `Undecoded` for each class value;
* `DataCodec` bytes (``.npy``, Arrow IPC) become numpy arrays, pandas
  frames and pyarrow tables, read by those libraries with every check of
  `dagvisor.actors._dataforms` (an `Undecoded` summary where one is
  missing);
* a value written by any other codec (a pickle among them) is `Undecoded`:
  a pickle is never unpickled.

A resume decodes with the codec that wrote each value, found among those
the process trusts (`find_codec`), allowing the classes registered with it
and those named by the return annotations of the run's stage functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from dagvisor.actors import DagvisorError, default_registry
from dagvisor.actors._codec import JsonCodec, Undecoded, read_value
from dagvisor.actors._datacodec import DataCodec
from dagvisor.actors._dataforms import decode_binary
from dagvisor.actors._declared import declared_types

from ._records import reason

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from dagvisor.actors import Codec, StageRegistry

__all__ = ["find_codec", "value_decoder"]

_READABLE = ("json", "data")
"""Codecs whose values the reading paths decode (with the built-in readers)."""


def find_codec(
    name: str, runtime_codec: Codec | None, registry: StageRegistry | None
) -> Any:
    """The codec of that name a resume may decode with, or None.

    The runtime's own; one a stage of this process was declared with (in
    the runtime's registry, or the default one); or a built-in one that
    runs no code from the file (``json``, ``data``). Never a pickle the
    process did not opt into.
    """
    if runtime_codec is not None and runtime_codec.name == name:
        return runtime_codec
    for where in (registry, default_registry):
        found = None if where is None else where.codec(name)
        if found is not None:
            return found
    if name == "json":
        return JsonCodec()
    if name == "data":
        return DataCodec()
    return None


def _read(stored: str | bytes, codec: str) -> Any:
    """A stored value as data (reading paths): see the module's docstring."""
    if codec not in _READABLE:
        if type(stored) is str:
            return Undecoded(stored, codec=codec)
        return Undecoded(
            f"{len(stored):,} bytes written by codec {codec!r}", codec=codec
        )
    if type(stored) is str:
        return read_value(stored)
    if codec == "json" or type(stored) is not bytes:
        msg = "JsonCodec writes text, and this value is bytes"
        raise ValueError(msg)
    return decode_binary(stored)


def value_decoder(
    codec: Codec | None,
    functions: Collection[Any],
    written_with: str,
    fail: Callable[[str], NoReturn],
    codecs: dict[str, Any],
) -> Callable[[str | bytes, str, str | None], Any]:
    """A function from (stored value, what it is, its codec's name) to the value.

    Args:
        codec: the runtime's codec for a resume; None to read the run back.
        functions: the run's stage functions (their annotations allow classes).
        written_with: the name of the codec the run was journaled with (used
            for values that name no codec of their own).
        fail: raises the `JournalError` for a value that cannot be decoded.
        codecs: the stage codecs the resume found, by name.
    """
    if codec is not None:
        allow: frozenset[type] = frozenset().union(
            *(declared_types(fn) for fn in functions)
        )

        def decode(stored: str | bytes, what: str, name: str | None) -> Any:
            using: Any = codec
            if name is not None and name != codec.name:
                using = codecs.get(name)
                if using is None:
                    fail(
                        f"the {what} was written by codec {name[:60]!r}, which no "
                        "stage of the run declares"
                    )
            try:
                return using.decode(stored, allow=allow)
            except DagvisorError:
                raise
            except Exception as exc:  # the codec's own error, on a damaged value
                fail(f"the {what} cannot be decoded ({reason(exc)})")

        return decode

    def read(stored: str | bytes, what: str, name: str | None) -> Any:
        try:
            return _read(stored, written_with if name is None else name)
        except ValueError as exc:
            fail(f"the {what} cannot be read ({reason(exc)})")

    return read
