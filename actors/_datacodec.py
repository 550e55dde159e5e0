"""`DataCodec`: numpy arrays, pandas frames and Arrow tables as binary, the rest as JSON.

What it means for whoever reads the journal:

* A stage output that is a numpy array is stored as ``.npy`` bytes; a
  pandas DataFrame or Series, or a pyarrow Table, as an Arrow IPC stream
  (see `_dataforms`). Both in the journal's binary column, at about the
  value's own size, never pickled. Any other value is `JsonCodec`'s JSON.
* The reading paths (`Journal.result`, ``dagvisor show/lineage/report``)
  rebuild arrays, frames and tables with numpy, pandas and pyarrow (the
  libraries, never the pipeline's code) when they are installed; where one
  is missing, the value is `Undecoded` with a summary (shape and dtype of
  an array, from its header).
* A resume rebuilds the same values; JSON values follow `JsonCodec`'s
  allow-list (``types=``, the stage's return annotation).
* Mapped items and run inputs are JSON only: an array there is refused
  when it is mapped (pass it as an output instead).

Built-in codecs by name, for ``@stage(codec="data")``,
``runtime(codec="data")`` and ``dagvisor run --codec data``: `codec_named`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

from ._codec import JsonCodec, PickleCodec
from ._dataforms import BadData, data_kind, decode_binary, encode_arrow, encode_npy
from ._errors import InvalidRequestError
from ._journal_errors import NotRestorableError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from ._codec import Codec

__all__ = ["BUILT_IN", "DataCodec", "codec_named"]


@final
class DataCodec:
    """Arrays as ``.npy``, frames and tables as Arrow IPC, everything else as JSON.

    Needs numpy (arrays), pandas and pyarrow (frames, tables): ``pip install
    'dagvisor[data]'``. Nothing is ever pickled.

    Args:
        types: attrs classes and dataclasses a resume may rebuild from the
            JSON values (as `JsonCodec`'s ``types``).

    Example:
        >>> @stage(codec="data")  # doctest: +SKIP
        ... def load(ctx) -> pd.DataFrame: ...
    """

    name = "data"

    def __init__(self, types: Iterable[type] = ()) -> None:
        self.json = JsonCodec(types)

    def __repr__(self) -> str:
        return f"DataCodec(types=[{', '.join(sorted(map(str, self.json.types)))}])"

    def encode(self, value: Any, *, allow: Collection[type] = ()) -> str | memoryview:
        """``.npy`` or Arrow bytes for an array, a frame or a table; JSON text otherwise.

        Raises:
            NotRestorableError: an array of Python objects, a column Arrow
                cannot hold or of an extension type, or a value JSON cannot.
        """
        kind = data_kind(value)
        if kind is None and type(value).__module__ == "numpy":
            value = _python_scalar(value)
        elif kind == "npy":
            return encode_npy(value)
        if kind == "arrow":
            return encode_arrow(value)
        return self.json.encode(value, allow=allow)

    def decode(self, text: Any, *, allow: Collection[type] = ()) -> Any:
        """The value stored: binary (``.npy``, Arrow) or `JsonCodec` text.

        Raises:
            NotRestorableError: JSON naming a class that is not allowed.
            ValueError: bytes or text this codec did not write, or will not read.
        """
        if type(text) is str:
            return self.json.decode(text, allow=allow)
        if isinstance(text, bytes | bytearray | memoryview):
            return decode_binary(text)
        msg = f"a stored value is a {type(text).__name__}, neither text nor bytes"
        raise BadData(msg)


def _python_scalar(value: Any) -> Any:
    """A numpy number, string or bytes as its Python value; other scalars refused.

    A datetime64 or timedelta64 scalar's ``item()`` is an int for
    nanoseconds and None for NaT, a record's a tuple: not the value.
    """
    import numpy as np

    if isinstance(value, np.number | np.bool_ | np.str_ | np.bytes_) and not isinstance(
        value,
        np.timedelta64,  # a signedinteger to numpy
    ):
        return value.item()
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        msg = (
            f"a numpy {type(value).__name__} scalar (dtype {str(value.dtype)[:80]}) "
            "would not come back as it is from JSON; return np.asarray(value), a "
            "0-d array that keeps its dtype, or a plain Python value"
        )
        raise NotRestorableError(msg)
    return value


BUILT_IN: Final = ("data", "json", "pickle")
"""The codecs known by name."""


def codec_named(name: str) -> Codec:
    """A new codec of a built-in name: ``"json"``, ``"data"`` or ``"pickle"``.

    Raises:
        InvalidRequestError: no built-in codec has that name.
    """
    if name == "json":
        return JsonCodec()
    if name == "data":
        return DataCodec()
    if name == "pickle":
        return PickleCodec()
    msg = f"no built-in codec is named {name!r}; choose one of {', '.join(BUILT_IN)}"
    raise InvalidRequestError(msg)
