"""Whether a DataFrame's ``object`` columns survive Arrow: checked when it is written.

pandas keeps Python objects in an ``object`` column; Arrow has no such
type and stores the type of the values, which pandas reads back as a typed
column. `objects_kept` refuses, when the output is produced, a frame that
would come back of another dtype or with other values.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._journal_errors import NotRestorableError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["objects_kept"]


def objects_kept(frame: Any, read_back: Callable[[], Any], name: str) -> None:
    """Refuse a frame whose ``object`` columns or index would come back altered.

    Arrow gives such a column the type of its values, and pandas reads that
    type back: Python ints as int64, ints beside None as float64 and NaN,
    lists as arrays, timestamps of several zones in one zone. Only frames
    with an ``object`` column or index pay for the check: they are read
    back (``read_back``) and compared element by element, type included.

    Raises:
        NotRestorableError: an ``object`` column or index level that would
            come back of another dtype or with other values.
    """
    index = frame.index
    parts = [("column", frame.iloc[:, n]) for n in range(frame.shape[1])]
    parts += [("index", index.get_level_values(n)) for n in range(index.nlevels)]
    if not any(_is_object(part.dtype) for _, part in parts):
        return
    back = read_back()
    if back.shape == frame.shape and back.index.nlevels == index.nlevels:
        again = [back.iloc[:, n] for n in range(back.shape[1])]
        again += [back.index.get_level_values(n) for n in range(index.nlevels)]
    else:
        again = [None] * len(parts)
    for (what, before), after in zip(parts, again, strict=True):
        if _is_object(before.dtype) and (
            after is None or after.dtype != before.dtype or not _same(before, after)
        ):
            stored = "another shape" if after is None else str(after.dtype)
            msg = (
                f"the {name}'s {what} {str(before.name)[:80]!r} has dtype object, "
                f"and Arrow would give it back as {stored}, its values altered "
                "(ints beside None as floats, lists as arrays, several time zones "
                "as one); give it a typed dtype first (.astype('Int64'), "
                ".astype('string'), pd.to_datetime(..., utc=True))"
            )
            raise NotRestorableError(msg)


def _is_object(dtype: Any) -> bool:
    import numpy as np

    return isinstance(dtype, np.dtype) and dtype.kind == "O"


def _same(before: Any, after: Any) -> bool:
    """Equal element by element, each of the same type (NaN equal to NaN only)."""
    if len(before) != len(after):
        return False
    for a, b in zip(before, after, strict=True):
        if type(a) is not type(b):
            return False
        if a is b:
            continue
        try:
            if isinstance(a, float) and math.isnan(a):
                if not math.isnan(b):
                    return False
            elif not bool(a == b):
                return False
        except Exception:  # an element whose == raises or is not one truth
            return False
    return True
