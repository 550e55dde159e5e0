"""``dagvisor token add``, ``dagvisor ctl`` and ``dagvisor run --serve``, as processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import trio
from control_helpers import held, served, waiting

from dagvisor.supervisor._control._tokens import Tokens

TARGET = """
import trio
from dagvisor import Pipeline, default_registry, stage

@stage
async def hold(ctx):
    print("holding", flush=True)
    await trio.sleep_forever()

@stage
async def extra(ctx):
    return 7

default_registry.register(extra.fn, name="extra")
pipeline = Pipeline("served").add(hold)
"""


async def dagvisor(
    *args: str, check: int | None = 0
) -> subprocess.CompletedProcess[bytes]:
    done = await trio.run_process(
        [sys.executable, "-m", "dagvisor", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if check is not None:
        assert done.returncode == check, (done.stdout, done.stderr)
    return done


async def test_token_add_prints_the_secret_once(tmp_path):
    path = tmp_path / "tokens.txt"
    done = await dagvisor(
        "token", "add", "carol", "--role", "operator", "--file", str(path)
    )
    secret = done.stdout.decode().strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret not in path.read_text()
    token = Tokens.load(path).identify(secret)
    assert token is not None
    assert (token.name, token.role) == ("carol", "operator")
    again = await dagvisor(
        "token", "add", "carol", "--role", "viewer", "--file", str(path), check=2
    )
    assert b"already has a token named 'carol'" in again.stderr
    assert secret not in again.stderr.decode()


async def test_ctl_reads_and_changes_a_served_run(tmp_path):
    async with served(tmp_path) as (rt, _, _, operator, viewer):
        run = await rt.start(held())
        (tmp_path / "op").write_text(operator + "\n")
        (tmp_path / "vi").write_text(viewer)
        base = ["ctl", "--url", rt.url, "--token-file"]
        listed = await dagvisor(*base, str(tmp_path / "vi"), "runs")
        assert run.id in listed.stdout.decode()
        shown = await dagvisor(*base, str(tmp_path / "vi"), "show", run.id)
        assert b'"hold": "running"' in shown.stdout
        refused = await dagvisor(
            *base, str(tmp_path / "vi"), "cancel", run.id, "--reason", "r", check=2
        )
        assert b"Forbidden" in refused.stderr
        added = await dagvisor(
            *base,
            str(tmp_path / "op"),
            "add-stage",
            run.id,
            "extra",
            "--after",
            "hold",
            "--reason",
            "late check",
        )
        assert b"added stage extra (audit #0)" in added.stdout
        unknown = await dagvisor(
            *base,
            str(tmp_path / "op"),
            "add-stage",
            run.id,
            "nope",
            "--reason",
            "r",
            check=2,
        )
        assert b"UnknownStageError" in unknown.stderr
        cycle = await dagvisor(
            *base,
            str(tmp_path / "op"),
            "add-edge",
            run.id,
            "extra",
            "hold",
            "--reason",
            "r",
            check=2,
        )
        assert b"StageStateError" in cycle.stderr or b"CycleError" in cycle.stderr
        await dagvisor(
            *base,
            str(tmp_path / "op"),
            "cancel-stage",
            run.id,
            "extra",
            "--reason",
            "r",
        )
        audit = await dagvisor(*base, str(tmp_path / "vi"), "audit", run.id)
        assert b"cancel_stage by api:alice: accepted extra - r" in audit.stdout
        (tmp_path / "bad").write_text("wrong-secret")
        wrong = await dagvisor(*base, str(tmp_path / "bad"), "runs", check=2)
        assert b"Unauthorized" in wrong.stderr
        assert b"wrong-secret" not in wrong.stderr
        async with trio.open_nursery() as nursery:
            watched: list[subprocess.CompletedProcess[bytes]] = []

            async def watch() -> None:
                watched.append(
                    await dagvisor(
                        *base, str(tmp_path / "vi"), "watch", run.id, check=1
                    )
                )

            nursery.start_soon(watch)
            # The watcher sees the cancel, whenever it connected.
            await dagvisor(
                *base, str(tmp_path / "op"), "cancel", run.id, "--reason", "enough"
            )
        assert b"run ended: cancelled" in watched[0].stdout
    gone = await dagvisor(*base, str(tmp_path / "op"), "runs", check=2)
    assert b"cannot reach" in gone.stderr


async def test_ctl_signals_a_run(tmp_path):
    async with served(tmp_path) as (rt, _, _, operator, viewer):
        run = await rt.start(waiting())
        (tmp_path / "op").write_text(operator)
        (tmp_path / "vi").write_text(viewer)
        base = ["ctl", "--url", rt.url, "--token-file"]
        op, vi = str(tmp_path / "op"), str(tmp_path / "vi")
        forbidden = await dagvisor(
            *base, vi, "signal", run.id, "go", "--reason", "r", check=2
        )
        assert b"Forbidden" in forbidden.stderr
        bad = await dagvisor(
            *base,
            op,
            "signal",
            run.id,
            "go",
            "--payload",
            "{nope",
            "--reason",
            "r",
            check=2,
        )
        assert b"--payload" in bad.stderr
        blank = await dagvisor(
            *base, op, "signal", run.id, "bad\tname", "--reason", "r", check=2
        )
        assert b"InvalidSignalError" in blank.stderr
        sent = await dagvisor(
            *base,
            op,
            "signal",
            run.id,
            "go",
            "--payload",
            '{"approved": true, "by": "dr-okafor"}',
            "--reason",
            "reviewed",
        )
        assert b"sent signal go (audit #0)" in sent.stdout
        result = await run.wait()
        assert result.outputs["waits"] == {"approved": True, "by": "dr-okafor"}
        assert run.audit()[0].requester == "api:alice"
        closed = await dagvisor(
            *base, op, "signal", run.id, "go", "--reason", "late", check=2
        )
        assert b"RunClosedError" in closed.stderr


async def test_ctl_needs_a_url_and_a_token_file(tmp_path):
    done = await dagvisor("ctl", "--url", "http://127.0.0.1:9", "runs", check=2)
    assert b"--token-file" in done.stderr
    (tmp_path / "two").write_text("a b")
    done = await dagvisor(
        "ctl",
        "--url",
        "http://127.0.0.1:9",
        "--token-file",
        str(tmp_path / "two"),
        "runs",
        check=2,
    )
    assert b"alone, on one line" in done.stderr
    (tmp_path / "one").write_text("s3cret")
    done = await dagvisor(
        "ctl",
        "--url",
        "http://0.0.0.0:9",
        "--token-file",
        str(tmp_path / "one"),
        "runs",
        check=2,
    )
    assert b"not https: the secret crosses the network in clear text" in done.stderr
    assert b"cannot reach" in done.stderr
    assert b"s3cret" not in done.stderr


async def test_run_serve_lets_an_operator_steer_the_run(tmp_path):
    (tmp_path / "target.py").write_text(TARGET)
    tokens = tmp_path / "tokens.txt"
    done = await dagvisor(
        "token", "add", "ops", "--role", "operator", "--file", str(tokens)
    )
    (tmp_path / "secret").write_bytes(done.stdout)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "dagvisor",
            "run",
            f"{tmp_path / 'target.py'}:pipeline",
            "--serve",
            "127.0.0.1:0",
            "--tokens",
            str(tokens),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        url = None
        seen = b""
        while url is None:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, seen
            seen += chunk
            for line in seen.decode().splitlines():
                if "control API on " in line and line.endswith(tuple("0123456789")):
                    url = line.rsplit(" ", 1)[1]
                    run_id = line.split()[1].rstrip(":")
        base = ["ctl", "--url", url, "--token-file", str(tmp_path / "secret")]
        await dagvisor(*base, "add-stage", run_id, "extra", "--reason", "from outside")
        await dagvisor(*base, "cancel", run_id, "--reason", "done")
        assert await process.wait() == 1  # cancelled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
