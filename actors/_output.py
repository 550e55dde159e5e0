"""What becomes of a stage's return value before anyone else sees it.

`prepare_output` is the one place where an output is handled on its way
from the stage that returned it to the supervisor: encoded for the journal
(when the run has one) and made safe to share with every consumer. It runs
in the producing stage's own task, never in the supervisor's, so whatever a
value does when it is encoded fails that stage alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import InvalidOutputError
from ._freeze import freeze

if TYPE_CHECKING:
    from ._env import RunEnv

__all__ = ["prepare_output"]


def prepare_output(env: RunEnv, stage: str, value: Any) -> tuple[Any, str | None]:
    """The frozen value consumers share, and its journal encoding (None without one).

    Encoded first, from the value as the stage returned it; then frozen (see
    `dagvisor.actors._freeze`), once for every consumer.

    Raises:
        NotRestorableError: the run is journaled and the value cannot be encoded.
        InvalidOutputError: the value cannot be frozen (a dict key's
            ``__hash__`` raised while its dict was rebuilt).
    """
    encoded = None if env.codec is None else env.codec.encode(value)
    try:
        frozen = freeze(value)
    except Exception as exc:
        raise InvalidOutputError(stage, value, exc) from exc
    return frozen, encoded
