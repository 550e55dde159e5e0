"""The options of `runtime()` and of a run: checked in one place, the same way.

`RuntimeOptions` holds what ``runtime(...)`` was given, each option checked
by its validator when the object is made (a wrong value is an
`InvalidRequestError` saying what was wrong and what is accepted), and the
few rules between options checked after. `check_policy` and `check_inputs`
are the checks ``rt.run``/``rt.start`` apply to their own arguments. A
``bool`` is never taken for a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

import attrs

from dagvisor.actors import Codec, Executor, InvalidRequestError, StageRegistry
from dagvisor.actors._callables import shown
from dagvisor.actors._datacodec import BUILT_IN, codec_named
from dagvisor.actors._env import Hooks

from ._control._bind import is_loopback, parse_bind
from ._journal import Journal

if TYPE_CHECKING:
    import os

    from ._monitor import Progress
    from ._retention import RetainOutputs

__all__ = ["FailurePolicy", "RuntimeOptions", "check_inputs", "check_policy"]

FailurePolicy: TypeAlias = Literal["cancel", "continue"]
_POLICIES = ("cancel", "continue")
_RETENTION = ("all", "final", "journal")


def check_policy(policy: object) -> FailurePolicy:
    """``on_failure``: ``"cancel"`` or ``"continue"``.

    Raises:
        InvalidRequestError: anything else.
    """
    if type(policy) is not str or policy not in _POLICIES:
        msg = f"on_failure must be one of {_POLICIES}, not {policy!r}"
        raise InvalidRequestError(msg)
    return policy  # type: ignore[return-value]  # checked against _POLICIES


def check_inputs(inputs: object) -> Mapping[str, Any]:
    """A run's ``inputs``: a mapping of names to values (None for none).

    Raises:
        TypeError: not a mapping (a wrong argument type, as Python has it).
    """
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        msg = f"inputs must be a mapping of names to values, not {inputs!r}"
        raise TypeError(msg)
    return inputs


def _seconds(
    *, optional: bool = False
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A number of seconds > 0 (finite), or None when ``optional``."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or math.isnan(value)
            or not value > 0
        ):
            msg = f"{attribute.name} must be a number of seconds > 0, not {value!r}"
            raise InvalidRequestError(msg)

    return check


def _whole(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{attribute.name} must be a whole number >= 1, not {value!r}"
        raise InvalidRequestError(msg)


def _workers(value: object) -> int | None:
    """``process_workers``: a plain whole number >= 1, or None."""
    if value is None:
        return None
    whole = (
        int.__int__(value)
        if isinstance(value, int) and not isinstance(value, bool)
        else None
    )
    if whole is None or whole < 1:
        msg = f"process_workers must be a whole number >= 1 or None, not {shown(value)}"
        raise InvalidRequestError(msg)
    return whole


_LIMITS_ARE = (
    "limits must map each limit's name (a non-empty string) to how many stages "
    "holding it may run at once (a whole number >= 1), as in "
    "runtime(limits={'db': 4})"
)


def _limits(value: object) -> MappingProxyType[str, int]:
    """``limits``, checked: plain names to plain whole numbers >= 1 (None: none).

    A name or count of a subclass of ``str`` or ``int`` is kept as its plain
    value, so nothing the user's object does can change what was checked.
    """
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        msg = f"{_LIMITS_ARE}, not {shown(value)}"
        raise InvalidRequestError(msg)
    try:
        items = list(value.items())
    except Exception as exc:
        msg = f"{_LIMITS_ARE}; these could not be read ({type(exc).__name__}: {exc})"
        raise InvalidRequestError(msg) from exc
    checked: dict[str, int] = {}
    for name, count in items:
        plain = str.__str__(name) if isinstance(name, str) else None
        if plain is None or not plain.strip():
            msg = f"{_LIMITS_ARE}; {shown(name)} is not a name"
            raise InvalidRequestError(msg)
        whole = (
            int.__int__(count)
            if isinstance(count, int) and not isinstance(count, bool)
            else None
        )
        if whole is None or whole < 1:
            msg = f"{_LIMITS_ARE}; limit {shown(plain)} is given {shown(count)}"
            raise InvalidRequestError(msg)
        checked[plain] = whole
    return MappingProxyType(checked)


def _one_of(
    choices: tuple[str, ...],
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not str or value not in choices:
            msg = f"{attribute.name} must be one of {choices}, not {value!r}"
            raise InvalidRequestError(msg)

    return check


def _executor(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # An Executor's own __eq__ is never called: names are compared as strings.
    if type(value) is str:
        if value in ("thread", "process"):
            return
    elif isinstance(value, Executor):
        return
    msg = (
        "executor must be 'thread', 'process' or an Executor such as DaskExecutor, "
        f"not {value!r}"
    )
    raise InvalidRequestError(msg)


def _callable_or_none(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        msg = f"{attribute.name} must be a callable taking a Progress, not {value!r}"
        raise InvalidRequestError(msg)


def _codec(value: Any) -> Codec | None:
    """``codec``: a codec object, or a built-in one by name (a new one)."""
    if type(value) is str:
        return codec_named(value)
    if value is not None and not isinstance(value, Codec):
        msg = (
            f"codec must be a codec (JsonCodec(), DataCodec(), ...) or one of "
            f"{', '.join(BUILT_IN)}, not {value!r}"
        )
        raise InvalidRequestError(msg)
    return value


def _journal(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, Journal) and value.readonly:
        msg = "runtime(journal=...) writes runs: give a Journal that is not readonly"
        raise InvalidRequestError(msg)


def _serve(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        parse_bind(value)


def _path_or_none(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str | PathLike):
        msg = f"{attribute.name} must be a path (str or os.PathLike) or None, not {value!r}"
        raise InvalidRequestError(msg)


def _flag(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        msg = f"{attribute.name} must be True or False, not {value!r}"
        raise InvalidRequestError(msg)


@final
@attrs.frozen(kw_only=True)
class RuntimeOptions:
    """What ``runtime(...)`` was given, checked (see `runtime` for each option)."""

    on_failure: FailurePolicy = attrs.field(
        default="cancel", validator=_one_of(_POLICIES)
    )
    thread_limit: int = attrs.field(default=40, validator=_whole)
    process_workers: int | None = attrs.field(default=None, converter=_workers)
    limits: MappingProxyType[str, int] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_limits
    )
    cleanup_timeout: float = attrs.field(default=10.0, validator=_seconds())
    hooks: Hooks = attrs.field(factory=Hooks)
    monitor_interval: float | None = attrs.field(
        default=None, validator=_seconds(optional=True)
    )
    on_progress: Callable[[Progress], object] | None = attrs.field(
        default=None, validator=_callable_or_none
    )
    retain_outputs: RetainOutputs = attrs.field(
        default="all", validator=_one_of(_RETENTION)
    )
    executor: Literal["thread", "process"] | Executor = attrs.field(
        default="thread", validator=_executor
    )
    journal: str | os.PathLike[str] | Journal | None = attrs.field(
        default=None, validator=_journal
    )
    codec: Codec | None = attrs.field(default=None, converter=_codec)
    registry: StageRegistry | None = None
    serve: str | None = attrs.field(default=None, validator=_serve)
    tokens: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_path_or_none
    )
    serve_cert: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_path_or_none
    )
    serve_key: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_path_or_none
    )
    serve_insecure_non_loopback: bool = attrs.field(default=False, validator=_flag)

    def __attrs_post_init__(self) -> None:
        self._check_serve()
        if self.retain_outputs == "journal" and self.journal is None:
            msg = (
                "retain_outputs='journal' drops finished stages from memory and keeps "
                "them in the journal: give runtime(journal=...) too"
            )
            raise InvalidRequestError(msg)

    def _check_serve(self) -> None:
        if self.serve is None:
            given = [
                name
                for name in ("tokens", "serve_cert", "serve_key")
                if getattr(self, name) is not None
            ]
            if self.serve_insecure_non_loopback:
                given.append("serve_insecure_non_loopback")
            if given:
                msg = f"{', '.join(given)} only apply with serve='HOST:PORT': give serve too"
                raise InvalidRequestError(msg)
            return
        if self.tokens is None:
            msg = (
                "serve=... needs tokens='tokens.txt': the control API never runs "
                "without access control (make one with `dagvisor token add`)"
            )
            raise InvalidRequestError(msg)
        if (self.serve_cert is None) != (self.serve_key is None):
            msg = "serve_cert and serve_key go together: give both (or neither)"
            raise InvalidRequestError(msg)
        host, _ = parse_bind(self.serve)
        if (
            not is_loopback(host)
            and self.serve_cert is None
            and not self.serve_insecure_non_loopback
        ):
            msg = (
                f"serve={self.serve!r} is reachable from the network: give TLS "
                "(serve_cert=..., serve_key=...) so that tokens are not sent in clear "
                "text, or serve on a loopback address such as '127.0.0.1:8470'; "
                "serve_insecure_non_loopback=True serves without TLS anyway"
            )
            raise InvalidRequestError(msg)

    @classmethod
    def of(cls, *, interceptors: Iterable[Any] = (), **options: Any) -> RuntimeOptions:
        """The options of ``runtime(**options)``: interceptors become hooks, and a
        progress callback without an interval gets one of 0.5 s."""
        made = cls(hooks=Hooks.from_interceptors(interceptors), **options)
        if made.on_progress is not None and made.monitor_interval is None:
            made = attrs.evolve(made, monitor_interval=0.5)
        return made

    def the_journal(self) -> Journal | None:
        """The `Journal` to write to (made from a path when one was given)."""
        journal = self.journal
        if journal is None or isinstance(journal, Journal):
            return journal
        return Journal(journal)
