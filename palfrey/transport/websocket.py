"""WebSocket over an HTTP/1.1 connection: the trio glue between a socket and WSProtocol.

:func:`websocket_upgrade` is the ``upgrade_handler`` of :class:`H1Connection`.
It validates the handshake, starts the app through a
:class:`~palfrey.asgi.websocket.WebSocketSession` on an :class:`H1WebSocket`,
and keeps the connection task reading for the app
(:class:`~palfrey.transport.ws_reader.MessageReader` decides who reads when)
until the WebSocket is over; then it releases the socket, even if the app
still runs.

The timers, the closing handshake and the write discipline are the same as
over HTTP/2 and live in :class:`~palfrey.transport.ws_transport.WebSocketBase`;
what is the socket's own is here. Each write is one ``send_all`` of exactly
the bytes :class:`WSProtocol` produced up to then, so nothing is buffered
beyond what it holds. A write that raised may have sent part of a frame, and
whatever followed it would be read as the rest of that frame, so after a
write fails or is cancelled part-way nothing more is written and the
WebSocket ends (1006 for the app). After a protocol failure the socket
lingers: our close frame must reach the peer before the socket is closed.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.protocols.ws import (
    HandshakeError,
    WSProtocol,
    check_h1_handshake,
    is_websocket_upgrade,
)
from palfrey.transport.http11 import RECEIVE_SIZE
from palfrey.transport.ws_transport import CLOSE_HANDSHAKE_TIMEOUT, WebSocketBase

if TYPE_CHECKING:
    from palfrey.config.schema import Config
    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.http11 import H1Connection

#: After a protocol failure, the silence that ends the lingering close.
LINGER_IDLE = 0.5
#: How long releasing the socket may take.
ABORT_TIMEOUT = 1.0
_CLOSE = (b"connection", b"close")


async def websocket_upgrade(
    connection: H1Connection, request: RequestReceived, scope: dict[str, Any]
) -> bool:
    """Serve a WebSocket handshake request; False for other upgrades (served as plain HTTP)."""
    if not is_websocket_upgrade(request.headers):
        return False
    state = connection.state
    config = state.config
    try:
        check_h1_handshake(request.method, request.http_version, request.headers)
        protocol = WSProtocol(
            request.headers,
            max_size=config.ws_max_size,
            per_message_deflate=config.ws_per_message_deflate,
        )
    except HandshakeError as exc:
        await _refuse(connection, exc)
        return True
    if connection.socket_stream is not None:
        # The app's receive() reads this socket itself, and every receive() must let
        # other tasks run: the stream's yield-skipping read, fine for request heads,
        # ends with HTTP/1.1.
        connection.socket_stream.skip_redundant_yields = False
    websocket = H1WebSocket(connection, protocol, config)
    session = websocket.session(scope, state.defaults, state.metrics)
    control = connection.control
    control.protocol = "websocket"
    control.on_shutdown = session.shutdown
    if state.stopping:
        session.shutdown()
    try:
        # H1Connection opens this nursery around every upgrade handler.
        assert connection.nursery is not None
        connection.nursery.start_soon(session.run_app, state.app)
        await websocket.run()
    finally:
        control.on_shutdown = None
        await websocket.release()
    return True


async def _refuse(connection: H1Connection, exc: HandshakeError) -> None:
    """Answer a request that is not a valid handshake; the app never sees it."""
    await connection.send_error(exc.status_code, str(exc), exc.headers)


class H1WebSocket(WebSocketBase):
    """The :class:`~palfrey.asgi.websocket.WebSocketTransport` of an upgraded HTTP/1.1 socket.

    It is also the reader's :class:`~palfrey.transport.ws_reader.EventSource`:
    ``read`` is one socket read under the timers' deadline.
    """

    __slots__ = ("_connection", "_stream")

    #: What the handshake's acceptance answers with (RFC 6455 §4.2.2).
    accept_status = 101

    def __init__(
        self,
        connection: H1Connection,
        protocol: WSProtocol,
        config: Config,
    ) -> None:
        self._connection = connection
        self._stream = stream = connection.stream
        super().__init__(
            protocol,
            partial(stream.receive_some, RECEIVE_SIZE),
            config,
        )

    # The handshake answers, framed by the HTTP/1.1 handler.

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        protocol = self.protocol
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            # A head the HTTP/1.1 handler refuses raises here, before anything is
            # answered: the session then answers 500 instead.
            head, trailing = self._connection.protocol.upgrade(
                protocol.accept(subprotocol, headers)
            )
            self._accepted = True
            self.reader.received(
                protocol.receive_data(trailing) if trailing else protocol.next_events()
            )
            if self._ping_interval is not None:
                self._next_ping = trio.current_time() + self._ping_interval
            try:
                await self._write(head + protocol.data_to_send())
            finally:
                self._answered.set()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        if not any(name == b"connection" for name, _ in headers):
            # No HTTP/1.1 follows a refused handshake on this connection: say so (RFC 9112 §9.6).
            headers = [*headers, _CLOSE]
        h1 = self._connection.protocol
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            data = h1.send_response(status, headers) + h1.send_body(body, more=not end)
            await self._write(data)
        if end:
            self._answered.set()

    async def send_body(self, body: bytes, end: bool) -> None:
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            data = self._connection.protocol.send_body(body, more=not end)
            if data:
                await self._write(data)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
        if end:
            self._answered.set()

    # The end of the connection.

    async def release(self) -> None:
        """Close the socket now that the WebSocket is over, even if the app task still runs.

        After a protocol failure the close frame is sent from here, once the
        app has been told, followed by the lingering close. The socket is then
        closed forcefully, because the app may be blocked writing to this very
        stream; the closing handshake already told the peer where data ends.
        """
        try:
            if self.protocol.failed and not self._lost:
                await self._linger()
        finally:
            self._lost = True
            with trio.CancelScope(shield=True, deadline=trio.current_time() + ABORT_TIMEOUT):
                await trio.aclose_forcefully(self._stream)

    async def _linger(self) -> None:
        """After a protocol failure: send the close frame, end our side, drop the rest.

        Closing the socket while the peer is still sending would reset the
        connection and could destroy our close frame before the peer reads
        it, so the input is drained until the peer closes or falls silent
        (as nginx's lingering close does), within ``CLOSE_HANDSHAKE_TIMEOUT`` overall.
        """
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT):
            async with self._writing:
                try:
                    await self._write(self.protocol.data_to_send())
                    if isinstance(self._stream, trio.abc.HalfCloseableStream):
                        await self._stream.send_eof()
                except (ClientDisconnected, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            while True:
                with trio.move_on_after(LINGER_IDLE) as idle:
                    if not await self._receive():
                        break
                if idle.cancelled_caught:
                    break

    async def _receive(self) -> bytes:
        try:
            return await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def _write(self, data: bytes) -> None:
        """Hand ``data`` to the socket whole, or give the socket up; call with the lock held."""
        if self._lost:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise ClientDisconnected("the WebSocket connection was given up")
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lose()
            raise ClientDisconnected("the client has disconnected") from None
        except BaseException:
            # Cancelled (or worse) part-way: how much of the frame left is unknown.
            self._lose()
            raise
