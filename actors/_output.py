"""What becomes of a stage's return value before anyone else sees it.

`prepare_output` is the one place where an output is handled on its way
from the stage that returned it to the supervisor: encoded for the journal
(when the run has one) and made safe to share with every consumer. It runs
in the producing stage's own task, never in the supervisor's, so whatever a
value does when it is encoded fails that stage alone.

An output is encoded once, into the text the journal stores as it is. A
cheap look at the value (a few dozen of its parts at most) decides where:
a small output is encoded at once, on the event loop (a thread would cost
more than the encoding); a large one in a worker thread, in pieces, so the
event loop keeps running meanwhile. A large output's text travels as UTF-8
bytes (a `bytearray`), which the journal stores as text without converting it again.
A binary output (a codec that returned bytes: `DataCodec`'s ``.npy`` and
Arrow) travels as a `memoryview`, which the journal stores as a BLOB. An
array, a frame or a table of more than a few kilobytes counts as large.

A stage with a codec of its own (``@stage(codec=...)``) that is not the
run's sends its encoding as `Stored`, which names the codec, so that the
journal records which codec wrote the output. A stage declared with
``persist=False`` sends none: its output is not journaled.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ._codec import JsonCodec
from ._declared import declared_types
from ._freeze import FrozenDict, FrozenList, FrozenSet, freeze
from ._journal_errors import NotRestorableError
from ._jsonform import joined
from ._stage_errors import InvalidOutputError
from ._stored import Encoded, Stored
from ._tagging import scalar

if TYPE_CHECKING:
    from collections.abc import Collection

    from ._env import RunEnv
    from ._spec import StageSpec

__all__ = ["is_large", "plain_output", "prepare_output"]

_INLINE_CHARS: Final = 16_384
"""Text (in characters or bytes) an output may hold and still be encoded inline."""
_INLINE_PARTS: Final = 256
"""Parts (containers, members, fields) an inline output may have."""
_CHUNK: Final = 1 << 20
_SEQUENCES: Final = frozenset({list, tuple, set, frozenset, FrozenList, FrozenSet})
_DATA_MODULES: Final = ("numpy", "pandas", "pyarrow")


def _data_size(value: Any) -> int:
    """Bytes (about) an array, a frame or a table holds; 0 for anything else."""
    kind = type(value)
    if kind.__module__.partition(".")[0] not in _DATA_MODULES:
        return 0
    try:
        if kind.__name__ == "DataFrame":
            rows, columns = value.shape
            return int(rows) * int(columns) * 8
        return int(getattr(value, "nbytes", 0))
    except Exception:  # a library's attribute failed: judge it large
        return _INLINE_CHARS + 1


def is_large(value: Any) -> bool:
    """Whether ``value`` may take long to encode: judged from a few of its parts.

    Counts the characters of strings and bytes and the members of containers,
    looking at no more than `_INLINE_PARTS` parts: a value with more is large.
    """
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) > _INLINE_CHARS
    if kind is int or kind is float or kind is bool or value is None:
        return False
    if _data_size(value) > _INLINE_CHARS:
        return True
    budget = _INLINE_PARTS
    text = 0
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        budget -= 1
        if kind is str or kind is bytes:
            text += len(item)
            if text > _INLINE_CHARS:
                return True
        elif kind in _SEQUENCES:
            budget -= len(item)
            if budget < 0:
                return True
            todo.extend(item)
        elif kind is dict or kind is FrozenDict:
            budget -= 2 * len(item)
            if budget < 0:
                return True
            todo.extend(item)
            todo.extend(item.values())
        elif attrs.has(kind) or dataclasses.is_dataclass(kind):
            fields: Any = (
                attrs.fields(kind) if attrs.has(kind) else dataclasses.fields(item)
            )
            budget -= len(fields)
            if budget < 0:
                return True
            todo.extend(getattr(item, f.name) for f in fields)
        if budget < 0:
            return True
    return False


def _checked(text: Any, codec: Any) -> str | memoryview:
    if type(text) is not str:
        if isinstance(text, bytes | bytearray | memoryview):
            try:
                return memoryview(text).cast("B")  # binary: stored as a BLOB
            except TypeError:  # a view that is not contiguous
                return memoryview(bytes(text))
        msg = (
            f"codec {codec.name!r} returned a {type(text).__name__}, not text or bytes"
        )
        raise NotRestorableError(msg)
    if not text.isascii() and type(codec) is not JsonCodec:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            msg = (
                f"codec {codec.name!r} returned text that is not valid UTF-8 (a lone "
                "surrogate); the journal stores UTF-8 text only"
            )
            raise NotRestorableError(msg) from None
    return text


def _encode_large(
    codec: Any, value: Any, allow: Collection[type]
) -> str | bytearray | memoryview:
    """A large output's text or bytes, for the journal (runs in a worker thread)."""
    if type(codec) is JsonCodec:
        return codec.encode_utf8(value, allow=allow)
    text = _checked(codec.encode(value, allow=allow), codec)
    if type(text) is memoryview:
        return text
    assert type(text) is str
    if text.isascii():
        return text  # stored as it is, without conversion
    return joined(
        [text[i : i + _CHUNK].encode("utf-8") for i in range(0, len(text), _CHUNK)]
    )


_SCALARS: Final = frozenset({int, float, bool, str, type(None)})


def plain_output(env: RunEnv, spec: StageSpec, value: Any) -> str | None:
    """The journal text of a plain scalar output, when `prepare_output` has nothing
    else to do for it (the run's codec is `JsonCodec`, the stage has no codec of
    its own and persists its output; such a value is shared as it is); None for
    any other value or stage, which takes the whole path.

    Raises:
        OutputTooLargeError: the text is larger than the journal can store.
    """
    kind = type(value)
    if (
        kind not in _SCALARS
        or type(env.codec) is not JsonCodec
        or spec.codec is not None  # its own codec: the whole path names it
        or not spec.persist
        or (kind is str and len(value) > _INLINE_CHARS)  # large: a worker thread's
    ):
        return None
    try:
        text = scalar(value)  # what JsonCodec.encode writes first, and returns
    except ValueError:  # an int past 4,300 digits: the codec says why, not us
        return None
    if text is not None and env.check_output is not None:
        env.check_output(text, "the output")
    return text


async def prepare_output(
    env: RunEnv, spec: StageSpec, value: Any
) -> tuple[Any, Encoded | None]:
    """The frozen value consumers share, and its journal encoding (None without one,
    or for a stage declared with ``persist=False``).

    Encoded first, from the value as the stage returned it; then frozen (see
    `dagvisor.actors._freeze`), once for every consumer.

    Waits (in a worker thread) only for a large output of a journaled run;
    otherwise returns without a checkpoint: the stage's task ends right
    after, and a checkpoint per stage would cost the hot path more than the
    encoding.

    Raises:
        NotRestorableError: the run is journaled and the value cannot be encoded.
        OutputTooLargeError: the run is journaled and the encoded value is
            larger than the journal can store.
        InvalidOutputError: the value cannot be frozen (a dict key's
            ``__hash__`` raised while its dict was rebuilt).
    """
    encoded: Encoded | None = None
    codec = env.codec
    if codec is not None and spec.persist:
        own = spec.codec
        if own is not None:
            codec = own
        allow = declared_types(spec.fn)
        data: str | bytearray | memoryview
        if not is_large(value):
            data = _checked(codec.encode(value, allow=allow), codec)
        else:
            data = await trio.to_thread.run_sync(_encode_large, codec, value, allow)
        if env.check_output is not None:
            env.check_output(data, "the output")
        encoded = data
        if own is not None and own.name != env.codec.name:
            encoded = Stored(own.name, data)
    try:
        frozen = freeze(value)
    except Exception as exc:
        raise InvalidOutputError(spec.name, value, exc) from exc
    return frozen, encoded
