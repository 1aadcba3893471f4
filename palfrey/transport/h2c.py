"""``Upgrade: h2c``: an HTTP/1.1 request that switches its cleartext connection to HTTP/2.

RFC 7540 §3.2 (removed from RFC 9113, still what clients such as curl send):
the request carries ``HTTP2-Settings`` and names both tokens in
``Connection``; the server reads the request's body, answers ``101``, and
then answers that request on stream 1 as HTTP/2. A request whose body is
chunked or larger than :data:`UPGRADE_BODY_LIMIT` is served as HTTP/1.1
instead (the upgrade is optional, §3.2), so the server never holds more than
that much body in memory to switch.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from palfrey.asgi.errors import ClientDisconnected
from palfrey.protocols.events import LocalProtocolError, RequestReceived
from palfrey.protocols.h2 import H2ConnectionError
from palfrey.protocols.ws.handshake import header_tokens
from palfrey.transport.http2 import open_h2_connection

if TYPE_CHECKING:
    from palfrey.transport.http11 import H1Connection

#: The largest request body read over HTTP/1.1 to switch to HTTP/2.
UPGRADE_BODY_LIMIT = 64 * 1024

_SWITCH = [(b"connection", b"Upgrade"), (b"upgrade", b"h2c")]


def wants_h2c(request: RequestReceived) -> bytes | None:
    """The ``HTTP2-Settings`` value if ``request`` is a valid h2c upgrade, else None."""
    headers = request.headers
    if b"h2c" not in header_tokens(headers, b"upgrade"):
        return None
    if not {b"upgrade", b"http2-settings"} <= set(header_tokens(headers, b"connection")):
        return None
    settings = [value for name, value in headers if name == b"http2-settings"]
    if len(settings) != 1:
        return None
    value = settings[0].strip()
    try:
        # token68 without padding (RFC 7540 §3.2.1).
        base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return value


def _small_body(request: RequestReceived) -> bool:
    """The body is framed by ``content-length`` (or absent) and within the limit.

    Judged from the head, not from what is still unread: part of the body may
    have come with the head, and it counts too.
    """
    length = 0
    for name, value in request.headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            length = int(value)
    return length <= UPGRADE_BODY_LIMIT


async def h2c_upgrade(connection: H1Connection, request: RequestReceived) -> bool:
    """Switch to HTTP/2 and serve the rest of the connection; False to stay on HTTP/1.1."""
    settings = wants_h2c(request)
    if settings is None:
        return False
    if not _small_body(request):
        return False
    protocol = connection.protocol
    body = bytearray()
    while not protocol.request_complete:
        chunk = await connection.receive_body()
        if chunk is None:
            # The client left or broke the framing: HTTP/1.1 answers (or closes).
            return False
        body += chunk[0]
        if not chunk[1]:
            break
    upgraded = RequestReceived(
        method=request.method,
        target=request.target,
        headers=request.headers,
        http_version="2",
        stream_id=1,
        scheme=connection.scheme.encode("ascii"),
    )
    try:
        response, trailing = protocol.upgrade(_SWITCH)
        h2 = open_h2_connection(
            connection.stream,
            connection.state,
            connection.control,
            scheme=connection.scheme,
            client=connection.client,
            server=connection.server,
            initial=trailing,
            upgraded=(upgraded, bytes(body)),
            settings=settings,
        )
    except (LocalProtocolError, H2ConnectionError):
        return False
    try:
        await connection.send_raw(response)
    except ClientDisconnected:
        return True
    await h2.run()
    return True
