"""Who may use the control API: the token file, and checking a request's secret.

A token file holds one line per token, ``NAME ROLE SHA256-OF-SECRET``: the
secret itself is never at rest, only its SHA-256 (a secret from
`secrets.token_urlsafe` has 256 bits of entropy: a fast hash loses nothing,
and a slow one would slow every request). A request's secret is hashed and
compared with every token's hash in constant time (`hmac.compare_digest`,
without stopping at the first match), so timing says nothing about which
hash matched or how much of it. No error and no log line here ever holds
a secret or a line of the file.

The file is the truth while the runtime serves: each request looks at it
(one ``stat``) and reads it again when it changed, so a token removed from
it is refused at once and one added works at once, without a restart. A
file that cannot be read, or that holds a bad line, lets nobody in (fail
closed) until it is fixed, and says so in the log once. File times are
coarse (a few milliseconds), so a file changed in the last two seconds is
read again on each request: a rewrite of the same size in the same tick is
not missed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import time
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

import attrs

from dagvisor.actors import InvalidRequestError, TokenFileError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ROLES", "Role", "Token", "Tokens", "add_token", "hash_secret"]

Role: TypeAlias = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HASH = re.compile(r"[0-9a-f]{64}")
_MAX_FILE = 1 << 20
_MAX_SECRET = 512
_RECENT_NS: Final = 2_000_000_000
"""A file changed less than this long ago is read again on each request."""

logger = logging.getLogger("dagvisor.control")


def hash_secret(secret: str) -> str:
    """The SHA-256 of a secret, as the token file holds it (64 hex digits)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: object) -> str:
    """A token's name: 1 to 64 letters, digits, ``_.@-``, starting with a letter or digit.

    Raises:
        InvalidRequestError: anything else.
    """
    if type(name) is not str or not _NAME.fullmatch(name):
        msg = (
            f"a token's name is 1 to 64 letters, digits and _.@- (starting with a "
            f"letter or a digit), not {name!r}"
        )
        raise InvalidRequestError(msg)
    return name


@final
@attrs.frozen
class Token:
    """One line of a token file: who, with which role, and the hash of the secret."""

    name: str
    role: Role
    digest: bytes = attrs.field(repr=False)


@final
class Tokens:
    """The tokens of a token file as it is now (`Tokens.load`), or a fixed set."""

    __slots__ = ("_failed", "_path", "_seen", "_tokens")

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)
        self._path: str | None = None
        self._seen: tuple[int, ...] | None = None
        """The file's identity, size and times when it was last read."""
        self._failed = False

    def __len__(self) -> int:
        return len(self.current())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokens:
        """Read and check a token file, and follow it from then on (see the module).

        Raises:
            TokenFileError: the file cannot be read, is not UTF-8, or a line is
                not ``NAME ROLE SHA256`` (the error names the line), or two
                lines share a name or a secret.
        """
        where = os.fspath(path)
        seen = _signature(where)
        tokens = cls(_parse(where, _read(where)))
        tokens._path, tokens._seen = where, seen
        return tokens

    def current(self) -> tuple[Token, ...]:
        """The tokens now: a followed file is read again when it changed.

        On the event loop: one ``stat`` a call, and a read of the file (at most
        1 MiB) only when it changed.
        """
        if self._path is not None:
            self._follow(self._path)
        return self._tokens

    def identify(self, secret: str) -> Token | None:
        """The token whose secret this is, or None; in constant time over the tokens."""
        tokens = self.current()
        if len(secret) > _MAX_SECRET:
            return None
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        found = None
        for token in tokens:  # every token compared, whatever matches
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    def holds(self, token: Token) -> bool:
        """Whether ``token`` (name, role and secret) is one of the tokens now."""
        return token in self.current()

    def _follow(self, path: str) -> None:
        try:
            seen = _signature(path)
        except TokenFileError as exc:
            self._fail(exc, None)
            return
        if seen == self._seen and time.time_ns() - max(seen[3], seen[4]) > _RECENT_NS:
            return
        try:
            tokens = _parse(path, _read(path))
        except TokenFileError as exc:
            self._fail(exc, seen)
            return
        if self._failed or tokens != list(self._tokens):
            logger.info("token file %s read again: %d tokens", path, len(tokens))
        self._tokens, self._seen, self._failed = tuple(tokens), seen, False

    def _fail(self, error: TokenFileError, seen: tuple[int, ...] | None) -> None:
        if not self._failed or seen != self._seen:
            logger.error("%s; no request is let in until it is fixed", error)
        self._tokens, self._seen, self._failed = (), seen, True


def _signature(path: str) -> tuple[int, ...]:
    """What changes when a file is replaced or written: identity, size, times."""
    try:
        found = os.stat(path)
    except OSError as exc:
        raise TokenFileError(path, None, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(
        found.st_mode
    ):  # a FIFO would block its reader, a device never end
        raise TokenFileError(path, None, "is not a regular file")
    return (
        found.st_dev,
        found.st_ino,
        found.st_size,
        found.st_mtime_ns,
        found.st_ctime_ns,
    )


def _read(path: str) -> str:
    # Opened without blocking and checked to be a regular file before it is
    # read: a FIFO put in its place would block the reader (the event loop).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TokenFileError(path, None, f"cannot be read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TokenFileError(path, None, "is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise TokenFileError(path, None, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE:
        raise TokenFileError(path, None, "is larger than 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenFileError(path, None, "is not UTF-8 text") from None


def _parse(path: str, text: str) -> list[Token]:
    tokens: list[Token] = []
    names: set[str] = set()
    digests: set[str] = set()
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(" ")
        if len(fields) != 3:
            raise TokenFileError(path, number, "does not have 3 fields split by spaces")
        name, role, digest = fields
        if not _NAME.fullmatch(name):
            raise TokenFileError(
                path, number, "its name is not 1 to 64 letters, digits and _.@-"
            )
        if role not in ROLES:
            raise TokenFileError(path, number, "its role is not viewer or operator")
        if not _HASH.fullmatch(digest):
            raise TokenFileError(
                path,
                number,
                "its third field is not a SHA-256 (64 lowercase hex digits)",
            )
        if name in names:
            raise TokenFileError(path, number, f"the name {name!r} is given twice")
        if digest in digests:
            raise TokenFileError(path, number, "two tokens have the same secret")
        names.add(name)
        digests.add(digest)
        tokens.append(Token(name, role, bytes.fromhex(digest)))
    return tokens


def add_token(path: str | os.PathLike[str], name: str, role: str) -> str:
    """Add a token to a token file (made with mode 0600 if new); return its secret.

    The secret is returned once and kept nowhere: the file holds its hash.

    Raises:
        InvalidRequestError: a bad name or role.
        TokenFileError: the file holds a bad line, or a token of that name.
    """
    name = check_name(name)
    if type(role) is not str or role not in ROLES:
        msg = f"a token's role is viewer or operator, not {role!r}"
        raise InvalidRequestError(msg)
    where = os.fspath(path)
    try:
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = _parse(where, _read(where))
        if any(token.name == name for token in existing):
            raise TokenFileError(
                where, None, f"it already has a token named {name!r}; pick another name"
            ) from None
        try:
            fd = os.open(where, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise TokenFileError(
                where, None, f"cannot be written ({exc.strerror})"
            ) from None
        text = _read(where)
        prefix = "" if not text or text.endswith("\n") else "\n"
    except OSError as exc:
        raise TokenFileError(
            where, None, f"cannot be created ({exc.strerror})"
        ) from None
    else:
        prefix = ""
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "a", encoding="utf-8") as file:
        file.write(f"{prefix}{name} {role} {hash_secret(secret)}\n")
    return secret
