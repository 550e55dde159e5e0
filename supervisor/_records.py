"""The shapes of the records a journal holds, checked as they are read back.

A journal file is untrusted input. Each record is checked against the types
the writer writes before the replay uses it, so that a record of the wrong
shape is refused (`BadRecord`, which the replay turns into a `JournalError`
naming the record), never a ``TypeError`` deep in a report, nor a wrong
value shown to an auditor.
"""

from __future__ import annotations

import math
import typing
from typing import TYPE_CHECKING, Any, Final

import attrs

from dagvisor.actors import InvalidSignalError
from dagvisor.actors._jsonform import Malformed, load_json
from dagvisor.actors._params import EMPTY_PARAMS, check_params
from dagvisor.actors._signals import check_signal_name, encode_payload

from ._audit import AuditRecord, ChangeKind

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BadRecord",
    "audit_record",
    "memory_samples",
    "moment",
    "reason",
    "shown",
    "signal_payload",
    "signal_record",
    "spec_options",
    "text",
    "texts",
]

_CHANGE_KINDS: Final = frozenset(typing.get_args(ChangeKind))
_TRIGGERS: Final = ("all_succeeded", "none_failed")
_EXECUTORS: Final = (None, "loop", "thread", "process")


class BadRecord(ValueError):
    """A journal record whose values are not of the kinds the writer writes."""


def _bad(what: str, value: Any) -> BadRecord:
    shown = ascii(value[:100] if isinstance(value, str) else value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BadRecord(f"its {what} is {shown}")


def text(value: Any, what: str) -> str:
    """``value`` if it is a string."""
    if type(value) is not str:
        raise _bad(what, value)
    return value


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else text(value, what)


def _whole(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _bad(what, value)
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _bad(what, value)
    return float(value)


def moment(value: Any, what: str) -> float:
    """``value`` if it is a wall-clock time: a finite number of seconds since the epoch."""
    return _number(value, what)


def texts(value: Any, what: str) -> tuple[str, ...]:
    """``value`` if it is a list of strings, as a tuple."""
    if type(value) is not list or not all(type(item) is str for item in value):
        raise _bad(what, value)
    return tuple(value)


def audit_record(payload: dict[str, Any]) -> AuditRecord:
    """The audit record a ``change`` event holds.

    Raises:
        BadRecord: a field is missing or of the wrong kind.
        KeyError: a field is missing.
    """
    kind = payload["kind"]
    if kind not in _CHANGE_KINDS:
        msg = "kind"
        raise _bad(msg, kind)
    accepted = payload["accepted"]
    if type(accepted) is not bool:
        msg = "accepted flag"
        raise _bad(msg, accepted)
    edges = payload["edges"]
    if type(edges) is not list or not all(
        type(edge) is list and len(edge) == 2 for edge in edges
    ):
        msg = "edges"
        raise _bad(msg, edges)
    return AuditRecord(
        seq=_whole(payload["seq"], "seq"),
        run_id=text(payload["run_id"], "run id"),
        kind=kind,
        requester=text(payload["requester"], "requester"),
        reason=text(payload["reason"], "reason"),
        accepted=accepted,
        version_before=_whole(payload["version_before"], "version"),
        version_after=_whole(payload["version_after"], "version"),
        wall_time=moment(payload["wall_time"], "time"),
        monotonic_time=_number(payload["monotonic_time"], "monotonic time"),
        added=texts(payload["added"], "added stages"),
        removed=texts(payload["removed"], "removed stages"),
        edges=tuple((text(u, "edge"), text(d, "edge")) for u, d in edges),
        cancelled=texts(payload["cancelled"], "cancelled stages"),
        error_type=_optional_text(payload["error_type"], "error type"),
        error=_optional_text(payload["error"], "error"),
        parts=_parts(payload.get("parts", [])),
    )


def signal_record(payload: dict[str, Any]) -> AuditRecord:
    """The audit record a ``signal`` event holds (with the signal's name and summary).

    Raises:
        BadRecord: a field is missing or of the wrong kind.
        KeyError: a field is missing.
    """
    record = audit_record(payload)
    if record.kind != "signal":
        msg = "kind"
        raise _bad(msg, record.kind)
    try:
        name = check_signal_name(payload["signal"])
    except InvalidSignalError as exc:
        raise BadRecord(str(exc)) from None
    carried = text(payload["carried"], "payload summary")
    return attrs.evolve(record, signal=name, carried=carried)


def signal_payload(value: Any) -> str:
    """A sent signal's payload text, if it is plain JSON data.

    Raises:
        BadRecord: not text, not JSON, or not plain JSON data.
    """
    if type(value) is not str:
        msg = "payload"
        raise _bad(msg, value)
    try:
        decoded = load_json(value)
        encode_payload("signal", decoded)
    except (Malformed, InvalidSignalError) as exc:
        raise BadRecord(str(exc)) from None
    return value


def _parts(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A change set's parts: ``[[kind, [stage, ...]], ...]``."""
    if type(value) is not list or not all(
        type(part) is list and len(part) == 2 for part in value
    ):
        what = "parts"
        raise _bad(what, value)
    return tuple((text(kind, "part"), texts(names, "part")) for kind, names in value)


def spec_options(ref: Any) -> dict[str, Any]:
    """The options of a stage as the journal names it, checked like `stage` checks them.

    Raises:
        BadRecord: an option of the wrong kind or value.
        KeyError: an option is missing.
    """
    if type(ref) is not dict:
        msg = "stage record"
        raise _bad(msg, ref)
    name = text(ref["name"], "stage name")
    if not name.strip():
        msg = "stage name"
        raise _bad(msg, name)
    backoff = _number(ref["backoff"], "backoff")
    timeout = ref["timeout"]
    if timeout is not None and (
        type(timeout) not in (int, float) or math.isnan(timeout) or timeout <= 0
    ):
        msg = "timeout"
        raise _bad(msg, timeout)
    if ref["trigger"] not in _TRIGGERS:
        msg = "trigger"
        raise _bad(msg, ref["trigger"])
    if ref["executor"] not in _EXECUTORS:
        msg = "executor"
        raise _bad(msg, ref["executor"])
    if backoff < 0:
        msg = "backoff"
        raise _bad(msg, backoff)
    limit = ref.get("limit")  # written only for a stage that has one
    if limit is not None and (type(limit) is not str or not limit.strip()):
        msg = "limit"
        raise _bad(msg, limit)
    persist = ref.get("persist", True)
    if type(persist) is not bool:
        msg = "persist flag"
        raise _bad(msg, persist)
    return {
        "codec": _optional_text(ref.get("codec"), "codec name"),
        "persist": persist,
        "name": name,
        "limit": limit,
        "fn": _optional_text(ref["fn"], "function name"),
        "when": _optional_text(ref["when"], "predicate name"),
        "retries": _whole(ref["retries"], "retries"),
        "backoff": backoff,
        "timeout": None if timeout is None else float(timeout),
        "trigger": ref["trigger"],
        "executor": ref["executor"],
        "params": _params_of(ref.get("params", EMPTY_PARAMS), name),
    }


def _params_of(params: Any, stage: str) -> Mapping[str, Any]:
    """A stage's recorded parameters, checked like `with_params` checks them.

    Raises:
        BadRecord: not plain JSON data.
    """
    try:
        return check_params(params, stage=stage)
    except TypeError as exc:
        raise BadRecord(str(exc)) from None


def memory_samples(value: Any) -> list[tuple[float, int]]:
    """RSS samples ``[[time, bytes], ...]`` of a ``memory`` event."""
    if type(value) is not list:
        msg = "memory samples"
        raise _bad(msg, value)
    samples = []
    for sample in value:
        if type(sample) is not list or len(sample) != 2:
            msg = "memory sample"
            raise _bad(msg, sample)
        samples.append((moment(sample[0], "sample time"), _whole(sample[1], "RSS")))
    return samples


def shown(value: Any) -> str:
    """A value from the file, for a message: escaped and shortened."""
    shown = ascii(value[:100] if isinstance(value, str) else value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def reason(exc: BaseException) -> str:
    """Why a record was refused, for a message: short, escaped, one line."""
    if isinstance(exc, KeyError):
        return f"it has no {shown(exc.args[0] if exc.args else '?')}"
    detail = str(exc)
    detail = detail if len(detail) <= 120 else detail[:117] + "..."
    return f"{type(exc).__name__}: {ascii(detail)[1:-1]}"
