"""Checking an HTTP/2 or HTTP/3 request's header fields in one pass (RFC 9113 §8.1.1, §8.2,
§8.3; RFC 9114 §4.1.2, §4.2, §4.3 repeat the rules).

h2 can check them too, but it reports a malformed request as a connection
error and walks every field once per rule, byte by byte in Python. Here one
loop does every rule with a regular expression per field, splits off the
pseudo-header fields, joins cookie crumbs (§8.2.3) and counts the list's size;
a malformed request is a :class:`MalformedRequest`, which the caller answers
with a stream error, the reaction §8.1.1 asks for.
"""

from __future__ import annotations

import re

import attrs

#: Characters a field name must not contain (§8.2.1): controls, space, uppercase,
#: DEL and above; a colon only at the start of a pseudo-header field.
_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]|(?<=.):")
#: Characters a field value must not contain (§8.2.1).
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_WHITESPACE = (0x20, 0x09)
#: Fields that only mean something to one HTTP/1.1 connection (§8.2.2).
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))
#: The size RFC 7541 §4.1 counts per field on top of its name and value.
FIELD_OVERHEAD = 32


class MalformedRequest(Exception):
    """The request's header section breaks RFC 9113: reset its stream with PROTOCOL_ERROR."""


@attrs.frozen(slots=True)
class RequestHead:
    """A request's pseudo-header fields, its other fields, and the list's RFC 7541 size."""

    method: bytes
    path: bytes | None
    scheme: bytes | None
    authority: bytes | None
    protocol: bytes | None
    headers: list[tuple[bytes, bytes]]
    size: int


def parse_request_fields(fields: list[tuple[bytes, bytes]]) -> RequestHead:
    """Split and check a decoded request header list; raises :class:`MalformedRequest`."""
    pseudo: dict[bytes, bytes] = {}
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host: bytes | None = None
    size = 0
    bad_name = _BAD_NAME.search
    bad_value = _BAD_VALUE.search
    for name, value in fields:
        size += len(name) + len(value) + FIELD_OVERHEAD
        if not name:
            raise MalformedRequest("empty field name")
        if value and (
            bad_value(value) is not None or value[0] in _WHITESPACE or value[-1] in _WHITESPACE
        ):
            raise MalformedRequest(f"invalid value in field {name!r}")
        if name[0] == 0x3A:  # ":"
            if headers or cookies:
                raise MalformedRequest(f"pseudo-header field {name!r} after a regular field")
            if name not in _PSEUDO:
                raise MalformedRequest(f"unknown pseudo-header field {name!r}")
            if name in pseudo:
                raise MalformedRequest(f"repeated pseudo-header field {name!r}")
            pseudo[name] = value
            continue
        if bad_name(name) is not None:
            raise MalformedRequest(f"invalid field name {name!r}")
        if name in CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {name!r}")
        if name == b"te" and value.lower() != b"trailers":
            raise MalformedRequest("te other than 'trailers'")
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                raise MalformedRequest("more than one host field")
            host = value
        headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    method = pseudo.get(b":method")
    if method is None:
        raise MalformedRequest("no :method")
    path = pseudo.get(b":path")
    scheme = pseudo.get(b":scheme")
    authority = pseudo.get(b":authority")
    protocol = pseudo.get(b":protocol")
    if method == b"CONNECT" and protocol is None:
        # A plain CONNECT names only its target (§8.5).
        if path is not None or scheme is not None or authority is None:
            raise MalformedRequest("CONNECT with :path or :scheme, or without :authority")
    else:
        if protocol is not None and method != b"CONNECT":
            raise MalformedRequest(":protocol outside an extended CONNECT")
        if scheme is None or not path:
            raise MalformedRequest("no :scheme or an empty or missing :path")
        if authority is None and host is None:
            raise MalformedRequest("neither :authority nor host")
    if authority is not None and host is not None and authority != host:
        raise MalformedRequest(":authority and host differ")
    return RequestHead(method, path, scheme, authority, protocol, headers, size)


def check_trailer_fields(fields: list[tuple[bytes, bytes]]) -> None:
    """Trailers carry no pseudo-header field (§8.1) and obey the same field syntax."""
    for name, value in fields:
        if not name or name[0] == 0x3A or _BAD_NAME.search(name) is not None:
            raise MalformedRequest(f"invalid trailer field name {name!r}")
        if name in CONNECTION_SPECIFIC or _BAD_VALUE.search(value) is not None:
            raise MalformedRequest(f"invalid trailer field {name!r}")
