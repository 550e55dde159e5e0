"""The JSON text of the records every stage and every change writes, made in one step.

A journal record's payload is compact JSON as `dump_json` writes it
(non-ASCII text as it is, lone surrogates escaped). The records each stage
writes (its start, its end) and each change writes (its audit record and,
for the common ``add_stage``, what was asked) are made here straight into
that text from their values, without first building a dict for the
encoder to walk again: the text is the same, character for character
(``tests/test_record_text.py`` checks it against `dump_json` for any
names, reasons and times). A stage spec's reference differs only by its
name between the specs of one function and its options, so the rest of it
is written once and kept.

Pure functions of plain data: no I/O, no user code.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from dagvisor.actors._jsonform import dump_json

from ._audit import AuditRecord, Fields

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dagvisor.actors._messages import AddStage

__all__ = ["AskedAddStage", "RecordTexts", "make_texts"]

AskedAddStage = tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]
"""What an ``add_stage`` asked, its text not yet made: the spec's reference,
``after`` and ``before``."""

string: Final = encode_basestring
"""A string's JSON text: the function `json`'s encoder itself uses for strings
(before `_finish` escapes lone surrogates)."""

_NULL: Final = "null"
_REF_KEYS: Final = (
    "name",
    "fn",
    "when",
    "retries",
    "backoff",
    "timeout",
    "trigger",
    "executor",
)
_KEYED: Final = frozenset({str, int, float, type(None)})
_KEPT_REFS: Final = 1024
_RECORD_FIELDS: Final = tuple(attrs.fields_dict(AuditRecord))[:17]  # a change's


def _finish(text: str) -> str:
    """What `dump_json` does last: lone surrogates become escapes (valid UTF-8)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _time(value: Any) -> str:
    """A time's JSON text (a finite float, written as `json`'s encoder writes it)."""
    if type(value) is float and value - value == 0.0:  # finite: not inf, not NaN
        return float.__repr__(value)
    return dump_json(value)  # never made by the supervisor: the encoder decides


def _names(names: Sequence[str]) -> str:
    if not names:
        return "[]"
    if len(names) == 1:
        return f"[{string(names[0])}]"
    return f"[{','.join(map(string, names))}]"


def _edges(edges: Sequence[tuple[str, str]]) -> str:
    return (
        "[" + ",".join([f"[{string(up)},{string(down)}]" for up, down in edges]) + "]"
    )


def _parts(parts: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    return (
        "["
        + ",".join([f"[{string(kind)},{_names(names)}]" for kind, names in parts])
        + "]"
    )


@final
class RecordTexts:
    """The JSON texts of one run's hot records (see the module docstring)."""

    __slots__ = ("_run", "_run_id", "_tails")

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._run = string(run_id)
        self._tails: dict[str | None, tuple[tuple[Any, ...], str]] = {}

    def started(self, name: str, time: float) -> str:
        """``{"stage": name, "time": time}``."""
        text = (
            f'{{"stage":{string(name)},"time":'
            f"{float.__repr__(time) if type(time) is float and time - time == 0.0 else _time(time)}}}"
        )
        return text if text.isascii() else _finish(text)

    def ended(self, name: str, state: str, time: float) -> str:
        """``{"stage": name, "state": state, "time": time}`` (an end without an error)."""
        text = (
            f'{{"stage":{string(name)},"state":{string(state)},"time":'
            f"{float.__repr__(time) if type(time) is float and time - time == 0.0 else _time(time)}}}"
        )
        return text if text.isascii() else _finish(text)

    def change(self, fields: Fields, request: str) -> str:
        """A ``change`` record: every field of an audit record, in order, then ``request``.

        ``request`` is the request's JSON text already (`add_stage`, or
        `dump_json` of what any other request asked).
        """
        (
            seq,
            run_id,
            kind,
            requester,
            reason,
            accepted,
            before,
            after,
            wall,
            monotonic,
            added,
            removed,
            edges,
            cancelled,
            error_type,
            error,
            parts,
        ) = fields
        if not (
            type(seq) is int
            and type(before) is int
            and type(after) is int
            and type(wall) is float
            and type(monotonic) is float
            and wall - wall == 0.0  # finite: inf - inf and NaN are NaN
            and monotonic - monotonic == 0.0
            and type(accepted) is bool
            and run_id == self._run_id
        ):  # never made so by the supervisor, but written right all the same
            named = dict(zip(_RECORD_FIELDS, fields, strict=True))
            return f'{dump_json(named)[:-1]},"request":{request}}}'
        text = (
            f'{{"seq":{seq},"run_id":{self._run},'
            f'"kind":{string(kind)},"requester":{string(requester)},'
            f'"reason":{string(reason)},'
            f'"accepted":{"true" if accepted else "false"},'
            f'"version_before":{before},"version_after":{after},'
            f'"wall_time":{float.__repr__(wall)},'
            f'"monotonic_time":{float.__repr__(monotonic)},'
            f'"added":{_names(added)},"removed":{_names(removed)},'
            f'"edges":{_edges(edges) if edges else "[]"},'
            f'"cancelled":{_names(cancelled)},'
            f'"error_type":{_NULL if error_type is None else string(error_type)},'
            f'"error":{_NULL if error is None else string(error)},'
            f'"parts":{_parts(parts) if parts else "[]"},"request":{request}}}'
        )
        return text if text.isascii() else _finish(text)

    def change_of(self, fields: Fields, asked: str | AskedAddStage) -> str:
        """A ``change`` record from what `RunRecords.change` kept of it: the audit
        record's fields, and the request's text or an ``add_stage``'s parts."""
        if isinstance(asked, str):
            return self.change(fields, asked)
        ref, after, before = asked
        return self.change(fields, self.added(ref, after, before))

    def add_stage(self, request: AddStage, ref: dict[str, Any]) -> str:
        """What an ``add_stage`` request asked: ``{"spec", "after", "before"}``.

        ``ref`` is the spec's reference as `spec_ref` makes it.
        """
        return self.added(ref, request.after, request.before)

    def added(
        self, ref: dict[str, Any], after: Sequence[str], before: Sequence[str]
    ) -> str:
        """`add_stage`'s text from its parts."""
        text = (
            f'{{"spec":{self._ref(ref)},"after":{_names(after) if after else "[]"},'
            f'"before":{_names(before) if before else "[]"}}}'
        )
        return text if text.isascii() else _finish(text)

    def _ref(self, ref: dict[str, Any]) -> str:
        # The specs of one function and options differ by their names only:
        # the rest of the text is kept by function name, and used again for
        # the very same option values (`is`: equal values of another type,
        # 5 and 5.0, have other texts).
        if len(ref) != len(_REF_KEYS):
            return dump_json(ref)
        kept = self._tails.get(ref.get("fn"))
        if kept is not None:
            values, tail = kept
            if (
                ref.get("when") is values[0]
                and ref.get("retries") is values[1]
                and ref.get("backoff") is values[2]
                and ref.get("timeout") is values[3]
                and ref.get("trigger") is values[4]
                and ref.get("executor") is values[5]
                and tuple(ref) == _REF_KEYS
            ):
                return f'{{"name":{string(ref["name"])},{tail}'
        if tuple(ref) != _REF_KEYS or not _KEYED.issuperset(map(type, ref.values())):
            # Another shape, or values that are not plain (never made so):
            # the encoder writes it, and nothing is kept.
            return dump_json(ref)
        text = dump_json(ref)
        if len(self._tails) >= _KEPT_REFS:
            self._tails.clear()
        self._tails[ref["fn"]] = (
            tuple(ref[key] for key in _REF_KEYS[2:]),
            dump_json({key: ref[key] for key in _REF_KEYS[1:]})[1:],
        )
        return text


def make_texts(records: list[tuple[Any, ...]]) -> None:
    """Make the text of each stage and change record in place (see
    `RunRecords`): the event loop queues their values, the writer's worker
    writes them out."""
    texts: dict[str, RecordTexts] = {}
    for index, record in enumerate(records):
        if record[1] is not None and type(record[3]) is tuple:
            run_id = record[0]
            maker = texts.get(run_id)
            if maker is None:
                maker = texts[run_id] = RecordTexts(run_id)
            kind, values = record[2], record[3]
            if kind == "change":
                text = maker.change_of(*values)
            elif kind == "stage_ended":
                text = maker.ended(*values)
            else:  # stage_started, stage_queued
                text = maker.started(*values)
            records[index] = (run_id, record[1], kind, text, record[4])
