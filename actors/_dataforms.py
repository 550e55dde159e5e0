"""Binary forms of data values: numpy arrays as ``.npy``, frames and tables as Arrow IPC.

Both directions are written for a journal that anyone who can write the
file may have edited, so reading never runs code the file chose:

* **``.npy``** (numpy's own format). Written with ``allow_pickle=False``:
  an array of Python objects (dtype ``object``, or a structured dtype
  holding one) is refused. Read by hand rather than by
  ``numpy.load``: the header is parsed by numpy (a literal, never
  evaluated code; ``max_header_size`` bounds it), an object dtype is
  refused, and the declared shape must match the bytes that follow
  exactly, before anything is allocated: a header declaring a terabyte
  over ten bytes of data is refused, not attempted. The array is a
  read-only view of the stored bytes.
* **Arrow IPC** (a stream, uncompressed) for pandas DataFrames and Series
  (through ``pyarrow.Table.from_pandas``) and pyarrow Tables. Extension
  types (whose deserialisation is code a library registered) are refused
  both ways; what is read is validated in full (offsets, lengths, UTF-8)
  before any value is looked at. A frame is rebuilt by
  ``Table.to_pandas``, which reads pandas' schema metadata as data (dtype
  names looked up among those pandas knows). Nothing is ever unpickled.

A library that is missing is not an error when reading: the value comes
back as `Undecoded` with a summary of what the bytes hold, as far as can
be told without it. numpy, pandas and pyarrow are imported only when a
value needs them.
"""

from __future__ import annotations

import ast
import io
import json
import math
import sys
from typing import Any, Final

from ._journal_errors import NotRestorableError
from ._object_columns import objects_kept

__all__ = [
    "ARROW_MAGIC",
    "NPY_MAGIC",
    "BadData",
    "data_kind",
    "decode_binary",
    "encode_arrow",
    "encode_npy",
    "summary",
]

NPY_MAGIC: Final = b"\x93NUMPY"
ARROW_MAGIC: Final = b"\xff\xff\xff\xff"  # an IPC stream's first continuation marker
_KIND_KEY: Final = b"dagvisor.kind"
_KINDS: Final = (b"DataFrame", b"Series", b"UnnamedSeries", b"Table")
_MAX_HEADER: Final = 10_000
_EXTENSION_KEY: Final = b"ARROW:extension:name"
_SHOWN_ROWS: Final = 5


class BadData(ValueError):
    """Stored bytes that are not a value this module wrote, or that it will not read."""


def data_kind(value: Any) -> str | None:
    """``"npy"`` or ``"arrow"`` for a value with a binary form, else None.

    Looks only at the class's module and name: nothing is imported.
    """
    kind = type(value)
    module = kind.__module__
    if module == "numpy" and kind.__name__ == "ndarray":
        return "npy"
    if (module == "pandas" or module.startswith("pandas.")) and kind.__name__ in (
        "DataFrame",
        "Series",
    ):
        return "arrow"
    if module == "pyarrow.lib" and kind.__name__ == "Table":
        return "arrow"
    return None


# -- writing ------------------------------------------------------------------------


def encode_npy(array: Any) -> memoryview:
    """``.npy`` bytes of a numpy array; arrays of Python objects are refused.

    Raises:
        NotRestorableError: an object dtype, or an ndarray subclass.
    """
    import numpy as np

    if type(array) is not np.ndarray:
        msg = (
            f"a {type(array).__qualname__} (an ndarray subclass) cannot be journaled "
            "as .npy: its class would be lost; return np.asarray(value)"
        )
        raise NotRestorableError(msg)
    if array.dtype.hasobject:
        msg = (
            f"a numpy array of dtype {array.dtype} holds Python objects, which the "
            "journal never stores (reading them back would unpickle); convert it "
            "to a numeric or string dtype, or use a list"
        )
        raise NotRestorableError(msg)
    if array.dtype.itemsize == 0:  # .npy cannot tell how many such items it holds
        msg = (
            f"a numpy array of dtype {str(array.dtype)[:80]} has items of no size, "
            "which .npy cannot hold; give it a dtype with fields or a width"
        )
        raise NotRestorableError(msg)
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    return out.getbuffer()


def _no_extension_types(schema: Any, what: str) -> None:
    """Refuse a schema holding an extension type (at any depth)."""
    import pyarrow as pa

    todo = [(field.name, field.type) for field in schema]
    while todo:
        name, kind = todo.pop()
        if isinstance(kind, pa.BaseExtensionType):
            msg = (
                f"{what} column {str(name)[:80]!r} has the Arrow extension type "
                f"{str(kind)[:80]}, which the journal does not store (reading it "
                "back would run the code registered for it); convert the column "
                "to a plain type (for pandas, .astype(str) or its values)"
            )
            raise NotRestorableError(msg)
        if pa.types.is_dictionary(kind):
            todo.append((name, kind.value_type))
            continue
        for index in range(kind.num_fields):
            child = kind.field(index)
            todo.append((f"{name}.{child.name}", child.type))


def encode_arrow(value: Any) -> memoryview:
    """Arrow IPC stream bytes of a DataFrame, a Series or a Table.

    Raises:
        NotRestorableError: a column Arrow cannot hold (Python objects of
            mixed types, say) or of an extension type.
    """
    import pyarrow as pa

    name = type(value).__name__
    try:
        if name == "Table":
            table = value
        else:
            frame = value.to_frame() if name == "Series" else value
            table = pa.Table.from_pandas(frame)
            if name == "Series" and value.name is None:
                name = "UnnamedSeries"
    except (pa.ArrowException, TypeError, ValueError) as exc:
        msg = (
            f"a {name} cannot be written as Arrow ({type(exc).__name__}: "
            f"{str(exc)[:200]}); give its columns plain types (numbers, strings, "
            "dates)"
        )
        raise NotRestorableError(msg) from None
    _no_extension_types(table.schema, f"the {name}'s")
    if name != "Table":
        objects_kept(frame, lambda: _frame(table, "DataFrame"), name)
    metadata = dict(table.schema.metadata or {})
    metadata[_KIND_KEY] = name.encode()
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


# -- reading ------------------------------------------------------------------------


def _npy_header(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], int]:
    """The ``.npy`` header as a dict, and where the data starts (no numpy needed)."""
    if bytes(data[:6]) != NPY_MAGIC or len(data) < 10:
        msg = "not .npy bytes"
        raise BadData(msg)
    major = data[6]
    if major == 1:
        size, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        size, start = int.from_bytes(data[8:12], "little"), 12
    else:
        msg = f".npy format version {major} is unknown"
        raise BadData(msg)
    if size > _MAX_HEADER or start + size > len(data):
        msg = "its .npy header is too long or cut short"
        raise BadData(msg)
    try:
        header = ast.literal_eval(bytes(data[start : start + size]).decode("latin-1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        msg = f"its .npy header is not a literal ({type(exc).__name__})"
        raise BadData(msg) from None
    if type(header) is not dict or set(header) != {"descr", "fortran_order", "shape"}:
        msg = "its .npy header lacks descr, fortran_order or shape"
        raise BadData(msg)
    shape = header["shape"]
    if (
        type(shape) is not tuple
        or not all(type(n) is int and 0 <= n < 2**63 for n in shape)
        or type(header["fortran_order"]) is not bool
        or len(shape) > 64
    ):
        msg = "its .npy header has a bad shape or order"
        raise BadData(msg)
    return header, start + size


def _read_npy(data: bytes | bytearray | memoryview) -> Any:
    import numpy as np

    header, start = _npy_header(data)
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        msg = f"its .npy dtype cannot be read ({type(exc).__name__})"
        raise BadData(msg) from None
    if dtype.hasobject:
        msg = (
            f"it holds an array of dtype {dtype}, Python objects, which dagvisor "
            "never writes and never reads (reading them would unpickle)"
        )
        raise BadData(msg)
    shape = header["shape"]
    count = math.prod(shape)
    if dtype.itemsize == 0 or count * dtype.itemsize != len(data) - start:
        msg = (
            f"its .npy header declares {count:,} items of {dtype.itemsize} bytes, "
            f"and {len(data) - start:,} bytes follow"
        )
        raise BadData(msg)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    if header["fortran_order"]:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _no_extension_key(data: bytes | bytearray | memoryview) -> None:
    """Refuse a stream whose schema names an extension type, before pyarrow reads it.

    pyarrow calls the deserialiser registered for an extension type while
    it reads the schema, so the check is made on the bytes first: the
    schema is the stream's first message, and a field of an extension type
    carries the metadata key ``ARROW:extension:name`` as plain bytes in it.
    """
    if len(data) < 8:
        msg = "its Arrow stream is cut short"
        raise BadData(msg)
    size = int.from_bytes(data[4:8], "little")
    if size > len(data) - 8:
        msg = "its Arrow schema is cut short"
        raise BadData(msg)
    if _EXTENSION_KEY in bytes(data[8 : 8 + size]):
        msg = (
            "its Arrow schema names an extension type, which dagvisor never "
            "writes and never reads (reading it would run the code registered for it)"
        )
        raise BadData(msg)


def _read_arrow(data: bytes | bytearray | memoryview) -> Any:
    import pyarrow as pa

    _no_extension_key(data)
    options = pa.ipc.IpcReadOptions(use_threads=False)
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data), options=options)
        _no_extension_types(reader.schema, "the stored table's")
        table = reader.read_all()
        table.validate(full=True)
    except NotRestorableError as exc:
        raise BadData(str(exc)) from None
    except Exception as exc:  # pyarrow's errors on bytes it refuses: OSError, ...
        msg = f"it is not a whole Arrow stream ({type(exc).__name__}: {str(exc)[:120]})"
        raise BadData(msg) from None
    metadata = table.schema.metadata or {}
    kind = metadata.get(_KIND_KEY, b"Table")
    if kind not in _KINDS:
        msg = f"its Arrow stream names an unknown kind {kind[:40]!r}"
        raise BadData(msg)
    return table, kind.decode()


def _frame(table: Any, kind: str) -> Any:
    """A DataFrame (or Series) from an Arrow table: pandas' metadata read as data."""
    try:
        frame = table.to_pandas()
    except Exception as exc:  # the file's metadata: any refusal is damage
        msg = f"its pandas metadata cannot be applied ({type(exc).__name__}: {str(exc)[:120]})"
        raise BadData(msg) from None
    if kind != "DataFrame":  # a Series, named or not
        if frame.shape[1] != 1:
            msg = "a stored Series has more than one column"
            raise BadData(msg)
        series = frame.iloc[:, 0]
        return series.rename(None) if kind == "UnnamedSeries" else series
    return frame


def decode_binary(data: bytes | bytearray | memoryview) -> Any:
    """The value of ``.npy`` or Arrow IPC bytes, or `Undecoded` when a library is missing.

    Raises:
        BadData: bytes this module would not have written, or will not read.
    """
    from ._codec import Undecoded

    head = bytes(data[:6])
    if head == NPY_MAGIC:
        if not _importable("numpy"):
            return Undecoded(_npy_summary(data), "numpy:ndarray", codec="data")
        return _read_npy(data)
    if head[:4] == ARROW_MAGIC:
        if not _importable("pyarrow"):
            what = (
                f"an Arrow IPC stream of {len(data):,} bytes (pyarrow is not installed)"
            )
            return Undecoded(what, None, codec="data")
        table, kind = _read_arrow(data)
        if kind == "Table":
            return table
        if not _importable("pandas"):
            shown = "DataFrame" if kind == "DataFrame" else "Series"
            return Undecoded(summary(table), f"pandas:{shown}", codec="data")
        return _frame(table, kind)
    msg = "the bytes are neither .npy nor an Arrow stream"
    raise BadData(msg)


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported (a None in ``sys.modules`` says it cannot)."""
    found = sys.modules.get(module, False)
    if found is not False:
        return found is not None
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- summaries ------------------------------------------------------------------------


def _npy_summary(data: bytes | bytearray | memoryview) -> str:
    header, start = _npy_header(data)
    shape = header["shape"]
    return (
        f"ndarray {str(header['descr'])[:40]} shape {shape}, "
        f"{len(data) - start:,} bytes (numpy is not installed)"
    )


def summary(value: Any, rows: int = _SHOWN_ROWS) -> str:
    """Shape, types and the first rows of an array, a frame or a table, on a few lines."""
    name = type(value).__name__
    if name == "ndarray":
        import numpy as np

        shown = np.array2string(value, threshold=20, edgeitems=3, max_line_width=100)
        return f"ndarray {value.dtype} shape {value.shape}\n{shown}"
    if name == "DataFrame":
        types = ", ".join(f"{c}: {t}" for c, t in list(value.dtypes.items())[:20])
        head = value.head(rows).to_string(max_cols=12, max_colwidth=40)
        return (
            f"DataFrame {value.shape[0]:,} rows x {value.shape[1]:,} columns "
            f"({types})\n{head}"
        )
    if name == "Series":
        head = value.head(rows).to_string(max_rows=rows)
        return f"Series {value.name!r} {len(value):,} rows, {value.dtype}\n{head}"
    if name == "Table":
        types = ", ".join(f"{f.name}: {f.type}" for f in list(value.schema)[:20])
        first = value.slice(0, rows).to_pylist()
        lines = "\n".join(json.dumps(row, default=str)[:200] for row in first)
        return f"Table {value.num_rows:,} rows x {value.num_columns:,} columns ({types})\n{lines}"
    return repr(value)
