"""Serving the control API: Starlette's app under Hypercorn's trio worker.

`ControlServer.run` runs in the runtime's nursery, so the server ends with
the runtime block like every other task. Hypercorn and Starlette (the
``serve`` extra) are imported only when a runtime serves.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from functools import partial
from typing import TYPE_CHECKING, Any, cast, final

import trio

from dagvisor.actors import InvalidRequestError, MissingExtraError, default_registry

from ._bind import is_loopback, parse_bind
from ._runs import RunIndex
from ._tokens import Tokens

if TYPE_CHECKING:
    from dagvisor.actors import StageRegistry

    from .._options import RuntimeOptions

__all__ = ["ControlServer", "check_installed", "control_server"]

logger = logging.getLogger("dagvisor.control")


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
        """Listen, report the bound URL, and serve until cancelled."""
        from hypercorn.config import Config
        from hypercorn.trio import serve

        from ._app import control_app

        sock = await trio.to_thread.run_sync(self._bind)
        port = sock.getsockname()[1]
        config = Config()
        # Hypercorn serves the socket bound here (so that a refused address is
        # a typed error, and no socket is left open), and closes it.
        config.bind = [f"fd://{sock.detach()}"]
        config.certfile = self._cert
        config.keyfile = self._key
        config.accesslog = None  # a URL never holds a secret, but keep no access log
        config.errorlog = logger
        config.include_server_header = False
        app = control_app(self.runs, self._tokens, self._registry, port=port)
        async with trio.open_nursery() as nursery:
            # Starlette's ASGI signature is Hypercorn's, spelled with other types.
            asgi = cast("Any", app)
            binds: list[str] = await nursery.start(partial(serve, asgi, config))
            self.url = binds[0]
            logger.info("control API on %s", self.url)
            task_status.started(self.url)

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
