"""Logging: logger 'dagvisor', quiet by default, structured fields in extra."""

from __future__ import annotations

import logging

import pytest

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import RunFailed


@stage
async def boom(ctx):
    raise ValueError("bad row")


@stage
async def grow(ctx):
    await ctx.add_stage(boom.named("child"), reason="more work")


async def test_runs_changes_and_failures_are_logged_with_structured_fields(caplog):
    caplog.set_level(logging.DEBUG, logger="dagvisor")
    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(Pipeline("logged").add(grow))
    run_id = info.value.result.run_id
    records = [r for r in caplog.records if r.name == "dagvisor"]
    assert all(r.run_id == run_id for r in records)
    started, change, failed, ended = records
    assert started.levelno == logging.INFO
    assert "started: 1 stages" in started.getMessage()
    assert change.levelno == logging.DEBUG
    assert change.seq == 0
    assert change.requester == "grow"
    assert failed.levelno == logging.WARNING
    assert failed.stage == "child"
    assert "ValueError: bad row" in failed.getMessage()
    assert ended.status == "failed"
    assert "failed: 2 stages, 1 changes" in ended.getMessage()


async def test_nothing_is_logged_at_the_default_level(caplog):
    caplog.set_level(logging.ERROR, logger="dagvisor")
    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed):
            await rt.run(Pipeline("quiet").add(grow))
    assert [r for r in caplog.records if r.name == "dagvisor"] == []
