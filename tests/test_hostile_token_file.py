"""The token file edited while the runtime serves: revoking, adding, breaking it.

Each request reads the token file as it is on disk: a token removed from the
file is refused at once, a token added works at once, and a file that cannot
be read or holds a bad line lets nobody in (fail closed) until it is fixed.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from control_helpers import held, served, tokens_file

from dagvisor.errors import TokenFileError
from dagvisor.supervisor._control import _tokens
from dagvisor.supervisor._control._tokens import Tokens, add_token, hash_secret

if TYPE_CHECKING:
    from pathlib import Path


def _without(path: Path, name: str) -> None:
    """Rewrite a token file without the line of token ``name`` (a new file, moved in)."""
    text = path.read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not line.startswith(f"{name} ")]
    fresh = path.with_name(path.name + ".new")
    fresh.write_text("\n".join(kept) + "\n", encoding="utf-8")
    fresh.replace(path)


async def test_a_token_removed_from_the_file_is_refused_at_once(tmp_path):
    async with served(tmp_path) as (rt, op, vi, _, _):
        run = await rt.start(held())
        assert (await vi.get("/api/runs")).status_code == 200
        _without(tmp_path / "tokens.txt", "bob")
        answer = await vi.get("/api/runs")
        assert answer.status_code == 401
        assert answer.json()["error"] == "Unauthorized"
        assert (await op.get(f"/api/runs/{run.id}")).status_code == 200
        await run.cancel()


async def test_a_token_added_or_promoted_while_serving_works_at_once(tmp_path):
    async with served(tmp_path) as (rt, _, vi, _, viewer):
        run = await rt.start(held())
        carol = add_token(tmp_path / "tokens.txt", "carol", "operator")
        async with httpx.AsyncClient(
            base_url=rt.url, headers={"Authorization": f"Bearer {carol}"}
        ) as client:
            answer = await client.post(
                f"/api/runs/{run.id}/stages", json={"stage": "extra", "reason": "new"}
            )
            assert answer.status_code == 201
        # bob, a viewer, made an operator by editing his line's role.
        refused = await vi.post(
            f"/api/runs/{run.id}/stages", json={"stage": "leaf", "reason": "r"}
        )
        assert refused.status_code == 403
        path = tmp_path / "tokens.txt"
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace(
                f"bob viewer {hash_secret(viewer)}",
                f"bob operator {hash_secret(viewer)}",
            ),
            encoding="utf-8",
        )
        answer = await vi.post(
            f"/api/runs/{run.id}/stages", json={"stage": "leaf", "reason": "promoted"}
        )
        assert answer.status_code == 201
        assert run.audit()[-1].requester == "api:bob"
        await run.cancel()


async def test_a_broken_or_missing_token_file_lets_nobody_in_until_fixed(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="dagvisor.control")
    async with served(tmp_path) as (rt, op, vi, operator, viewer):
        run = await rt.start(held())
        path = tmp_path / "tokens.txt"
        good = path.read_text(encoding="utf-8")
        bad_line = f"mallory admin {hash_secret('x')}"
        for broken in (
            good + bad_line + "\n",  # a bad line
            good + "x" * (1 << 20),  # over the size limit
            b"\xff\xfe" + good.encode(),  # not UTF-8
            None,  # deleted
        ):
            if broken is None:
                path.unlink()
            elif isinstance(broken, bytes):
                path.write_bytes(broken)
            else:
                path.write_text(broken, encoding="utf-8")
            for client in (op, vi):
                answer = await client.get("/api/runs")
                assert answer.status_code == 401, broken
            post = await op.post(
                f"/api/runs/{run.id}/stages", json={"stage": "extra", "reason": "r"}
            )
            assert post.status_code == 401
            path.write_text(good, encoding="utf-8")
            assert (await op.get("/api/runs")).status_code == 200
            assert (await vi.get("/api/runs")).status_code == 200
        assert len(run.audit()) == 0  # nothing got through while it was broken
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors, "a broken token file is logged"
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "line 3" in logged  # the bad line is named by its number ...
        assert "mallory" not in logged  # ... never quoted
        for secret in (operator, viewer, hash_secret(operator), hash_secret(viewer)):
            assert secret not in logged
        await run.cancel()


async def test_a_session_of_a_revoked_token_ends(tmp_path):
    async with served(tmp_path) as (rt, _, _, _, viewer):
        run = await rt.start(held())
        async with httpx.AsyncClient(base_url=rt.url) as browser:
            login = await browser.get(f"/?token={viewer}")
            assert login.status_code == 303
            assert (await browser.get("/api/runs")).status_code == 200
            _without(tmp_path / "tokens.txt", "bob")
            assert (await browser.get("/api/runs")).status_code == 401
            # Giving bob a token again does not bring the old session back.
            add_token(tmp_path / "tokens.txt", "bob", "viewer")
            assert (await browser.get("/api/runs")).status_code == 401
        await run.cancel()


def test_an_edit_that_keeps_size_and_time_is_still_seen(tmp_path):
    # File times are coarse (a few ms): a rewrite of the same size in the same
    # tick looks unchanged to stat. A file changed lately is read again.
    path, operator, viewer = tokens_file(tmp_path)
    tokens = Tokens.load(path)
    assert tokens.identify(viewer) is not None
    before = os.stat(path)
    other = "b" * 43
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(hash_secret(viewer), hash_secret(other)), "utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert tokens.identify(viewer) is None
    found = tokens.identify(other)
    assert found is not None
    assert found.name == "bob"
    assert tokens.identify(operator) is not None


def test_tokens_made_from_lines_are_not_read_from_a_file(tmp_path):
    path, operator, _ = tokens_file(tmp_path)
    loaded = Tokens.load(path)
    fixed = Tokens(list(loaded.current()))
    path.unlink()
    assert fixed.identify(operator) is not None
    assert loaded.identify(operator) is None  # the file is gone: nobody


async def test_a_token_file_that_is_not_a_regular_file_lets_nobody_in(tmp_path):
    # A FIFO would block whoever opens it (the event loop), a device never end.
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        path = tmp_path / "tokens.txt"
        good = path.read_text(encoding="utf-8")
        path.unlink()
        os.mkfifo(path)
        with trio.fail_after(10):
            assert (await op.get("/api/runs")).status_code == 401
        path.unlink()
        path.symlink_to("/dev/zero")
        assert (await op.get("/api/runs")).status_code == 401
        path.unlink()
        path.write_text(good, encoding="utf-8")
        assert (await op.get("/api/runs")).status_code == 200
        await run.cancel()


def test_loading_a_token_file_that_is_not_a_regular_file_is_refused(tmp_path):
    path = tmp_path / "tokens.txt"
    os.mkfifo(path)
    with pytest.raises(TokenFileError, match="not a regular file"):
        Tokens.load(path)


def test_a_fifo_swapped_in_after_the_stat_is_refused_without_blocking(tmp_path):
    path = tmp_path / "tokens.txt"
    os.mkfifo(path)
    with pytest.raises(TokenFileError, match="not a regular file"):
        _tokens._read(str(path))  # no writer: a blocking open would hang here
