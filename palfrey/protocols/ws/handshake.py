"""The WebSocket opening handshake (RFC 6455 §4): request checks and response headers.

The handshake arrives as an ordinary HTTP request parsed by the HTTP handler
(HTTP/1.1 ``Upgrade`` today, an extended CONNECT stream over HTTP/2 later).
The rules every HTTP version shares live here apart from the HTTP/1.1-only
ones (:func:`check_h1_handshake`), so a future HTTP/2 transport can reuse the
former without the latter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from palfrey.protocols.events import ProtocolError

#: RFC 6455 §1.3: appended to the client's key before hashing.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = b"13"

#: The response headers only the server may set during the handshake.
HANDSHAKE_HEADERS = frozenset(
    {b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-extensions"}
)


class HandshakeError(ProtocolError):
    """The request is not an acceptable WebSocket handshake.

    ``headers`` are the extra response headers the refusal must carry
    (``Sec-WebSocket-Version`` on a 426).
    """

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message, status_code)
        self.headers = headers or []


def header_tokens(headers: Any, name: bytes, *, lower: bool = True) -> list[bytes]:
    """Every comma-separated token of every ``name`` header, stripped (and lower-cased)."""
    tokens = [
        token.strip()
        for key, value in headers
        if key.lower() == name
        for token in value.split(b",")
        if token.strip()
    ]
    return [token.lower() for token in tokens] if lower else tokens


def text_tokens(headers: Any, name: bytes) -> list[str]:
    """The tokens of ``name`` headers as ``str``, case kept (subprotocols, extension offers)."""
    return [token.decode("latin-1") for token in header_tokens(headers, name, lower=False)]


def is_websocket_upgrade(headers: Any) -> bool:
    """Whether an HTTP/1.1 request asks to switch to WebSocket (other upgrades stay HTTP)."""
    return b"websocket" in header_tokens(headers, b"upgrade")


def check_h1_handshake(method: bytes, http_version: str, headers: Any) -> None:
    """The HTTP/1.1-only rules of RFC 6455 §4.2.1; raises :class:`HandshakeError`.

    Over HTTP/2 (RFC 8441) the request is an extended CONNECT instead and
    none of these headers exist, so they are kept out of the protocol object.
    """
    if method != b"GET":
        raise HandshakeError("a WebSocket handshake must be a GET request")
    if http_version != "1.1":
        raise HandshakeError("a WebSocket handshake needs HTTP/1.1")
    if b"upgrade" not in header_tokens(headers, b"connection"):
        raise HandshakeError("'Connection: upgrade' is missing")
    for key, value in headers:
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            raise HandshakeError("a WebSocket handshake must not have a body")


def check_version_and_key(headers: Any, require_key: bool) -> bytes | None:
    """Check the rules every HTTP version shares; return the client's key, if one is required.

    Version 13 is always required (426 otherwise, naming the version we speak);
    over HTTP/1.1 so is exactly one key that is 16 bytes in base64.
    """
    versions = [value.strip() for key, value in headers if key.lower() == b"sec-websocket-version"]
    if versions != [SUPPORTED_VERSION]:
        raise HandshakeError(
            "unsupported Sec-WebSocket-Version",
            426,
            [(b"sec-websocket-version", SUPPORTED_VERSION), (b"upgrade", b"websocket")],
        )
    if not require_key:
        return None
    keys = [value.strip() for key, value in headers if key.lower() == b"sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError("exactly one Sec-WebSocket-Key is required")
    try:
        nonce = base64.b64decode(keys[0], validate=True)
    except binascii.Error:
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64")
    return keys[0]


def accept_token(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())


def response_headers(
    key: bytes | None,
    subprotocol: str | None,
    deflate_response: bytes | None,
    headers: list[tuple[bytes, bytes]] | None,
) -> list[tuple[bytes, bytes]]:
    """The handshake response headers: the server's own, then the application's.

    ``headers`` are the application's (already validated); any that would
    contradict the handshake are dropped, and ``Sec-WebSocket-Protocol``
    from ``subprotocol`` replaces one the application set by hand.
    """
    response: list[tuple[bytes, bytes]] = []
    if key is not None:
        response += [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept_token(key)),
        ]
    if subprotocol is not None:
        response.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
    if deflate_response is not None:
        response.append((b"sec-websocket-extensions", deflate_response))
    for name, value in headers or ():
        if name in HANDSHAKE_HEADERS:
            continue
        if name == b"sec-websocket-protocol" and subprotocol is not None:
            continue
        response.append((name, value))
    return response
