"""Arbitrary payloads against a live run, from a stage and from outside.

Whatever a request carries (unencodable, unhashable, raising ``__eq__``,
huge, deeply nested, a key function that raises), every request is answered
exactly once, gets exactly one audit record, the audit sequence has no gap,
the run ends with every stage terminal, and nothing ends in `InternalError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import DagvisorError, InternalError, RunFailed

EXAMPLES = int(os.environ.get("DAGVISOR_HOSTILE_EXAMPLES", "40"))


class RaisingEq:
    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __hash__(self) -> int:
        raise RuntimeError("hashed")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class Huge(int):
    """An int that JSON cannot write (over Python's 4,300-digit limit), with a repr."""

    def __new__(cls) -> Huge:
        return super().__new__(cls, 10**5000)

    def __repr__(self) -> str:
        return "Huge()"


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("no pickling")


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(
    st.integers(),
    st.builds(Huge),
    st.floats(),
    st.text(max_size=8),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2),
    st.binary(max_size=8),
    st.none(),
)
items = st.recursive(
    scalars
    | st.builds(RaisingEq, st.integers(0, 3))
    | st.builds(Unpicklable)
    | st.integers(1, 3000).map(_deep),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.tuples(inner, inner)
        | st.builds(set, st.lists(st.integers(), max_size=3))
    ),
    max_leaves=8,
)
# Not "driver": a driver that cancels itself would not see its own answer.
names = st.sampled_from(["a", "b", "c", "hold", "noop[0]", "missing"])


class Plan:
    """What the run's stages do (module level: journaled runs need registered stages)."""

    hold = trio.Event()
    drive = trio.Event()
    inside: list[tuple[str, dict[str, Any]]] = []  # noqa: RUF012  # replaced per example
    answers: list[str] = []  # noqa: RUF012  # replaced per example


@stage
async def hold(ctx):
    await Plan.hold.wait()


@stage
async def driver(ctx):
    await Plan.drive.wait()  # after the requests from outside
    for kind, args in Plan.inside:
        Plan.answers.append(await _send(ctx, kind, args))


@stage
async def noop(ctx):
    return "noop"


def _raising_key(item: object) -> str:
    raise ValueError("no key for this item")


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(
        st.sampled_from(
            ["add_stage", "add_edge", "expand", "remove", "cancel", "batch"]
        )
    )
    match kind:
        case "add_stage":
            return kind, {
                "name": draw(names),
                "after": draw(st.lists(names, max_size=2)),
                "before": draw(st.lists(names, max_size=1)),
            }
        case "add_edge":
            return kind, {"upstream": draw(names), "downstream": draw(names)}
        case "expand":
            return kind, {
                "items": draw(st.lists(items, max_size=3)),
                "key": draw(st.sampled_from([None, _raising_key, str])),
                "after": draw(st.lists(names, max_size=1)),
            }
        case "remove" | "cancel":
            return kind, {"name": draw(names)}
        case _:
            return kind, {
                "name": draw(names),
                "items": draw(st.lists(items, max_size=2)),
            }


async def _send(target: Any, kind: str, args: dict[str, Any]) -> str:
    """Send one request; return how it was answered (an error class name or 'ok')."""
    try:
        match kind:
            case "add_stage":
                await target.add_stage(
                    noop.named(args["name"]),
                    after=args["after"],
                    before=args["before"],
                    reason="drawn",
                )
            case "add_edge":
                await target.add_edge(
                    args["upstream"], args["downstream"], reason="drawn"
                )
            case "expand":
                await target.expand(
                    noop,
                    args["items"],
                    key=args["key"],
                    after=args["after"],
                    reason="drawn",
                )
            case "remove":
                await target.remove_stage(args["name"], reason="drawn")
            case "cancel":
                await target.cancel_stage(args["name"], reason="drawn")
            case _:
                async with target.changes(reason="drawn batch") as batch:
                    batch.add_stage(noop.named(args["name"]))
                    batch.expand(noop.named("batched"), args["items"])
    except InternalError:
        raise
    except DagvisorError as exc:
        return type(exc).__name__
    return "ok"


@settings(max_examples=EXAMPLES)
@given(
    journaled=st.booleans(),
    outside=st.lists(requests(), max_size=5),
    inside=st.lists(requests(), max_size=5),
)
def test_every_request_is_answered_and_audited_once(journaled, outside, inside):
    Plan.inside = inside
    Plan.answers = answers = []

    async def main(directory: Path) -> Any:
        Plan.hold, Plan.drive = trio.Event(), trio.Event()
        pipeline = Pipeline("hostile").add(hold).add(driver)
        async with runtime(
            journal=directory / "j.db" if journaled else None,
            on_failure="continue",
        ) as rt:
            run = await rt.start(pipeline)
            for kind, args in outside:
                answers.append(await _send(run, kind, args))
            Plan.drive.set()
            await trio.testing.wait_all_tasks_blocked()
            Plan.hold.set()
            try:
                return await run.wait()
            except RunFailed as failed:
                return failed.result

    with tempfile.TemporaryDirectory() as directory:
        result = trio.run(
            main, Path(directory), clock=trio.testing.MockClock(autojump_threshold=0)
        )
    assert "InternalError" not in answers
    assert not any(isinstance(e, InternalError) for e in result.errors.values())
    sent = len(outside) + len(inside)
    assert len(answers) == sent
    assert len(result.audit) == sent
    assert [record.seq for record in result.audit] == list(range(sent))
    for answer, record in zip(answers, result.audit, strict=True):
        assert record.accepted == (answer == "ok")
        assert answer in ("ok", record.error_type)
    assert all(state.is_terminal for state in result.states.values())
