"""WebSocket (RFC 6455, RFC 7692) over wsproto: bytes in, events out, bytes to write.

One module per concern:

- :mod:`~palfrey.protocols.ws.handshake`: the opening handshake's request checks
  (:func:`check_h1_handshake` for the HTTP/1.1-only rules), subprotocol and
  extension offers, and the response headers;
- :mod:`~palfrey.protocols.ws.deflate`: permessage-deflate with the inflated
  size of a message bounded by ``max_size``;
- :mod:`~palfrey.protocols.ws.frames`: the fast path, whole unfragmented text
  and binary frames parsed and framed without wsproto;
- :mod:`~palfrey.protocols.ws.close_codes`: the close codes;
- :mod:`~palfrey.protocols.ws.protocol`: :class:`WSProtocol`, which ties them
  together around wsproto's post-handshake connection.

Everything the transport and the ASGI bridge use is importable from here.
"""

from __future__ import annotations

from palfrey.protocols.ws.close_codes import (
    ABNORMAL_CLOSURE,
    INTERNAL_ERROR,
    NO_STATUS,
    NORMAL_CLOSURE,
    SERVICE_RESTART,
)
from palfrey.protocols.ws.deflate import BoundedPerMessageDeflate, negotiate_deflate
from palfrey.protocols.ws.handshake import (
    HandshakeError,
    accept_token,
    check_h1_handshake,
    header_tokens,
    is_websocket_upgrade,
)
from palfrey.protocols.ws.protocol import WSProtocol

__all__ = [
    "ABNORMAL_CLOSURE",
    "INTERNAL_ERROR",
    "NORMAL_CLOSURE",
    "NO_STATUS",
    "SERVICE_RESTART",
    "BoundedPerMessageDeflate",
    "HandshakeError",
    "WSProtocol",
    "accept_token",
    "check_h1_handshake",
    "header_tokens",
    "is_websocket_upgrade",
    "negotiate_deflate",
]
