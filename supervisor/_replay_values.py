"""How a replay decodes the values a journal stores: outputs, mapped items, inputs.

Reading a run back rebuilds no class: a `JsonCodec` value becomes plain data
with `Undecoded` for each class value, and a run journaled with any other
codec has every value `Undecoded` (a pickle is never unpickled, and no
codec's code runs). A resume decodes with the runtime's codec, allowing the
classes registered with it and those named by the return annotations of the
run's stage functions (resolved now, once each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from dagvisor.actors import DagvisorError
from dagvisor.actors._codec import Undecoded, read_value
from dagvisor.actors._declared import declared_types

from ._records import reason

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from dagvisor.actors import Codec

__all__ = ["value_decoder"]


def value_decoder(
    codec: Codec | None,
    functions: Collection[Any],
    written_with: str,
    fail: Callable[[str], NoReturn],
) -> Callable[[str, str], Any]:
    """A function from (stored text, what it is) to the value, for one run.

    Args:
        codec: the runtime's codec for a resume; None to read the run back.
        functions: the run's stage functions (their annotations allow classes).
        written_with: the name of the codec the run was journaled with.
        fail: raises the `JournalError` for a value that cannot be decoded.
    """
    if codec is not None:
        allow: frozenset[type] = frozenset().union(
            *(declared_types(fn) for fn in functions)
        )

        def decode(text: str, what: str) -> Any:
            try:
                return codec.decode(text, allow=allow)
            except DagvisorError:
                raise
            except Exception as exc:  # the codec's own error, on a damaged value
                fail(f"the {what} cannot be decoded ({reason(exc)})")

        return decode
    if written_with != "json":
        return lambda text, what: Undecoded(text)

    def read(text: str, what: str) -> Any:
        try:
            return read_value(text)
        except ValueError as exc:
            fail(f"the {what} cannot be read ({reason(exc)})")

    return read
