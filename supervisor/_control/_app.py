"""The control API's routes: reading runs, and changing them through their requests.

Reads come from what a `Run` offers (its snapshot, audit trail and events).
Every change is a request through the run's own request path
(`ChangeRequests`, ``ask``), made as the token's identity (``api:NAME``),
so the supervisor stays the only writer and audits each change. Stages are
named by the name their function is registered under (`StageRegistry`):
a request never carries code.

Whatever a client sends is answered with a status of its own (400, 401,
403, 404, 409, 413, 422), never with a 500: every field is checked for
its type, its length and for strings that cannot be encoded before
anything is asked of the run.
"""

from __future__ import annotations

import json
import logging
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from dagvisor.actors import (
    DagvisorError,
    InvalidSignalError,
    StageSpec,
    default_registry,
    stage,
)
from dagvisor.actors._errors import message_of
from dagvisor.actors._messages import CancelRun, ReplySlot
from dagvisor.actors._requests import ChangeRequests, ask

from ._access import Access, Refusal, answering
from ._deflate import accepts_deflate
from ._feed import Feeds
from ._forms import audit_form, dumps, run_form, run_summary
from ._sse import EventBody, EventResponse
from ._view import view_routes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from dagvisor.actors import StageRegistry
    from dagvisor.actors._env import RunEnv

    from .._run import Run
    from ._runs import RunIndex
    from ._tokens import Token, Tokens

__all__ = ["BODY_LIMIT", "control_app"]

logger = logging.getLogger("dagvisor.control")

BODY_LIMIT = 64 * 1024
"""The largest request body accepted, in bytes (413 beyond)."""

_MAX_TEXT = 4096
_MAX_NAMES = 1000


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _refused(refusal: Refusal) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
    return _answer(
        refusal.status, {"error": refusal.error, "message": refusal.message}, headers
    )


@final
class _AsRequester(ChangeRequests):
    """A run's change requests, made as one API identity (for the audit trail)."""

    __slots__ = ("_env", "_who")

    def __init__(self, env: RunEnv, who: str) -> None:
        self._env = env
        self._who = who

    @property
    def _requester(self) -> str:
        return self._who


def _optional(body: dict[str, Any], key: str) -> str | None:
    return None if body.get(key) is None else _text(body, key)


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if type(value) is not str or not value.strip():
        raise Refusal(400, "InvalidRequestError", f"{key!r} must be a non-empty string")
    return _checked(value, key)


def _checked(value: str, key: str) -> str:
    if len(value) > _MAX_TEXT:
        msg = f"{key!r} is longer than {_MAX_TEXT} characters"
        raise Refusal(400, "InvalidRequestError", msg)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        msg = f"{key!r} holds a lone surrogate, which is not text"
        raise Refusal(400, "InvalidRequestError", msg) from None
    return value


def _names(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if type(value) is str:
        value = [value]
    if type(value) is not list or len(value) > _MAX_NAMES:
        msg = f"{key!r} must be a list of at most {_MAX_NAMES} stage names"
        raise Refusal(400, "InvalidRequestError", msg)
    for name in value:
        if type(name) is not str or not name:
            msg = f"{key!r} must be a list of stage names (non-empty strings)"
            raise Refusal(400, "InvalidRequestError", msg)
        _checked(name, key)
    return value


@final
class _Api:
    """The handlers, over one runtime's runs, tokens and registry."""

    __slots__ = ("_access", "_feeds", "_registry", "_runs")

    def __init__(self, runs: RunIndex, access: Access, registry: StageRegistry) -> None:
        self._feeds = Feeds()
        self._runs = runs
        self._access = access
        self._registry = registry

    # -- checks -------------------------------------------------------------------

    def _who(self, request: Request, *, change: bool) -> Token:
        return self._access.who(request, change=change)

    def _run(self, request: Request) -> Run:
        run_id = request.path_params["run_id"]
        run = self._runs.get(run_id)
        if run is None:
            raise Refusal(404, "UnknownRunError", "this runtime has no run of that id")
        return run

    async def _body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isascii() or not declared.isdigit() or len(declared) > 18:
                raise Refusal(400, "InvalidRequestError", "a bad Content-Length")
            if int(declared) > BODY_LIMIT:
                raise Refusal(
                    413, "PayloadTooLarge", f"bodies are at most {BODY_LIMIT} bytes"
                )
        chunks: list[bytes] = []
        size = 0
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > BODY_LIMIT:
                    raise Refusal(
                        413, "PayloadTooLarge", f"bodies are at most {BODY_LIMIT} bytes"
                    )
                chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks).decode("utf-8"))
        except (ValueError, RecursionError):
            msg = "the body must be a JSON object in UTF-8"
            raise Refusal(400, "InvalidRequestError", msg) from None
        if type(body) is not dict:
            raise Refusal(400, "InvalidRequestError", "the body must be a JSON object")
        return body

    async def _change(
        self, request: Request
    ) -> tuple[Run, _AsRequester, dict[str, Any]]:
        token = self._who(request, change=True)
        run = self._run(request)
        body = await self._body(request)
        return run, _AsRequester(run._env, f"api:{token.name}"), body

    # -- reads ----------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        self._who(request, change=False)
        return _answer(200, [run_summary(run) for run in self._runs.all()])

    async def show(self, request: Request) -> Response:
        self._who(request, change=False)
        return _answer(200, run_form(self._run(request)))

    async def audit(self, request: Request) -> Response:
        self._who(request, change=False)
        return _answer(
            200, [audit_form(record) for record in self._run(request).audit()]
        )

    async def events(self, request: Request) -> Response:
        self._who(request, change=False)
        run = self._run(request)
        deflate = accepts_deflate(request.headers.get("accept-encoding", ""))
        headers = {
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "Vary": "Accept-Encoding",
        }
        if deflate:  # compressed once for every client that asks (see _deflate)
            headers["Content-Encoding"] = "deflate"
        return EventResponse(
            EventBody(self._feeds, run, deflate=deflate), headers=headers
        )

    # -- changes --------------------------------------------------------------------

    async def add_stage(self, request: Request) -> Response:
        run, requester, body = await self._change(request)
        registered = _text(body, "stage")
        name = _optional(body, "name")
        after, before = _names(body, "after"), _names(body, "before")
        reason = _text(body, "reason")
        spec = self._spec(registered, name)
        added = await _refusing(
            requester.add_stage(spec, after=after, before=before, reason=reason)
        )
        return _answer(201, {"name": added, "seq": _seq_of(run, added, "add_stage")})

    def _spec(self, registered: str, name: str | None) -> StageSpec:
        fn = self._registry.lookup(registered)
        if fn is None:
            msg = (
                f"no stage function is registered as {registered!r} in the served "
                "process; name one by its registered name (module:function, or the "
                "name given to StageRegistry.register)"
            )
            raise Refusal(422, "UnknownStageError", msg)
        try:
            # Run as declared (retries, timeout, executor, codec, limit...):
            # the spec `stage` made for that function, else the defaults.
            declared: StageSpec | None = (
                fn if isinstance(fn, StageSpec) else default_registry.declared(fn)
            )
            if declared is not None:
                return declared if name is None else declared.named(name)
            return stage(fn) if name is None else stage(name=name)(fn)
        except DagvisorError as exc:
            raise Refusal(422, type(exc).__name__, message_of(exc)) from None

    async def add_edge(self, request: Request) -> Response:
        run, requester, body = await self._change(request)
        upstream, downstream = _text(body, "upstream"), _text(body, "downstream")
        reason = _text(body, "reason")
        await _refusing(requester.add_edge(upstream, downstream, reason=reason))
        return _answer(
            201,
            {
                "upstream": upstream,
                "downstream": downstream,
                "seq": _seq_of(run, downstream, "add_edge"),
            },
        )

    async def cancel_stage(self, request: Request) -> Response:
        run, requester, body = await self._change(request)
        name = _checked(request.path_params["name"], "name")
        reason = _text(body, "reason")
        await _refusing(requester.cancel_stage(name, reason=reason))
        return _answer(200, {"stage": name, "seq": _seq_of(run, name, "cancel_stage")})

    async def signal(self, request: Request) -> Response:
        run, requester, body = await self._change(request)
        name = _checked(request.path_params["signal"], "signal")
        reason = _text(body, "reason")
        try:
            await requester.signal(name, body.get("payload"), reason=reason)
        except InvalidSignalError as exc:  # a bad name or payload: checked first
            raise Refusal(400, type(exc).__name__, message_of(exc)) from None
        except DagvisorError as exc:
            raise Refusal(409, type(exc).__name__, message_of(exc)) from None
        return _answer(
            202, {"signal": name, "seq": _signal_seq(run, name, requester._who)}
        )

    async def cancel(self, request: Request) -> Response:
        run, requester, body = await self._change(request)
        reason = _text(body, "reason")
        request_ = CancelRun(reason=reason, requester=requester._who, reply=ReplySlot())
        await _refusing(ask(run._env, request_))
        return _answer(200, {"id": run.id})


def _signal_seq(run: Run, name: str, who: str) -> int | None:
    """The sequence number of the latest signal ``name`` that ``who`` sent."""
    audit = run.audit()
    for index in range(len(audit) - 1, max(-1, len(audit) - 1001), -1):
        record = audit[index]
        if (
            record.kind == "signal"
            and record.signal == name
            and record.requester == who
        ):
            return record.seq
    return None


async def _refusing(change: Awaitable[Any]) -> Any:
    """The answer of a change request; a refusal becomes a 409 with its typed error."""
    try:
        return await change
    except DagvisorError as exc:
        raise Refusal(409, type(exc).__name__, message_of(exc)) from None


def _seq_of(run: Run, name: str, kind: str) -> int | None:
    """The sequence number of the last accepted ``kind`` change naming ``name``."""
    for record in reversed(run.audit().for_stage(name)):
        if record.accepted and record.kind == kind:
            return record.seq
    return None


def _endpoint(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    return answering(handler, _refused)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status >= 500:
        logger.error("control API: %s on %s", type(exc).__name__, request.url.path)
        return _answer(500, {"error": "InternalError", "message": "an internal error"})
    text = "no such route" if status == 404 else "not allowed"
    return _answer(status, {"error": "HTTPError", "message": text})


def control_app(
    runs: RunIndex, tokens: Tokens, registry: StageRegistry, *, port: int = 0
) -> Starlette:
    """The control API and the live view as an ASGI app (served on ``port``)."""
    access = Access(tokens, port=port)
    api = _Api(runs, access, registry)
    routes = [
        *view_routes(runs, access),
        Route("/api/runs", _endpoint(api.runs), methods=["GET"]),
        Route("/api/runs/{run_id}", _endpoint(api.show), methods=["GET"]),
        Route("/api/runs/{run_id}/audit", _endpoint(api.audit), methods=["GET"]),
        Route("/api/runs/{run_id}/events", _endpoint(api.events), methods=["GET"]),
        Route("/api/runs/{run_id}/stages", _endpoint(api.add_stage), methods=["POST"]),
        Route("/api/runs/{run_id}/edges", _endpoint(api.add_edge), methods=["POST"]),
        Route(
            "/api/runs/{run_id}/stages/{name}/cancel",
            _endpoint(api.cancel_stage),
            methods=["POST"],
        ),
        Route("/api/runs/{run_id}/cancel", _endpoint(api.cancel), methods=["POST"]),
        Route(
            "/api/runs/{run_id}/signals/{signal}",
            _endpoint(api.signal),
            methods=["POST"],
        ),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
