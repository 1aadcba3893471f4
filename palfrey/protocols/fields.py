"""The HTTP field grammar: what a header name and a header value may contain.

RFC 9110 §5.1: a field name is a token. §5.5: a value holds no CR, LF or NUL
and has no leading or trailing whitespace. These are pure checks on bytes, kept
on the ground floor so that every layer that accepts headers from a user (the
ASGI bridge for application responses, the configuration for ``--header``)
applies the same grammar without importing the others.
"""

from __future__ import annotations

import re

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A value may not hold these at all (the wire parsers' ``[^\x00\s]`` outside SP/HTAB runs)...
FORBIDDEN_IN_VALUE = b"\x00\n\r\x0b\x0c"
#: ...nor start or end with SP or HTAB. Checked with bytes methods: half a regex match's cost.
EDGE_WHITESPACE = (0x20, 0x09)


def is_token(name: bytes) -> bool:
    """Whether ``name`` is a valid field name (a non-empty RFC 9110 token)."""
    return TOKEN.fullmatch(name) is not None


def is_field_value(value: bytes) -> bool:
    """Whether ``value`` can be sent as a field value without splitting or smuggling a header."""
    return not value or (
        value[0] not in EDGE_WHITESPACE
        and value[-1] not in EDGE_WHITESPACE
        and len(value.translate(None, FORBIDDEN_IN_VALUE)) == len(value)
    )


def split_host_port(item: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port; raises ``ValueError``."""
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {item!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
