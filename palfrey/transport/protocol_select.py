"""Which protocol serves an accepted connection: decided here, once per connection.

The ``http`` option names the candidates: ``h11`` and ``httptools`` mean
HTTP/1.1 only, ``h2`` HTTP/2 only, and ``auto`` both. Under TLS, ALPN has
usually chosen already; otherwise ``auto`` looks at the first bytes for the
HTTP/2 connection preface (prior knowledge, RFC 9113 §3.3) and serves
HTTP/1.1 when it is not there, where ``Upgrade: h2c`` can still switch in
cleartext (:mod:`palfrey.transport.h2c`).
WebSocket arrives as an HTTP/1.1 upgrade or as an HTTP/2 extended CONNECT.
The accept loop stays protocol-blind.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import trio

from palfrey.protocols.h11 import H1Protocol
from palfrey.transport.errors import ServeError
from palfrey.transport.h2c import h2c_upgrade
from palfrey.transport.http2 import H2Connection, open_h2_connection
from palfrey.transport.http11 import H1Connection
from palfrey.transport.state import FIRST_REQUEST_GRACE
from palfrey.transport.websocket import websocket_upgrade

if TYPE_CHECKING:
    from collections.abc import Callable

    from palfrey.asgi.scope import Address
    from palfrey.config.schema import Config
    from palfrey.protocols.base import ProtocolHandler
    from palfrey.transport.socket_stream import SocketStream
    from palfrey.transport.state import ConnectionControl, ServerState

    HandlerFactory = Callable[..., ProtocolHandler]

#: What an HTTP/2 client sends first (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Bytes read to see whether a cleartext connection starts with the preface.
_PEEK_SIZE = 64 * 1024


def alpn_protocols(http: str) -> list[str]:
    """What TLS offers in ALPN for the ``http`` option, in order of preference."""
    if http == "h2":
        return ["h2"]
    if http == "auto":
        return ["h2", "http/1.1"]
    return ["http/1.1"]


def protocol_names(config: Config) -> str:
    """The protocols the ``http`` and ``ws`` options serve, as the start-up banner says them."""
    names = []
    if config.http == "h3":
        return "HTTP/3 (aioquic)"
    if config.http != "h2":
        names.append(f"HTTP/1.1 ({parser_name(h1_protocol_class(config.http))})")
    if config.http in ("auto", "h2"):
        names.append("HTTP/2 (h2)")
    if config.quic_bind:
        names.append("HTTP/3 (aioquic)")
    names.append("WebSocket (off)" if config.ws == "none" else "WebSocket (wsproto)")
    return ", ".join(names)


async def open_connection(
    transport: trio.abc.Stream,
    state: ServerState,
    control: ConnectionControl,
    *,
    socket_stream: SocketStream,
    tls: dict[str, Any] | None,
    client: Address,
    server: Address,
) -> H1Connection | H2Connection | None:
    """The connection object that serves ``transport`` (its handshakes already done),
    over ``socket_stream`` (the same stream, or the socket under TLS); None if the
    client left or went quiet before it said which protocol it speaks. ``tls`` is the
    connection's ``tls`` scope extension under TLS, None in cleartext."""
    http = state.config.http
    scheme = "https" if tls is not None else "http"
    initial = b""
    alpn = transport.selected_alpn_protocol() if tls is not None else None  # type: ignore[attr-defined]
    if http != "auto" or alpn is not None:
        # ALPN chose; or one protocol is served whatever the client says, and a
        # client speaking another one gets that protocol's error.
        use_h2 = alpn == "h2" if alpn is not None else http == "h2"
    else:
        peeked = await _peek(transport, socket_stream, state, control)
        if peeked is None:
            return None
        initial = peeked
        use_h2 = initial.startswith(PREFACE)
    if use_h2:
        return open_h2_connection(
            transport,
            state,
            control,
            scheme=scheme,
            client=client,
            server=server,
            initial=initial,
            tls=tls,
        )
    config = state.config
    protocol = h1_protocol_class(http)(
        max_incomplete_event_size=config.h11_max_incomplete_event_size,
        limit_request_body=config.limit_request_body,
        max_target_length=config.limit_request_target,
    )
    return H1Connection(
        transport,
        protocol,
        state,
        control,
        scheme=scheme,
        client=client,
        server=server,
        tls=tls,
        # A WSGI app still gets the handshake, so its adapter can refuse it clearly.
        upgrade_handler=websocket_upgrade if config.ws != "none" else None,
        h2c_handler=h2c_upgrade if http == "auto" and tls is None else None,
        socket_stream=socket_stream,
        initial_data=initial,
    )


async def _peek(
    transport: trio.abc.Stream,
    socket_stream: SocketStream,
    state: ServerState,
    control: ConnectionControl,
) -> bytes | None:
    """The first bytes of a cleartext connection, enough to tell the HTTP/2 preface from
    an HTTP/1.1 request; read under the request-head deadline, as HTTP/1.1 would.

    Bytes that came with the connection are read without entering the waiting scope
    (as :meth:`H1Connection.run` does), which then stays the connection's: the scope
    is entered, and replaced, only if the peek has to wait.
    """
    data = b""
    now = trio.current_time()
    control.deadline = now + state.config.timeout_request_header
    if state.stopping:
        # Accepted as shutdown began: see ConnectionControl.shutdown.
        control.deadline = min(control.deadline, now + FIRST_REQUEST_GRACE)
    control.awaiting_first_request = True
    control.idle = True
    waited = False
    try:
        if transport is socket_stream:
            try:
                ready = await socket_stream.receive_ready(_PEEK_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if ready == b"":
                return None
            if ready is not None:
                data = ready
                if not _undecided(data):
                    return data
        waited = True
        with control.waiting_scope:
            while _undecided(data):
                try:
                    chunk = await transport.receive_some(_PEEK_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                if not chunk:
                    return None
                data += chunk
            return data
        return None
    finally:
        control.idle = False
        control.deadline = math.inf
        if waited:
            # A scope is entered once: the connection gets a fresh one for its own waits.
            control.waiting_scope = trio.CancelScope()


def _undecided(data: bytes) -> bool:
    """Whether ``data`` could still be the start of the HTTP/2 preface."""
    return len(data) < len(PREFACE) and PREFACE.startswith(data)


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
