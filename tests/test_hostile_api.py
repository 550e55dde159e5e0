"""The control API against hostile clients: no token, wrong tokens, bad bodies.

Every answer to what a client sent is a 4xx with a typed error, never a 500,
and no secret ever reaches a log, the journal, the audit or a message.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess

import httpx
import pytest
import trio
from control_helpers import REGISTRY, held, served, tokens_file
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import runtime
from dagvisor.errors import InvalidRequestError, MissingExtraError, TokenFileError
from dagvisor.supervisor._control._app import BODY_LIMIT
from dagvisor.supervisor._control._tokens import Tokens, add_token, hash_secret

POSTS = ("stages", "edges", "stages/hold/cancel", "cancel", "signals/go")


async def test_no_token_or_a_wrong_one_is_401_and_a_viewer_cannot_change(tmp_path):
    async with served(tmp_path) as (rt, _, vi, operator, _):
        run = await rt.start(held())
        bare = httpx.AsyncClient(base_url=rt.url)
        headers = [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer  \t x"},
            {"Authorization": f"Basic {operator}"},
            {"Authorization": f"Bearer {operator}x"},
            {"Authorization": f"Bearer {operator[:-1]}"},
            {"Authorization": f"Bearer {hash_secret(operator)}"},
            {"Authorization": "Bearer " + "a" * 10_000},
            {"Authorization": "Bearer \u00e9t\u00e9".encode()},
            {"Authorization": b"Bearer \xff\xfe"},
        ]
        async with bare:
            for header in headers:
                for path in ("/api/runs", f"/api/runs/{run.id}"):
                    answer = await bare.get(path, headers=header)
                    assert answer.status_code == 401, header
                    assert answer.headers["www-authenticate"] == "Bearer"
                    assert answer.json()["error"] == "Unauthorized"
                for post in POSTS:
                    answer = await bare.post(
                        f"/api/runs/{run.id}/{post}", json={}, headers=header
                    )
                    assert answer.status_code == 401
        for post in POSTS:
            answer = await vi.post(
                f"/api/runs/{run.id}/{post}",
                json={
                    "stage": "extra",
                    "reason": "r",
                    "upstream": "a",
                    "downstream": "b",
                },
            )
            assert answer.status_code == 403
            assert answer.json()["error"] == "Forbidden"
        assert len(run.audit()) == 0  # nothing reached the run
        assert (await vi.get(f"/api/runs/{run.id}")).status_code == 200
        await run.cancel()


async def test_malformed_bodies_are_400_never_500(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        stages = f"/api/runs/{run.id}/stages"
        raw = [
            b"",
            b"{",
            b"null",
            b"[]",
            b'"x"',
            b"\xff\xfe",
            b'{"stage": "extra", "reason": "r"',
            b"[" * 30_000 + b"]" * 30_000,
            b'{"stage": 1' + b"0" * 5000 + b', "reason": "r"}',
            b'{"stage": "extra", "reason": NaN}',
        ]
        for body in raw:
            answer = await op.post(
                stages, content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400, body[:40]
            assert answer.json()["error"] == "InvalidRequestError"
        bad_fields = [
            {"stage": 5, "reason": "r"},
            {"stage": "extra"},
            {"stage": "extra", "reason": ""},
            {"stage": "extra", "reason": "   "},
            {"stage": "extra", "reason": ["r"]},
            {"stage": "extra", "reason": {"r": 1}},
            {"stage": ["extra"], "reason": "r"},
            {"stage": "extra", "reason": "r", "after": [1]},
            {"stage": "extra", "reason": "r", "after": {"hold": 1}},
            {"stage": "extra", "reason": "r", "after": [""]},
            {"stage": "extra", "reason": "r", "after": ["x"] * 1001},
            {"stage": "extra", "reason": "r", "name": 3},
            {"stage": "extra", "reason": "r" * 5000},
            {"stage": "extra", "reason": "\ud800"},
            {"stage": "\udfff", "reason": "r"},
            {"stage": "extra", "reason": "r", "after": ["\ud83d"]},
        ]
        for body in bad_fields:
            answer = await op.post(stages, content=json.dumps(body))
            assert answer.status_code == 400, body
            assert answer.json()["error"] == "InvalidRequestError"
        for body in ({"upstream": 1}, {"upstream": "a", "downstream": None}):
            answer = await op.post(f"/api/runs/{run.id}/edges", json=body)
            assert answer.status_code == 400
        assert len(run.audit()) == 0
        await run.cancel()


async def test_huge_bodies_are_413_declared_or_streamed(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        stages = f"/api/runs/{run.id}/stages"
        big = json.dumps({"stage": "extra", "reason": "r" * (BODY_LIMIT + 1)})
        answer = await op.post(stages, content=big)
        assert answer.status_code == 413
        assert answer.json()["error"] == "PayloadTooLarge"

        async def chunks():  # no Content-Length: sent chunked
            for _ in range(BODY_LIMIT // 1024 + 2):
                yield b" " * 1024

        answer = await op.post(stages, content=chunks())
        assert answer.status_code == 413
        host, port = httpx.URL(rt.url).host, httpx.URL(rt.url).port
        for length in (b"nonsense", b"-1", b"99999999999999999999", b"2"):
            raw = await trio.open_tcp_stream(host, port)
            async with raw:
                await raw.send_all(
                    b"POST " + stages.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: " + op.headers["authorization"].encode() + b"\r\n"
                    b"Content-Length: " + length + b"\r\n\r\n" + b'{"stage": 1}'
                )
                status = (await raw.receive_some(4096)).split(b" ", 2)[1]
            assert status in (b"400", b"413"), length
        assert len(run.audit()) == 0
        await run.cancel()


async def test_unknown_runs_stages_and_routes_and_odd_unicode(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        odd = ["nope", "%F0%9F%98%80", "%ED%A0%80", "%00", "..%2F..", "a" * 5000]
        for run_id in odd:
            assert (await op.get(f"/api/runs/{run_id}")).status_code == 404
            answer = await op.post(f"/api/runs/{run_id}/cancel", json={"reason": "r"})
            assert answer.status_code == 404
        for name in ["ghost", "%ED%A0%80", "%F0%9F%98%80", "%00"]:
            answer = await op.post(
                f"/api/runs/{run.id}/stages/{name}/cancel", json={"reason": "r"}
            )
            assert answer.status_code in (400, 409), name
        for registered in ["os:system", "builtins:eval", "x" * 4000, "\u202e"]:
            answer = await op.post(
                f"/api/runs/{run.id}/stages",
                json={"stage": registered, "reason": "r"},
            )
            assert answer.status_code == 422
            assert answer.json()["error"] == "UnknownStageError"
        assert (await op.get("/nope")).status_code == 404
        assert (await op.delete(f"/api/runs/{run.id}")).status_code == 405
        assert (await op.put(f"/api/runs/{run.id}/stages")).status_code == 405
        await run.cancel()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "stage": st.sampled_from(["extra", "leaf", "nope"]) | JSON,
        "name": st.text(max_size=20) | JSON,
        "after": st.lists(st.sampled_from(["hold", "extra", "x"]), max_size=3) | JSON,
        "before": st.lists(st.sampled_from(["hold", "extra", "x"]), max_size=3) | JSON,
        "reason": st.text(max_size=20)
        | st.text(st.characters(categories=["Cs", "Co", "Cc"]), max_size=5)
        | JSON,
        "upstream": st.sampled_from(["hold", "extra"]) | JSON,
        "downstream": st.sampled_from(["hold", "extra"]) | JSON,
        "payload": JSON,
    },
)


@settings(max_examples=8)  # each example serves a runtime: drawn bodies are many
@given(st.data())
def test_any_json_body_gets_a_4xx_or_success_never_500(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("api")
    routes = [
        "stages",
        "edges",
        "stages/hold/cancel",
        "stages/extra/cancel",
        "signals/go",
    ]

    async def main() -> None:
        async with served(tmp_path) as (rt, op, _, _, _):
            run = await rt.start(held())
            for _ in range(40):
                route = data.draw(st.sampled_from(routes))
                body = data.draw(FIELDS | JSON)
                answer = await op.post(
                    f"/api/runs/{run.id}/{route}", content=json.dumps(body)
                )
                assert answer.status_code in (200, 201, 202, 400, 409, 422), (
                    body,
                    answer.text,
                )
                assert "error" in answer.json() or answer.status_code < 300
            assert (await op.get(f"/api/runs/{run.id}")).status_code == 200
            await run.cancel()

    trio.run(main)


async def test_secrets_never_reach_logs_journal_audit_or_messages(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    journal = tmp_path / "runs.db"
    async with served(tmp_path, journal=journal) as (rt, op, vi, operator, viewer):
        run = await rt.start(held())
        await op.post(
            f"/api/runs/{run.id}/stages",
            json={"stage": "extra", "after": ["hold"], "reason": "checked"},
        )
        await vi.post(f"/api/runs/{run.id}/cancel", json={"reason": "no"})
        wrong = await op.get(
            "/api/runs", headers={"Authorization": f"Bearer {viewer}x"}
        )
        refused = await op.post(
            f"/api/runs/{run.id}/stages",
            json={
                "stage": "extra",
                "after": ["hold"],
                "reason": "again",
                "name": "hold",
            },
        )
        assert refused.status_code == 409
        await op.post(f"/api/runs/{run.id}/cancel", json={"reason": "done"})
        with pytest.raises(Exception, match="cancelled"):
            await run.wait()
        answers = wrong.text + refused.text
        audit = "".join(str(record) + repr(record) for record in run.audit())
    stored = journal.read_bytes()
    for secret in (operator, viewer):
        assert secret not in caplog.text
        assert secret.encode() not in stored
        assert secret not in audit
        assert secret not in answers
    assert "api:alice" in audit


async def test_binding_off_loopback_needs_tls_or_a_loud_opt_out(tmp_path, caplog):
    path, _, _ = tokens_file(tmp_path)
    with pytest.raises(InvalidRequestError, match="serve_insecure_non_loopback"):
        async with runtime(serve="0.0.0.0:0", tokens=path):
            pass  # pragma: no cover
    with pytest.raises(InvalidRequestError, match="together"):
        async with runtime(serve="0.0.0.0:0", tokens=path, serve_cert=path):
            pass  # pragma: no cover
    with pytest.raises(InvalidRequestError, match="True or False"):
        async with runtime(
            serve="0.0.0.0:0", tokens=path, serve_insecure_non_loopback="yes"
        ):
            pass  # pragma: no cover
    with pytest.raises(InvalidRequestError, match="cannot be loaded"):
        async with runtime(
            serve="0.0.0.0:0", tokens=path, serve_cert=path, serve_key=path
        ):
            pass  # pragma: no cover
    caplog.set_level(logging.WARNING, logger="dagvisor")
    async with runtime(
        serve="0.0.0.0:0", tokens=path, serve_insecure_non_loopback=True
    ) as rt:
        assert rt.url is not None
        assert rt.url.startswith("http://")
    assert any(
        "INSECURE" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


@pytest.mark.skipif(
    subprocess.run(["which", "openssl"], capture_output=True).returncode != 0,
    reason="needs openssl to make a certificate",
)
async def test_tls_serves_https(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await trio.run_process(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    path, operator, _ = tokens_file(tmp_path)
    async with runtime(
        serve="127.0.0.1:0", tokens=path, serve_cert=cert, serve_key=key
    ) as rt:
        assert rt.url is not None
        assert rt.url.startswith("https://")
        import ssl

        context = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=rt.url, verify=context) as client:
            answer = await client.get(
                "/api/runs", headers={"Authorization": f"Bearer {operator}"}
            )
            assert answer.status_code == 200
            assert answer.json() == []


def test_a_bad_token_file_is_a_typed_error_naming_the_line(tmp_path):
    path = tmp_path / "tokens.txt"
    good = f"alice operator {hash_secret('s1')}"
    cases = {
        "alice operator": 1,
        f"{good}\nbob admin {hash_secret('s2')}": 2,
        f"{good}\n\n# comment\nbob viewer {hash_secret('s2').upper()}": 4,
        f"{good}\nbob viewer {hash_secret('s2')} extra": 2,
        f"{good}\nalice viewer {hash_secret('s2')}": 2,
        f"{good}\nbob viewer {hash_secret('s1')}": 2,
        f"b\u00f6b viewer {hash_secret('s2')}": 1,
        "bob viewer my-raw-secret-value": 1,
        f"bob  viewer {hash_secret('s2')}": 1,
    }
    for text, line in cases.items():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(TokenFileError) as caught:
            Tokens.load(path)
        assert caught.value.line == line, text
        assert "my-raw-secret-value" not in str(caught.value)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(TokenFileError, match="UTF-8"):
        Tokens.load(path)
    with pytest.raises(TokenFileError, match="cannot be read"):
        Tokens.load(tmp_path / "missing.txt")


async def test_a_bad_token_file_refuses_the_runtime(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("alice operator nothex\n")
    with pytest.raises(TokenFileError, match="line 1"):
        async with runtime(serve="127.0.0.1:0", tokens=path):
            pass  # pragma: no cover


def test_token_add_makes_a_private_file_and_refuses_a_duplicate(tmp_path):
    path = tmp_path / "tokens.txt"
    secret = add_token(path, "alice", "operator")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret not in path.read_text()
    assert path.read_text() == f"alice operator {hash_secret(secret)}\n"
    with pytest.raises(TokenFileError, match="already has a token named 'alice'"):
        add_token(path, "alice", "viewer")
    for name in ("", "a b", "x" * 65, "-lead", "\u00e9", "a\nb"):
        with pytest.raises(InvalidRequestError):
            add_token(path, name, "viewer")
    with pytest.raises(InvalidRequestError):
        add_token(path, "carol", "admin")
    other = add_token(path, "carol", "viewer")
    tokens = Tokens.load(path)
    assert tokens.identify(other).name == "carol"
    assert tokens.identify(secret).role == "operator"
    assert tokens.identify(secret + "x") is None
    assert tokens.identify("\ud800") is None


async def test_a_missing_extra_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    path, _, _ = tokens_file(tmp_path)
    monkeypatch.setitem(sys.modules, "hypercorn.trio", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'dagvisor\[serve\]'"):
        async with runtime(serve="127.0.0.1:0", tokens=path, registry=REGISTRY):
            pass  # pragma: no cover


async def test_hostile_signal_names_and_payloads_are_4xx_never_500(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, _):
        run = await rt.start(held())
        base = f"/api/runs/{run.id}/signals"
        for name in ("x" * 201, "%0A", "%00", "a%09b", "%20", "%E2%80%A8"):
            answer = await op.post(f"{base}/{name}", json={"reason": "r"})
            assert answer.status_code == 400, (name, answer.text)
            assert answer.json()["error"] == "InvalidSignalError"
        # Bytes that are not UTF-8 (a lone surrogate's, or none) arrive as
        # U+FFFD, a printable name: never a surrogate in the audit.
        for name in ("%ED%A0%80", "%FF"):
            answer = await op.post(f"{base}/{name}", json={"reason": "r"})
            assert answer.status_code == 202, (name, answer.text)
            assert set(answer.json()["signal"]) == {"\ufffd"}
        bad_bodies = [
            b'{"payload": NaN, "reason": "r"}',
            b'{"payload": Infinity, "reason": "r"}',
            b'{"payload": 123456789012345678901234567890, "reason": "r"}',
            b'{"payload": ' + b"[" * 5000 + b"]" * 5000 + b', "reason": "r"}',
            b'{"payload": 1}',
            b'{"payload": 1, "reason": ""}',
            b'{"payload": 1, "reason": 7}',
            b"[1]",
        ]
        for body in bad_bodies:
            answer = await op.post(f"{base}/go", content=body)
            assert answer.status_code == 400, (body[:60], answer.text)
            assert "error" in answer.json()
        # Lone surrogates are JSON strings: carried as sent, shown escaped.
        for body in (
            b'{"payload": "\\ud800", "reason": "r"}',
            b'{"payload": {"\\udfff": 1}, "reason": "r"}',
        ):
            answer = await op.post(f"{base}/go", content=body)
            assert answer.status_code == 202, (body, answer.text)
        audit = await op.get(f"/api/runs/{run.id}/audit")
        assert audit.status_code == 200
        assert "\\ud800" in audit.text
        huge = {"payload": "x" * (BODY_LIMIT + 1), "reason": "r"}
        assert (await op.post(f"{base}/go", json=huge)).status_code == 413
        # Sent twice, both are kept, in order; none reached a stage here.
        for n in (1, 2):
            ok = await op.post(f"{base}/go", json={"payload": n, "reason": "twice"})
            assert ok.status_code == 202
        assert [r.kind for r in run.audit()] == ["signal"] * 6
        await run.cancel()
