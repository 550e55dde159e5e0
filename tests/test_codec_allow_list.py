"""A resume rebuilds the classes its code allows: registered, or declared as returned."""

from __future__ import annotations

import dataclasses
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from dagvisor import Journal, JsonCodec, Pipeline, Undecoded, runtime, stage
from dagvisor.actors._declared import declared_types
from dagvisor.errors import NotRestorableError, RunFailed


@attrs.frozen
class Customer:
    name: str


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    qty: int


@attrs.frozen
class Order:
    id: int
    customer: Customer
    lines: tuple[Line, ...]


@attrs.frozen
class Unlisted:
    x: int


RESOLVED: list[str] = []


def record_resolution() -> type:
    RESOLVED.append("resolved")
    return Order


ORDER = Order(1, Customer("ada"), (Line("a", 2),))


@stage
async def priced(ctx: Any) -> Order | None:
    return ORDER


@stage
async def lazily(ctx: Any) -> record_resolution():  # type: ignore[valid-type]
    return ORDER


@stage
async def undeclared(ctx: Any):
    return Unlisted(1)


@stage
async def unresolvable(ctx: Any) -> NotDefinedAnywhere:  # type: ignore[name-defined]  # noqa: F821
    return {"plain": "data is always fine"}


@stage
async def held(ctx: Any) -> str:
    if ctx.attempt == 0:
        await trio.sleep_forever()
    return "resumed"


def test_a_return_annotation_allows_its_classes_and_their_fields():
    assert declared_types(priced.fn) == {Order, Customer, Line}
    assert declared_types(undeclared.fn) == frozenset()
    assert declared_types(unresolvable.fn) == frozenset()


def test_declaring_a_stage_resolves_nothing():
    assert RESOLVED == []  # `lazily` was declared at import; resolved when first needed
    assert declared_types(lazily.fn) == {Order, Customer, Line}
    assert declared_types(lazily.fn) == {Order, Customer, Line}
    assert RESOLVED == ["resolved"]  # once


async def test_a_resume_rebuilds_a_declared_class(tmp_path):
    path = tmp_path / "runs.db"
    pipeline = Pipeline("orders").add(priced).add(held, after=["priced"])
    async with runtime(journal=path) as rt:
        run = await rt.start(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel(reason="held")
    with Journal(path, readonly=True) as journal:
        read = journal.result(run.id).outputs["priced"]
    assert isinstance(read, Undecoded)  # reading rebuilds no class
    assert read.type == f"{__name__}:Order"
    async with runtime(journal=path) as rt:
        result = await rt.resume(run.id)
    assert result.outputs["priced"] == ORDER
    assert type(result.outputs["priced"].lines[0]) is Line


async def test_an_output_a_resume_could_not_rebuild_fails_when_produced(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("bad").add(undeclared).add(unresolvable))
    error = info.value.errors["undeclared"]
    assert isinstance(error, NotRestorableError)
    assert "JsonCodec(types=[Unlisted])" in str(error)
    assert "-> Unlisted" in str(error)
    assert info.value.result.outputs["unresolvable"] == {"plain": "data is always fine"}
    async with runtime(journal=path, codec=JsonCodec(types=[Unlisted])) as rt:
        result = await rt.run(Pipeline("good").add(undeclared))
    assert result.outputs["undeclared"] == Unlisted(1)
    # Without a journal nothing is encoded, so nothing is refused.
    async with runtime() as rt:
        result = await rt.run(Pipeline("free").add(undeclared))
    assert result.outputs["undeclared"] == Unlisted(1)


@stage
async def item_of(ctx: Any) -> int:
    return ctx.item.x


@stage
async def spreads(ctx: Any) -> str:
    try:
        await ctx.expand(item_of, [Unlisted(1), Unlisted(2)], reason="map")
    except NotRestorableError as exc:
        return str(exc)
    return "mapped"


async def test_mapped_items_and_inputs_need_their_class_registered(tmp_path):
    path = tmp_path / "runs.db"
    async with runtime(journal=path) as rt:
        refused = await rt.run(Pipeline("items").add(spreads))
        assert "JsonCodec(types=[Unlisted])" in refused.outputs["spreads"]
        with pytest.raises(NotRestorableError, match=r"codec\.register"):
            await rt.run(Pipeline("inputs").add(held), inputs={"u": Unlisted(3)})
    codec = JsonCodec(types=[Unlisted])
    pipeline = Pipeline("items").add(spreads).add(held, after=["spreads"])
    async with runtime(journal=path, codec=codec) as rt:
        run = await rt.start(pipeline, inputs={"u": Unlisted(3)})
        await trio.testing.wait_all_tasks_blocked()
        await run.cancel(reason="held")
    async with runtime(journal=path, codec=JsonCodec(types=[Unlisted])) as rt:
        result = await rt.resume(run.id)
    assert result.outputs["spreads"] == "mapped"
    assert [result.outputs[f"item_of[{i}]"] for i in range(2)] == [1, 2]
