"""What crosses between the journal writer and its process: frames, pickles, errors.

A frame is a header (`HEAD`: the pickle's length and how many out-of-band
buffers follow), each buffer's length (`SIZE`), the pickle, then the
buffers. A request pickles a function of `_batch` and its arguments: the
journal by reference (the child's own, `the_journal`), ledgers without
their inbox, large binary values out of band (pickle's protocol 5); an
answer pickles ``(ok, value)``, an exception as its type, arguments and
attributes (`rebuilt`), whatever its class does when pickled. Both sides
(`_writer_process`, `_writer_child`) use this module, so the names a pickle
refers to are the same in both.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import IO, TYPE_CHECKING, Any, Final

from ._ledger import RunLedger

if TYPE_CHECKING:
    from ._journal import Journal

__all__ = [
    "HEAD",
    "OUT_OF_BAND",
    "READY",
    "SIZE",
    "SYNC",
    "as_memoryview",
    "dumps",
    "journal_here",
    "rebuilt",
    "settings",
    "the_journal",
]

HEAD: Final = struct.Struct("<QI")
SIZE: Final = struct.Struct("<Q")
OUT_OF_BAND: Final = 64 * 1024  # a buffer at least this large is sent raw
SYNC: Final = b"\x00dagvisor journal writer\x00"
"""What the child writes first: anything its parent read before it (a banner
a ``.pth`` file printed while Python started) is not part of an answer."""
READY: Final = "dagvisor journal writer: ready"
"""The child's answer to its first request: what an echoing program cannot say."""


def settings(settings: dict[str, Any]) -> None:
    """Stands for the child's first request, which makes its `Journal` (see `serve`)."""


journal_here: list[Journal] = []
"""In the child: its `Journal`, once the first request made it."""


def the_journal() -> Journal:
    """The journal a request names: in the child, the child's own."""
    return journal_here[0]


class _Pickler(pickle.Pickler):
    """Pickles a request: the journal by reference, ledgers without their inbox,
    large binary values out of band.

    (``reducer_override`` is consulted only for objects of classes other than
    the built-in containers and scalars, so records cost it nothing; a
    ``persistent_id`` would be called for every object.)
    """

    def __init__(self, file: IO[bytes], journal: Journal | None, **kwargs: Any) -> None:
        super().__init__(file, protocol=5, **kwargs)
        self._journal = journal

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if obj is self._journal:
            return the_journal, ()
        if kind is RunLedger:
            # The inbox stays here; a ledger whose run failed never crosses
            # (`JournalWriter._commit` leaves it out), so its error need not.
            return RunLedger, (obj.run_id, None, obj.next_seq, obj.owned, obj.expires)
        if kind is memoryview:  # a binary codec's bytes: stays a memoryview
            return as_memoryview, (pickle.PickleBuffer(obj),)
        if isinstance(obj, BaseException):
            return rebuilt, (kind, _made_of(obj), dict(vars(obj)))
        return NotImplemented


def dumps(
    value: Any, journal: Journal | None, buffers: list[pickle.PickleBuffer]
) -> bytes:
    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        if memoryview(buffer).nbytes < OUT_OF_BAND:
            return True  # in band: a small buffer costs more apart
        buffers.append(buffer)
        return False

    file = io.BytesIO()
    _Pickler(file, journal, buffer_callback=out_of_band).dump(value)
    return file.getvalue()


def as_memoryview(data: bytes | bytearray) -> memoryview:
    """A binary value as it was sent: a memoryview (the journal's ``data``
    column), never taken for a large text's UTF-8 (a bytearray)."""
    return memoryview(data)


def _made_of(error: BaseException) -> tuple[Any, ...]:
    """What ``error``'s class rebuilds it from (an `OSError`'s file name too)."""
    try:
        made = error.__reduce_ex__(5)
    except Exception:
        return error.args
    if type(made) is tuple and len(made) > 1 and type(made[1]) is tuple:
        return made[1]
    return error.args


def rebuilt(
    kind: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    """An exception raised in the other process: same type, message and attributes.

    Made as its class makes it when that takes its ``args`` (an `OSError`'s
    errno and file name come back so), else without calling it.
    """
    try:
        error = kind(*args)
    except Exception:  # a class whose constructor takes other arguments
        error = kind.__new__(kind)
        error.args = args
    vars(error).update(state)
    return error
