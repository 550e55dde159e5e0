"""Hostile ``expand(..., params=...)``: a refusal saying what to give, and nothing left behind.

``params=`` is one mapping per item or a function of the item. An ``async``
function returns coroutines that nobody would await (Python warns about
each one, an error under ``-W error``); a single mapping is one set for
every item, which is what ``with_params`` is for. Both are refused with
`InvalidRequestError` before any stage is added.
"""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import InvalidRequestError, RunFailed


@stage
async def item(ctx: Any) -> dict[str, Any]:
    return dict(ctx.params)


async def _async_params(value: Any) -> dict[str, Any]:
    return {"batch": value}


HOW: dict[str, Any] = {
    "an async function": _async_params,
    "a lambda returning coroutines": lambda value: _async_params(value),
    "one mapping for all": {"batch": 1, "strict": True},
}


@stage
async def fan(ctx: Any) -> list[str]:
    return await ctx.expand(
        item, [1, 2], params=HOW[ctx.run_inputs["how"]], reason="hostile params"
    )


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("an async function", "plain function"),
        ("a lambda returning coroutines", "plain function"),
        ("one mapping for all", "with_params"),
    ],
)
async def test_hostile_expand_params_are_refused_and_leave_no_coroutine(how, says):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with runtime() as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(Pipeline("fan").add(fan), inputs={"how": how})
        gc.collect()
    error = info.value.result.errors["fan"]
    assert isinstance(error, InvalidRequestError)
    assert says in str(error)
    assert not any(name.startswith("item") for name in info.value.result.states)
    assert [w for w in caught if "never awaited" in str(w.message)] == []
