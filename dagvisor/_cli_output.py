"""``dagvisor show RUN --output STAGE``: one stage's output, for a person or a machine.

For a person (the default): an array, a frame or a table as its summary
(shape, types, the first rows); `Undecoded` as what it names and its
stored text, shortened; any other value pretty-printed, shortened to
`_LINES` lines of at most `_WIDTH` characters (a large value is shown with
``reprlib``'s limits first, so a million-item list is not formatted whole).

For a machine (``--json``): one line of JSON, or `NoJsonFormError` (one
line, exit 2) for a value that has none: a set, bytes, a dict key that is
not a string, NaN or an infinity, `Undecoded`. Tuples are lists; an array
is its nested lists; a DataFrame or a Series is pandas' ``split`` form
(``{"columns", "index", "data"}``, dates in ISO 8601); a Table, its rows.
"""

from __future__ import annotations

import json
import math
import pprint
import reprlib
from typing import TYPE_CHECKING, Any, Final

from dagvisor.actors import NoJsonFormError, StageState, UnknownStageError
from dagvisor.actors._codec import Undecoded
from dagvisor.actors._dataforms import data_kind, summary
from dagvisor.actors._output import is_large

from ._cli_run import UsageError

if TYPE_CHECKING:
    from dagvisor.supervisor._stage_read import StageOutput

__all__ = ["add_output_options", "output_text"]

_LINES: Final = 40
_WIDTH: Final = 200
_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxfrozenset = 20
_SHORT.maxdict = 20
_SHORT.maxstring = _SHORT.maxother = _WIDTH
_SHORT.maxlevel = 6


def add_output_options(show: Any) -> None:
    """``--output STAGE`` and ``--json`` on ``dagvisor show``."""
    show.add_argument(
        "--output",
        dest="output_stage",
        metavar="STAGE",
        help="print this stage's output (pretty and shortened; --json for all of it)",
    )
    show.add_argument(
        "--json",
        action="store_true",
        help="with --output: the output as one line of JSON, for machines",
    )


def output_text(run_id: str, stage: str, found: StageOutput, *, as_json: bool) -> str:
    """The text ``show --output STAGE`` prints (without a final newline), from
    what the journal holds of the stage (`Journal.stage_output`).

    Raises:
        UnknownStageError: the run has no such stage.
        UsageError: the stage has no output to show.
        NoJsonFormError: ``as_json`` and the value has no JSON form.
    """
    state = found.state
    if state is None:
        raise UnknownStageError(stage, where=f"run {run_id}")
    if not found.stored:
        if state is StageState.SUCCEEDED:
            why = (
                "succeeded, and its output is not in the journal (the stage was "
                "declared with persist=False)"
            )
        else:
            why = f"is {state.value}: only a stage that succeeded has an output"
        msg = f"stage {stage!r} {why}"
        raise UsageError(msg)
    value = found.value
    if as_json:
        return json.dumps(
            _json_ready(value),
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        )
    return _pretty(value)


def _pretty(value: Any) -> str:
    if data_kind(value) is not None:
        text = summary(value)
    elif isinstance(value, Undecoded):
        named = f" {value.type}" if value.type else ""
        codec = f" written by codec {value.codec!r}" if value.codec else ""
        text = f"Undecoded{named}{codec} (not rebuilt when read):\n{value.text}"
    elif is_large(value):
        text = _SHORT.repr(value)
    else:
        text = pprint.pformat(value, width=100, compact=True, sort_dicts=False)
    lines = text.splitlines() or [""]
    shown = [
        line if len(line) <= _WIDTH else line[: _WIDTH - 3] + "..."
        for line in lines[:_LINES]
    ]
    if len(lines) > _LINES:
        shown.append(f"... ({len(lines) - _LINES:,} more lines; --json for all of it)")
    return "\n".join(shown)


def _frame_json(value: Any) -> Any:
    try:
        return json.loads(value.to_json(orient="split", date_format="iso"))
    except (ValueError, OverflowError, TypeError) as exc:
        msg = f"a {type(value).__name__} pandas cannot write as JSON ({exc})"
        where = ""  # the value itself
        raise NoJsonFormError(where, msg) from None


def _json_ready(value: Any) -> Any:
    """``value`` as plain JSON data, or `NoJsonFormError` naming the part that has none.

    Walks without recursion (an output may be nested hundreds of levels).
    """
    kind = data_kind(value)
    if kind == "npy":
        value = value.tolist()
    elif kind == "arrow":
        if type(value).__name__ == "Table":
            value = value.to_pylist()
        else:
            return _frame_json(value)
    root: list[Any] = [None]
    todo: list[tuple[Any, list[Any] | dict[str, Any], Any, str]] = [
        (value, root, 0, "")
    ]
    while todo:
        item, into, key, where = todo.pop()
        kind_of = type(item)
        if item is None or kind_of is bool or kind_of is str or kind_of is int:
            into[key] = item
        elif kind_of is float:
            if not math.isfinite(item):
                raise NoJsonFormError(where, f"the number {item}")
            into[key] = item
        elif isinstance(item, list | tuple):
            out: list[Any] = [None] * len(item)
            into[key] = out
            todo.extend(
                (member, out, index, f"{where}[{index}]")
                for index, member in enumerate(item)
            )
        elif isinstance(item, dict):
            mapping: dict[str, Any] = {}
            into[key] = mapping
            for name, member in item.items():
                if type(name) is not str:
                    raise NoJsonFormError(
                        where, f"a dict with the key {reprlib.repr(name)}"
                    )
                mapping[name] = None
                todo.append((member, mapping, name, f"{where}[{name!r}]"))
        elif isinstance(item, Undecoded):
            raise NoJsonFormError(
                where, f"a value not rebuilt when read ({item.type or item.codec})"
            )
        else:
            raise NoJsonFormError(where, f"a {kind_of.__name__}")
    return root[0]
