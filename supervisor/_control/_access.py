"""Who a request comes from: its bearer token, or the live view's session cookie.

An API client sends ``Authorization: Bearer SECRET``. A browser logs in
once with ``?token=SECRET`` in a page's URL (as Jupyter does): the page
answers with a session cookie and a redirect to the same URL without the
secret. The cookie holds a random session id, never the secret; sessions
live in memory and end with the runtime. It is HttpOnly (no script reads
it) and SameSite=Strict, and it is accepted for reading only (GET and
HEAD): a request that changes a run must carry the bearer header, which a
cross-site page cannot make a browser send, so a forged form or script on
another site cannot ride on a logged-in browser. A session ends when its
token leaves the token file or changes there (`Tokens.current`).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from ._tokens import Token, Tokens

__all__ = ["SESSIONS_KEPT", "Access", "Refusal", "answering"]

SESSIONS_KEPT: Final = 10_000
"""The most sessions held at once; logging in beyond forgets the oldest."""

_READS: Final = frozenset({"GET", "HEAD"})


class Refusal(Exception):
    """An answer other than success: its status and typed error."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def answering(
    handler: Callable[[Request], Awaitable[Response]],
    refused: Callable[[Refusal], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` as a route's endpoint: a `Refusal` it raises is answered by
    ``refused`` (JSON for the API, a page for the live view)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Refusal as refusal:
            return refused(refusal)

    return endpoint


@final
class Access:
    """A runtime's tokens and the live view's sessions."""

    __slots__ = ("_sessions", "_tokens", "cookie")

    def __init__(self, tokens: Tokens, *, port: int) -> None:
        self._tokens = tokens
        self._sessions: dict[str, Token] = {}
        # Browsers share cookies across the ports of one host: a name of its
        # own per port keeps two served runtimes on one host apart.
        self.cookie = f"dagvisor-session-{port}"

    def login(self, secret: str) -> str | None:
        """A new session id for the token whose secret this is, or None."""
        token = self._identify(secret)
        if token is None:
            return None
        session = secrets.token_urlsafe(32)
        if len(self._sessions) >= SESSIONS_KEPT:
            del self._sessions[next(iter(self._sessions))]
        self._sessions[session] = token
        return session

    def _identify(self, secret: str) -> Token | None:
        secret = secret.strip()
        return self._tokens.identify(secret) if secret else None

    def who(self, request: Request, *, change: bool) -> Token:
        """The token a request is made with.

        Raises:
            Refusal: 401 without a valid token (the cookie counts only for
                reading), 403 for a viewer's change.
        """
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        token = None
        if scheme.lower() == "bearer":
            token = self._identify(secret)
        elif not header and not change and request.method in _READS:
            session = request.cookies.get(self.cookie)
            if session is not None:
                token = self._sessions.get(session)
                if token is not None and not self._tokens.holds(token):
                    del self._sessions[session]  # its token was revoked or changed
                    token = None
        if token is None:
            msg = "a token is needed: send 'Authorization: Bearer SECRET'"
            raise Refusal(401, "Unauthorized", msg)
        if change and token.role != "operator":
            msg = f"token {token.name!r} is a viewer's: changing a run needs an operator's"
            raise Refusal(403, "Forbidden", msg)
        return token
