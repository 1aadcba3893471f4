"""Which protocol serves an accepted connection: decided here, once per connection.

Today that is HTTP/1.1 with the handler class the ``http`` option names
(WebSocket arrives as an HTTP/1.1 upgrade). Negotiation that picks another
protocol (ALPN, a connection preface, ``Upgrade: h2c``) belongs here too, so
the accept loop stays protocol-blind.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio

from palfrey.protocols.h11 import H1Protocol
from palfrey.transport.errors import ServeError
from palfrey.transport.http11 import H1Connection
from palfrey.transport.websocket import websocket_upgrade

if TYPE_CHECKING:
    from collections.abc import Callable

    from palfrey.asgi.scope import Address
    from palfrey.protocols.base import ProtocolHandler
    from palfrey.transport.socket_stream import SocketStream
    from palfrey.transport.state import ConnectionControl, ServerState

    HandlerFactory = Callable[..., ProtocolHandler]


def open_connection(
    transport: trio.abc.Stream,
    state: ServerState,
    control: ConnectionControl,
    *,
    socket_stream: SocketStream,
    tls: bool,
    client: Address,
    server: Address,
) -> H1Connection:
    """The connection object that serves ``transport`` (its handshakes already done),
    over ``socket_stream`` (the same stream, or the socket under TLS)."""
    config = state.config
    protocol = h1_protocol_class(config.http)(
        max_incomplete_event_size=config.h11_max_incomplete_event_size,
        limit_request_body=config.limit_request_body,
    )
    return H1Connection(
        transport,
        protocol,
        state,
        control,
        scheme="https" if tls else "http",
        client=client,
        server=server,
        # A WSGI app still gets the handshake, so its adapter can refuse it clearly.
        upgrade_handler=websocket_upgrade if config.ws != "none" else None,
        socket_stream=socket_stream,
    )


@functools.cache
def h1_protocol_class(http: str) -> HandlerFactory:
    """``"h11"``, ``"httptools"`` (which must be installed) or ``"auto"`` (httptools if it imports).

    Cached, so the import is attempted once per process rather than per connection.
    Calling it at start-up makes a missing httptools fail before any connection.
    """
    if http == "h11":
        return H1Protocol
    try:
        from palfrey.protocols.httptools import H1HttpToolsProtocol  # noqa: PLC0415
    except ImportError as exc:
        if http == "httptools":
            raise ServeError(
                f"--http httptools needs the httptools package: pip install 'palfrey[fast]' ({exc})"
            ) from None
        return H1Protocol
    return H1HttpToolsProtocol


def parser_name(handler: HandlerFactory) -> str:
    """How the start-up banner names the handler class :func:`h1_protocol_class` chose."""
    return "h11" if handler is H1Protocol else "httptools"
