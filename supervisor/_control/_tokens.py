"""Who may use the control API: the token file, and checking a request's secret.

A token file holds one line per token, ``NAME ROLE SHA256-OF-SECRET``: the
secret itself is never at rest, only its SHA-256 (a secret from
`secrets.token_urlsafe` has 256 bits of entropy: a fast hash loses nothing,
and a slow one would slow every request). A request's secret is hashed and
compared with every token's hash in constant time (`hmac.compare_digest`,
without stopping at the first match), so timing says nothing about which
hash matched or how much of it. No error and no log line here ever holds
a secret or a line of the file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from typing import TYPE_CHECKING, Literal, TypeAlias, final

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
    """The tokens of one file, read once (`Tokens.load`)."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokens:
        """Read and check a token file.

        Raises:
            TokenFileError: the file cannot be read, is not UTF-8, or a line is
                not ``NAME ROLE SHA256`` (the error names the line), or two
                lines share a name or a secret.
        """
        return cls(_parse(os.fspath(path), _read(os.fspath(path))))

    def identify(self, secret: str) -> Token | None:
        """The token whose secret this is, or None; in constant time over the tokens."""
        if len(secret) > _MAX_SECRET:
            return None
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        found = None
        for token in self._tokens:  # every token compared, whatever matches
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found


def _read(path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise TokenFileError(path, None, f"cannot be read ({exc.strerror})") from None
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
