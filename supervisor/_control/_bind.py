"""Where the control API listens: ``HOST:PORT`` parsed, and whether it is loopback.

Pure functions with no optional dependency, so that ``runtime(serve=...)``
is checked with the other options whether or not the ``serve`` extra is
installed.
"""

from __future__ import annotations

import ipaddress

from dagvisor.actors import InvalidRequestError

__all__ = ["is_loopback", "parse_bind"]

_FORM = (
    "serve must be 'HOST:PORT' (PORT 0 to 65535, 0 picks a free one), as in "
    "'127.0.0.1:8470' or '[::1]:8470'"
)


def parse_bind(value: object) -> tuple[str, int]:
    """``HOST:PORT`` as ``(host, port)``; an IPv6 host is written in brackets.

    Raises:
        InvalidRequestError: not a string of that form.
    """
    if type(value) is not str or not value or len(value) > 300 or not value.isascii():
        msg = f"{_FORM}, not {value!r}"
        raise InvalidRequestError(msg)
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host):
            msg = f"{_FORM}; {value!r} has no IPv6 address in its brackets"
            raise InvalidRequestError(msg)
    elif ":" in host:
        msg = f"{_FORM}; write an IPv6 address in brackets, not {value!r}"
        raise InvalidRequestError(msg)
    if (
        not sep
        or not host
        or any(c.isspace() or c in "/?#@[]" for c in host)
        or not port_text.isdigit()
        or len(port_text) > 5
        or int(port_text) > 65535
    ):
        msg = f"{_FORM}, not {value!r}"
        raise InvalidRequestError(msg)
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``).

    Any other name is taken as reachable from the network: a name is not
    resolved here, since what it resolves to may change.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
