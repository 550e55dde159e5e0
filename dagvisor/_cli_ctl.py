"""``dagvisor token add`` and ``dagvisor ctl``: tokens, and steering a served run.

``ctl`` talks to a runtime's control API (``runtime(serve=...)`` or
``dagvisor run --serve``) with httpx. The secret is read from a file
(``--token-file``), never taken on the command line, where other users of
the machine could see it. Exit codes: 0 on success, 1 when a watched run
did not succeed or the server failed, 2 for a refused or bad request (the
typed error's name is printed) or a server that cannot be reached.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from dagvisor._cli_io import one_line
from dagvisor.actors import DagvisorError
from dagvisor.supervisor._control._bind import is_loopback

if TYPE_CHECKING:
    import argparse

    import httpx

__all__ = ["add_ctl_commands", "ctl_command", "token_command"]


class _Refused(Exception):
    """A request the server refused, or that could not be made: exit code 2."""


def add_ctl_commands(sub: Any) -> None:
    """Declare ``dagvisor token`` and ``dagvisor ctl`` on the parser's subcommands."""
    token = sub.add_parser("token", help="manage the control API's tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    add = token_sub.add_parser(
        "add",
        help="add a token; its secret is printed once",
        description="Add a token to a token file (made with mode 0600); print its "
        "secret once. The file keeps only the secret's SHA-256.",
    )
    add.add_argument("name", help="who holds it (letters, digits, _.@-)")
    add.add_argument("--role", choices=("viewer", "operator"), required=True)
    add.add_argument("--file", required=True, help="the token file")

    ctl = sub.add_parser(
        "ctl",
        help="read and change a served run (dagvisor run --serve)",
        description="Talk to a runtime's control API. Exit 0 on success, 2 for a "
        "refused or bad request (the error's name is printed).",
    )
    ctl.add_argument(
        "--url", default=os.environ.get("DAGVISOR_URL"), help="default: $DAGVISOR_URL"
    )
    ctl.add_argument(
        "--token-file",
        default=os.environ.get("DAGVISOR_TOKEN_FILE"),
        help="a file holding the secret (default: $DAGVISOR_TOKEN_FILE)",
    )
    ctl.add_argument("--cafile", help="the CA certificate to trust for https")
    commands = ctl.add_subparsers(dest="ctl_command", required=True)
    commands.add_parser("runs", help="list the runs")
    show = commands.add_parser("show", help="a run's stages, states and edges (JSON)")
    show.add_argument("run")
    audit = commands.add_parser("audit", help="a run's audit trail")
    audit.add_argument("run")
    stage = commands.add_parser("add-stage", help="add a registered stage")
    stage.add_argument("run")
    stage.add_argument("stage", help="the stage function's registered name")
    stage.add_argument("--name", help="the new stage's name")
    stage.add_argument("--after", nargs="*", default=[], metavar="STAGE")
    stage.add_argument("--before", nargs="*", default=[], metavar="STAGE")
    stage.add_argument("--reason", required=True)
    edge = commands.add_parser("add-edge", help="make DOWNSTREAM wait for UPSTREAM")
    edge.add_argument("run")
    edge.add_argument("upstream")
    edge.add_argument("downstream")
    edge.add_argument("--reason", required=True)
    cancel_stage = commands.add_parser("cancel-stage", help="cancel one stage")
    cancel_stage.add_argument("run")
    cancel_stage.add_argument("stage")
    cancel_stage.add_argument("--reason", required=True)
    cancel = commands.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run")
    cancel.add_argument("--reason", required=True)
    signal = commands.add_parser("signal", help="send a signal to a run")
    signal.add_argument("run")
    signal.add_argument("signal", metavar="NAME", help="the signal's name")
    signal.add_argument(
        "--payload", default="null", metavar="JSON", help="what it carries (JSON)"
    )
    signal.add_argument("--reason", required=True)
    watch = commands.add_parser("watch", help="follow a run live until it ends")
    watch.add_argument("run")


def token_command(args: argparse.Namespace) -> int:
    """``dagvisor token add``; return the exit code."""
    from dagvisor.supervisor._control._tokens import add_token

    try:
        secret = add_token(args.file, args.name, args.role)
    except DagvisorError as exc:
        print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    print(secret)
    print(
        f"token {args.name!r} ({args.role}) added to {args.file}; the secret above "
        "is shown once: keep it in a file only its holder can read",
        file=sys.stderr,
    )
    return 0


def ctl_command(args: argparse.Namespace) -> int:
    """``dagvisor ctl ...``; return the exit code."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - depends on the installation
        print(
            "dagvisor: error: ctl needs httpx: pip install 'dagvisor[serve]'",
            file=sys.stderr,
        )
        return 2
    try:
        secret = _secret(args.token_file)
        if not args.url:
            msg = "give the API's address: --url URL (or $DAGVISOR_URL)"
            raise _Refused(msg)
        url = httpx.URL(args.url)
        if url.scheme == "http" and not is_loopback(url.host):
            print(
                f"dagvisor: warning: {one_line(str(args.url))} is not https: the "
                "secret crosses the network in clear text",
                file=sys.stderr,
            )
        verify: Any = True
        if args.cafile:
            import ssl

            verify = ssl.create_default_context(cafile=args.cafile)
        with httpx.Client(
            base_url=args.url,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=httpx.Timeout(
                30.0, read=None if args.ctl_command == "watch" else 30
            ),
            verify=verify,
        ) as client:
            return _dispatch(client, args)
    except _Refused as exc:
        print(f"dagvisor: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        print(
            f"dagvisor: error: cannot reach {one_line(str(args.url))}: "
            f"{type(exc).__name__}: {one_line(str(exc))}",
            file=sys.stderr,
        )
        return 2


def _secret(path: str | None) -> str:
    if not path:
        msg = "give the file holding your secret: --token-file F (or $DAGVISOR_TOKEN_FILE)"
        raise _Refused(msg)
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the token file {path}: {type(exc).__name__}"
        raise _Refused(msg) from None
    if not secret or any(c.isspace() for c in secret) or not secret.isascii():
        msg = f"the token file {path} must hold the secret alone, on one line"
        raise _Refused(msg)
    return secret


def _answer(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        return body
    if isinstance(body, dict) and "error" in body:
        msg = f"{body['error']}: {body.get('message', '')}"
    else:
        msg = f"HTTP {response.status_code}"
    raise _Refused(msg)


def _dispatch(client: httpx.Client, args: argparse.Namespace) -> int:
    command = args.ctl_command
    base = f"/api/runs/{_path(args.run)}" if hasattr(args, "run") else ""
    if command == "runs":
        for run in _answer(client.get("/api/runs")):
            print(f"{run['id']}  {run['status']:<10} {one_line(str(run['name']))}")
    elif command == "show":
        print(json.dumps(_answer(client.get(base)), indent=2, ensure_ascii=True))
    elif command == "audit":
        for record in _answer(client.get(f"{base}/audit")):
            print(_record_line(record))
    elif command == "add-stage":
        body = {"stage": args.stage, "after": args.after, "before": args.before}
        if args.name is not None:
            body["name"] = args.name
        done = _answer(
            client.post(f"{base}/stages", json={**body, "reason": args.reason})
        )
        print(f"added stage {one_line(str(done['name']))} (audit #{done['seq']})")
    elif command == "add-edge":
        body = {"upstream": args.upstream, "downstream": args.downstream}
        done = _answer(
            client.post(f"{base}/edges", json={**body, "reason": args.reason})
        )
        print(f"added edge {one_line(args.upstream)} -> {one_line(args.downstream)}")
    elif command == "cancel-stage":
        path = f"{base}/stages/{_path(args.stage)}/cancel"
        _answer(client.post(path, json={"reason": args.reason}))
        print(f"cancelled stage {one_line(args.stage)}")
    elif command == "cancel":
        _answer(client.post(f"{base}/cancel", json={"reason": args.reason}))
        print(f"cancelling run {one_line(args.run)}")
    elif command == "signal":
        try:
            payload = json.loads(args.payload)
        except (ValueError, RecursionError):
            msg = "--payload must be JSON text (a string is written with its quotes)"
            raise _Refused(msg) from None
        done = _answer(
            client.post(
                f"{base}/signals/{_path(args.signal)}",
                json={"payload": payload, "reason": args.reason},
            )
        )
        print(f"sent signal {one_line(str(done['signal']))} (audit #{done['seq']})")
    else:
        return _watch(client, base)
    return 0


def _path(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _record_line(record: dict[str, Any]) -> str:
    what = "accepted" if record["accepted"] else f"refused ({record['error_type']})"
    changed = ", ".join(record["added"] + record["cancelled"] + record["removed"])
    if record.get("signal") is not None:
        changed = f"{record['signal']} carrying {record.get('carried')}"
    return one_line(
        f"#{record['seq']} {record['kind']} by {record['requester']}: {what}"
        f"{' ' + changed if changed else ''} - {record['reason']}"
    )


def _watch(client: httpx.Client, base: str) -> int:
    """Print the run's progress from its event stream until it ends."""
    states: dict[str, str] = dict(_answer(client.get(base))["stages"])
    status = "running"
    with client.stream("GET", f"{base}/events") as response:
        if not response.is_success:
            response.read()
            _answer(response)
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
                continue
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if kind == "stage_started":
                states[data["stage"]] = "running"
            elif kind == "stage_finished":
                states[data["stage"]] = data["state"]
            elif kind == "graph_changed":
                for name in data["added"]:
                    states.setdefault(name, "pending")
                print(_record_line(data))
            elif kind == "signal":
                print(_record_line(data))
            elif kind == "lost":
                print(f"(lost {data['count']} events: the counts may be behind)")
            elif kind == "end":
                status = data["status"]
                break
            if kind in ("stage_finished", "graph_changed"):
                print(_progress(states), flush=True)
    print(f"run ended: {status}  {_progress(states)}")
    return 0 if status == "succeeded" else 1


def _progress(states: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    done = sum(
        n for s, n in counts.items() if s not in ("pending", "running", "queued")
    )
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"[{done}/{len(states)} done: {shown}]"
