"""What the control API's tests share: stages, a registry, token files, clients."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import trio

from dagvisor import Pipeline, StageRegistry, runtime, stage
from dagvisor.supervisor._control._tokens import add_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@stage
async def hold(ctx: Any) -> str:
    await trio.sleep_forever()
    return "never"  # pragma: no cover


@stage
async def extra(ctx: Any) -> int:
    return 7


@stage
async def leaf(ctx: Any) -> int:
    return 1


@stage(name="careful", retries=2, timeout=30.0)
async def careful(ctx: Any) -> str:
    if ctx.attempt < 2:
        msg = f"attempt {ctx.attempt} fails"
        raise RuntimeError(msg)
    return f"ran {ctx.attempt + 1} times"


@stage
async def fan(ctx: Any) -> int:
    await ctx.expand(leaf, range(300), reason="many events at once")
    return 0


@stage
async def waits(ctx: Any) -> Any:
    return await ctx.wait_signal("go")


REGISTRY = StageRegistry()
REGISTRY.register(extra.fn, name="extra")
REGISTRY.register(leaf.fn, name="leaf")
REGISTRY.register(hold.fn, name="hold")
REGISTRY.register(careful.fn, name="careful")


def tokens_file(tmp_path: Path) -> tuple[Path, str, str]:
    """A token file with an operator (alice) and a viewer (bob), and their secrets."""
    path = tmp_path / "tokens.txt"
    return path, add_token(path, "alice", "operator"), add_token(path, "bob", "viewer")


def waiting() -> Pipeline:
    """A run whose one stage waits for the signal ``go`` and returns its payload."""
    return Pipeline("waiting").add(waits)


def held() -> Pipeline:
    """A run that stays going until it is cancelled: ``hold`` never ends."""
    return Pipeline("held").add(hold)


@asynccontextmanager
async def served(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, httpx.AsyncClient, str, str]]:
    """A served runtime, an operator's and a viewer's client, and both secrets."""
    path, operator, viewer = tokens_file(tmp_path)
    options.setdefault("registry", REGISTRY)
    async with runtime(serve="127.0.0.1:0", tokens=path, **options) as rt:
        assert rt.url is not None
        async with (
            httpx.AsyncClient(
                base_url=rt.url, headers={"Authorization": f"Bearer {operator}"}
            ) as op,
            httpx.AsyncClient(
                base_url=rt.url, headers={"Authorization": f"Bearer {viewer}"}
            ) as vi,
        ):
            yield rt, op, vi, operator, viewer


def sse_events(text: str) -> list[tuple[str, Any]]:
    """The events of an event stream's text, as (event name, decoded data)."""
    found = []
    for block in text.split("\n\n"):
        lines = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if line and not line.startswith(":")
        )
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found
