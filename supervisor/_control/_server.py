"""Serving the control API: Starlette's app under Hypercorn's trio worker.

`ControlServer.run` runs in the runtime's nursery, so the server ends with
the runtime block like every other task. Hypercorn and Starlette (the
``serve`` extra) are imported only when a runtime serves. At most
`MAX_CONNECTIONS` connections are open at once: one more is closed as soon
as it is accepted (and the log says so), so that clients, even without a
token, cannot take every file descriptor of the runtime's process.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import weakref
from typing import TYPE_CHECKING, Any, cast, final

import trio

from dagvisor.actors import InvalidRequestError, MissingExtraError, default_registry

from ._bind import is_loopback, parse_bind
from ._runs import RunIndex
from ._tokens import Tokens

if TYPE_CHECKING:
    from dagvisor.actors import StageRegistry

    from .._options import RuntimeOptions

__all__ = ["MAX_CONNECTIONS", "ControlServer", "check_installed", "control_server"]

logger = logging.getLogger("dagvisor.control")

MAX_CONNECTIONS = 256
"""The most connections the control API keeps open at once."""


def check_installed() -> None:
    """Raise `MissingExtraError` unless Starlette and Hypercorn can be imported."""
    try:
        import hypercorn.trio  # noqa: F401
        import starlette  # noqa: F401
    except ImportError:
        what = "runtime(serve=...)"
        raise MissingExtraError(what, "serve") from None


@final
class ControlServer:
    """The control API of one runtime: its runs, its tokens, where it listens."""

    __slots__ = (
        "_cert",
        "_host",
        "_key",
        "_port",
        "_registry",
        "_tokens",
        "runs",
        "url",
    )

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tokens: Tokens,
        registry: StageRegistry,
        cert: str | None,
        key: str | None,
    ) -> None:
        self._host = host
        self._port = port
        self._tokens = tokens
        self._registry = registry
        self._cert = cert
        self._key = key
        self.runs = RunIndex()
        self.url: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[str]) -> None:
        """Listen, report the bound URL, and serve until cancelled.

        Hypercorn's own ``serve`` is not used: it sends to a connection in a
        shielded scope without a deadline, so a client that stops reading
        (an event stream left open, a large answer never read) would hold
        the runtime block open forever. Here each connection's socket is
        known, and closed when the server is cancelled, which ends even a
        send that waits for such a client.
        """
        from hypercorn.config import Config
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.typing import ConnectionState
        from hypercorn.utils import wrap_app

        from ._app import control_app

        sock = await trio.to_thread.run_sync(self._bind)
        sock.listen(128)
        host, port = sock.getsockname()[:2]
        config = Config()
        config.certfile = self._cert
        config.keyfile = self._key
        config.accesslog = None  # a URL never holds a secret, but keep no access log
        config.errorlog = logger
        config.include_server_header = False
        # Starlette's ASGI signature is Hypercorn's, spelled with other types.
        app = wrap_app(
            cast(
                "Any", control_app(self.runs, self._tokens, self._registry, port=port)
            ),
            0,
            "asgi",
        )
        listener = _Tracked(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        listeners: list[trio.abc.Listener[Any]] = [listener]
        scheme = "http"
        if self._cert is not None:
            ssl_context = config.create_ssl_context()
            assert ssl_context is not None
            listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True)]
            scheme = "https"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{port}"
        context, state = WorkerContext(None), ConnectionState({})

        # Typed as Hypercorn types it; a plain SocketStream is served the same.
        async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
            try:
                await TCPServer(app, config, context, state, stream)
            finally:
                listener.ended_one()

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handler, listeners)
            logger.info("control API on %s", self.url)
            task_status.started(self.url)
            try:
                await trio.sleep_forever()
            finally:  # before the nursery waits for the connections' tasks
                listener.close_all()

    def _bind(self) -> socket.socket:
        host = self._host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, self._port))
        except OSError as exc:
            sock.close()
            shown = f"[{host}]" if ":" in host else host
            msg = (
                f"runtime(serve=...) cannot listen on {shown}:{self._port} "
                f"({exc.strerror or exc}); pick another address or port (0 picks "
                "a free one)"
            )
            raise InvalidRequestError(msg) from None
        return sock

    async def start(self, nursery: trio.Nursery) -> None:
        """Start serving in ``nursery`` (the runtime's); a refusal is raised as itself."""
        try:
            await nursery.start(self.run)
        except* InvalidRequestError as group:
            raise group.exceptions[0] from None


@final
class _Tracked(trio.abc.Listener[trio.SocketStream]):
    """A listener that keeps the connections it accepted, to close them at the end,
    and closes at once those beyond `MAX_CONNECTIONS`."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self._streams: weakref.WeakSet[trio.SocketStream] = weakref.WeakSet()
        self._open = 0
        self._told = False  # the log said the server is full, since it last was not

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self._listener.accept()
            if self._open < MAX_CONNECTIONS:
                self._open += 1
                self._streams.add(stream)
                return stream
            stream.socket.close()
            if not self._told:
                self._told = True
                logger.warning(
                    "the control API has %d connections open, its most: it closes "
                    "new ones until some end",
                    MAX_CONNECTIONS,
                )

    def ended_one(self) -> None:
        """A connection's handler ended: room for another."""
        self._open -= 1
        if self._open < MAX_CONNECTIONS:
            self._told = False

    async def aclose(self) -> None:
        await self._listener.aclose()

    def close_all(self) -> None:
        """Close every connection still open: a send waiting on one ends."""
        for stream in list(self._streams):
            stream.socket.close()


async def control_server(options: RuntimeOptions) -> ControlServer:
    """The control API's server for ``runtime(serve=...)``: the extra and the
    token file checked, the opt-out of TLS off loopback logged loudly.

    Raises:
        MissingExtraError: the ``serve`` extra is not installed.
        TokenFileError: the token file cannot be read or holds a bad line.
    """
    check_installed()
    assert options.serve is not None
    assert options.tokens is not None
    host, port = parse_bind(options.serve)
    tokens = await trio.to_thread.run_sync(Tokens.load, options.tokens)
    cert = None if options.serve_cert is None else os.fspath(options.serve_cert)
    key = None if options.serve_key is None else os.fspath(options.serve_key)
    if cert is not None and key is not None:
        await trio.to_thread.run_sync(_check_tls, cert, key)
    if not is_loopback(host) and options.serve_cert is None:
        logger.warning(
            "INSECURE: the control API serves %s without TLS "
            "(serve_insecure_non_loopback=True): tokens and runs cross the "
            "network in clear text",
            options.serve,
        )
    return ControlServer(
        host=host,
        port=port,
        tokens=tokens,
        registry=options.registry or default_registry,
        cert=cert,
        key=key,
    )


def _check_tls(cert: str, key: str) -> None:
    """Load the certificate and its key once, so that a bad pair is a typed error."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        msg = (
            f"serve_cert={cert!r} and serve_key={key!r} cannot be loaded as a "
            f"certificate and its private key (PEM): {type(exc).__name__}"
        )
        raise InvalidRequestError(msg) from None
