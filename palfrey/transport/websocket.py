"""WebSocket over an HTTP/1.1 connection: the trio glue between a socket and WSProtocol.

:func:`websocket_upgrade` is the ``upgrade_handler`` of :class:`H1Connection`.
It validates the handshake, starts the app through a :class:`WebSocketSession`
on an :class:`H1WebSocket`, and keeps the connection task reading for the app
(:class:`~palfrey.transport.ws_reader.MessageReader` decides who reads when)
until the WebSocket is over; then it releases the socket, even if the app
still runs.

Timers are deadlines on the read's cancel scope, not tasks: the next ping,
the pong deadline and the end of the closing handshake. They only run while
some task is reading, so an app that is slow to take its messages (nobody
reading, pongs unread in the socket) is not mistaken for a dead peer.

All writes go through one lock, and each writes exactly the bytes
:class:`WSProtocol` produced up to then, so nothing is buffered beyond what
one ``send_all`` holds. A write that raised may have sent part of a frame,
and whatever followed it would be read as the rest of that frame, so after a
write fails or is cancelled part-way nothing more is written and the
WebSocket ends (1006 for the app). Each writer checks for cancellation before
it makes its frame, so a cancelled ``send()`` that wrote nothing leaves the
WebSocket usable.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.websocket import WebSocketSession, websocket_scope
from palfrey.protocols.events import WebSocketDisconnected, WebSocketEvent
from palfrey.protocols.ws import (
    ABNORMAL_CLOSURE,
    INTERNAL_ERROR,
    NORMAL_CLOSURE,
    HandshakeError,
    WSProtocol,
    check_h1_handshake,
    is_websocket_upgrade,
)
from palfrey.transport.http11 import RECEIVE_SIZE
from palfrey.transport.ws_reader import MessageReader

if TYPE_CHECKING:
    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.http11 import H1Connection

logger = logging.getLogger("palfrey.error")

#: How long the peer gets to answer our close frame, or to stop sending after a failure.
CLOSE_HANDSHAKE_TIMEOUT = 5.0
#: After a protocol failure, the silence that ends the lingering close.
LINGER_IDLE = 0.5
#: How long releasing the socket may take.
ABORT_TIMEOUT = 1.0
_CLOSE = (b"connection", b"close")
_LOST = WebSocketDisconnected(ABNORMAL_CLOSURE, "")


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
    websocket = H1WebSocket(
        connection,
        protocol,
        ping_interval=config.ws_ping_interval or None,
        ping_timeout=config.ws_ping_timeout or None,
        max_queue=config.ws_max_queue,
    )
    session = WebSocketSession(
        scope=websocket_scope(scope, protocol.subprotocols),
        transport=websocket,
        defaults=state.defaults,
    )
    control = connection.control
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


class H1WebSocket:
    """The :class:`~palfrey.asgi.websocket.WebSocketTransport` of an upgraded HTTP/1.1 socket.

    It is also the reader's :class:`~palfrey.transport.ws_reader.EventSource`:
    ``read`` is one socket read under the timers' deadline.
    """

    __slots__ = (
        "_accepted",
        "_answered",
        "_close_deadline",
        "_connection",
        "_left_at",
        "_lost",
        "_next_ping",
        "_nursery",
        "_ping_interval",
        "_ping_timeout",
        "_pong_deadline",
        "_read_scope",
        "_stream",
        "_writing",
        "protocol",
        "reader",
        "receive_message",
    )

    #: What the handshake's acceptance answers with (RFC 6455 §4.2.2).
    accept_status = 101

    def __init__(
        self,
        connection: H1Connection,
        protocol: WSProtocol,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        max_queue: int = 32,
    ) -> None:
        self._connection = connection
        self._stream = connection.stream
        self.protocol = protocol
        self.reader = MessageReader(self, max_queue)
        #: The session awaits the reader's method itself, without a wrapper around it.
        self.receive_message = self.reader.receive_message
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._writing = WriteTurn()
        #: The handshake is answered (accepted, refused, or the app gave up on it).
        self._answered = trio.Event()
        self._accepted = False
        self._next_ping = math.inf
        self._pong_deadline = math.inf
        self._close_deadline = math.inf
        self._read_scope: trio.CancelScope | None = None
        self._left_at: float | None = None
        #: A write failed or was cancelled part-way, or the peer stopped answering:
        #: the socket carries nothing more.
        self._lost = False
        self._nursery: trio.Nursery | None = None

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

    # Messages and the closing handshake.

    async def send_message(self, data: bytes | str) -> None:
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            protocol = self.protocol
            if not protocol.open:
                await trio.lowlevel.cancel_shielded_checkpoint()
                raise ClientDisconnected("the WebSocket is closed")
            protocol.send_message(data)
            await self._write(protocol.data_to_send())

    async def close(self, code: int, reason: str) -> None:
        self.reader.stop(WebSocketDisconnected(code, reason))
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            protocol = self.protocol
            if not protocol.open:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            protocol.close(code, reason)
            self._close_deadline = trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
            if self._read_scope is not None:
                self._read_scope.deadline = min(self._read_scope.deadline, self._close_deadline)
            await self._write(protocol.data_to_send())

    def close_soon(self, code: int, reason: str) -> None:
        self.reader.stop(WebSocketDisconnected(code, reason))
        if self._nursery is not None:
            self._nursery.start_soon(self._close_quietly, code, reason)

    def app_finished(self) -> None:
        self._answered.set()
        self.reader.finish()
        if self._accepted and self.protocol.open and not self._lost:
            # The app's close was cancelled before it was written: nobody else will
            # close, and a peer that answers pings would keep the connection forever.
            self.close_soon(NORMAL_CLOSURE, "")

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            await self.close(code, reason)
        except ClientDisconnected:
            logger.debug("WebSocket client gone before close %d could be sent", code)

    # The connection task.

    async def run(self) -> None:
        """Wait for the app to answer the handshake; if it accepted, read until the end.

        The nursery holds a close the server asked for (shutdown), written
        beside the reads; it is moot, and cancelled, once the peer is gone.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._answered.wait()
                if self._accepted:
                    await self.reader.run()
            finally:
                self._nursery = None
            nursery.cancel_scope.cancel()

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

    # The reader's EventSource.

    async def read(self) -> list[WebSocketEvent]:
        protocol = self.protocol
        if self._lost:
            return protocol.receive_data(b"")
        if self._left_at is not None:
            # The time nobody was reading (the app busy, its queue full) does not count
            # against the peer.
            self._pong_deadline += trio.current_time() - self._left_at
        try:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._read_scope = scope
                try:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                finally:
                    self._read_scope = None
            if scope.cancelled_caught:
                return await self._on_timer()
            events = protocol.receive_data(data)
            if protocol.wants_write and not protocol.failed:
                await self._flush()
            return events
        finally:
            # Pings are sent only while reading, so only an unanswered one needs the time.
            self._left_at = trio.current_time() if protocol.awaiting_pong else None

    def interrupt(self) -> None:
        if self._read_scope is not None:
            self._read_scope.cancel()

    def _deadline(self) -> float:
        protocol = self.protocol
        deadline = self._close_deadline
        if protocol.awaiting_pong:
            deadline = min(deadline, self._pong_deadline)
        elif protocol.open:
            deadline = min(deadline, self._next_ping)
        return deadline

    async def _on_timer(self) -> list[WebSocketEvent]:
        """The read's scope was cancelled: a timer fell due, a write failed, or an interrupt."""
        protocol = self.protocol
        now = trio.current_time()
        if self._lost or now >= self._close_deadline:
            # The peer never answered our close frame, or the socket broke: give up (1006).
            self._lost = True
            return protocol.receive_data(b"")
        if protocol.awaiting_pong and now >= self._pong_deadline:
            logger.debug("WebSocket keepalive ping timed out; closing with 1011")
            events = protocol.fail(INTERNAL_ERROR, "keepalive ping timeout")
            await self._flush()
            self._lost = True
            return events
        if now >= self._next_ping:
            assert self._ping_interval is not None
            self._next_ping = now + self._ping_interval
            if protocol.open:
                protocol.send_ping()
                if self._ping_timeout is not None:
                    self._pong_deadline = now + self._ping_timeout
                await self._flush()
        return []

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

    async def _flush(self) -> None:
        """Write what the protocol produced on its own (pongs, pings, the close echo).

        This often runs in the app's task (it reads inline), whose own cancel
        scopes must not drop bytes the protocol has already handed over: the
        write is shielded, under a deadline of its own. A peer that reads
        nothing for that long is given up on.
        """
        if not self.protocol.wants_write:
            return
        with trio.CancelScope(
            shield=True, deadline=trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
        ) as scope:
            async with self._writing:
                data = self.protocol.data_to_send()
                if data:
                    try:
                        await self._write(data)
                    except ClientDisconnected:
                        return
        if scope.cancelled_caught:
            self._lose()

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

    def _lose(self) -> None:
        """Nothing more may be written: end the WebSocket for the app and the reader now.

        The reader may be paused behind a full queue, or the app blocked on
        this very write: both must learn at once, or the connection (and its
        concurrency slot) would wait for a peer that is gone.
        """
        if self._lost:
            return
        self._lost = True
        self._answered.set()
        if self._read_scope is not None:
            self._read_scope.cancel()
        if not self.protocol.disconnected:
            # Otherwise the events on their way to the reader already end it, with their code.
            self.reader.stop(_LOST)


class WriteTurn:
    """Writers to the stream take turns, through a :class:`trio.Lock` taken without a yield.

    ``async with lock`` yields to the scheduler even when the lock is free, a
    second scheduler pass per echoed message; ``acquire_nowait`` does not, and
    the writer's own cancellation check and ``send_all`` are the checkpoint.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
