"""Isolation of stage outputs: a consumer can never corrupt another's input.

A stage's output is stored once. Each consumer receives it through a
read-only mapping (``ctx.inputs``); values of the builtin mutable container
types (list, dict, set, bytearray, and tuples holding them) are deep-copied
for each consumer, so mutating an input changes only the consumer's copy.
Immutable values (numbers, strings, bytes, None, frozen tuples) are shared as
they are: the common case costs one type check. Objects of other classes are
shared; give them immutable types (``attrs.frozen``, frozen dataclasses) when
several stages read them.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["SHARED_TYPES", "isolate"]

SHARED_TYPES = frozenset(
    {int, float, complex, bool, str, bytes, type(None), range, frozenset}
)
_COPIED_TYPES = frozenset({list, dict, set, bytearray})


def isolate(value: Any) -> Any:
    """The value a consumer may read and mutate without affecting anyone else."""
    kind = type(value)
    if kind in SHARED_TYPES:
        return value
    if kind in _COPIED_TYPES:
        return copy.deepcopy(value)
    if kind is tuple:
        # A tuple may hold mutable containers; copy only when it does.
        stack = [value]
        while stack:
            for element in stack.pop():
                element_kind = type(element)
                if element_kind in _COPIED_TYPES:
                    return copy.deepcopy(value)
                if element_kind is tuple:
                    stack.append(element)
        return value
    return value
