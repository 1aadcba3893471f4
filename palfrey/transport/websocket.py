"""WebSocket over an HTTP/1.1 connection: the trio glue between a socket and WSProtocol.

:func:`websocket_upgrade` is the ``upgrade_handler`` of :class:`H1Connection`.
It validates the handshake, then hands a :class:`WebSocketSession` an
:class:`H1WebSocket`. The app runs in the connection's nursery; the socket is
read only when the session asks for the next message, in the app's task when
the app waits in ``receive()`` and in the connection task while the app is
away, so a full queue stops the reads.

Timers are deadlines on the read's cancel scope, not tasks: the next ping,
the pong deadline and the end of the closing handshake. They only run while
some task is reading, so an app that is slow to take its messages (nobody
reading, pongs unread in the socket) is not mistaken for a dead peer.
All writes go through one lock, and each writes exactly the bytes
:class:`WSProtocol` produced up to then, so nothing is buffered beyond what
one ``send_all`` holds.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.websocket import WebSocketSession, websocket_scope
from palfrey.protocols.events import WebSocketEvent
from palfrey.protocols.ws import (
    INTERNAL_ERROR,
    HandshakeError,
    WSProtocol,
    check_h1_handshake,
    is_websocket_upgrade,
)
from palfrey.transport.http11 import RECEIVE_SIZE

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
    websocket = H1WebSocket(
        connection,
        protocol,
        ping_interval=config.ws_ping_interval or None,
        ping_timeout=config.ws_ping_timeout or None,
    )
    session = WebSocketSession(
        scope=websocket_scope(scope, protocol.subprotocols),
        transport=websocket,
        defaults=state.defaults,
        max_queue=config.ws_max_queue,
    )
    control = connection.control
    control.on_shutdown = session.shutdown
    if state.stopping:
        session.shutdown()
    try:
        # H1Connection opens this nursery around every upgrade handler.
        assert connection.nursery is not None
        await session.serve(state.app, connection.nursery)
    finally:
        control.on_shutdown = None
        await websocket.release()
    return True


async def _refuse(connection: H1Connection, exc: HandshakeError) -> None:
    """Answer a request that is not a valid handshake; the app never sees it."""
    await connection.send_error(exc.status_code, str(exc), exc.headers)


class H1WebSocket:
    """The :class:`~palfrey.asgi.websocket.WebSocketTransport` of an upgraded HTTP/1.1 socket."""

    __slots__ = (
        "_close_deadline",
        "_connection",
        "_events",
        "_interrupted",
        "_left_at",
        "_lost",
        "_next_ping",
        "_ping_interval",
        "_ping_timeout",
        "_pong_deadline",
        "_read_scope",
        "_stream",
        "_writing",
        "protocol",
    )

    def __init__(
        self,
        connection: H1Connection,
        protocol: WSProtocol,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
    ) -> None:
        self._connection = connection
        self._stream = connection.stream
        self.protocol = protocol
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._writing = _WriteTurn()
        self._events: deque[WebSocketEvent] = deque()
        self._next_ping = math.inf
        self._pong_deadline = math.inf
        self._close_deadline = math.inf
        self._read_scope: trio.CancelScope | None = None
        self._left_at: float | None = None
        self._interrupted = False
        self._lost = False

    # The handshake answers, framed by the HTTP/1.1 handler.

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        protocol = self.protocol
        head, trailing = self._connection.protocol.upgrade(protocol.accept(subprotocol, headers))
        self._events.extend(protocol.receive_data(trailing) if trailing else protocol.next_events())
        if self._ping_interval is not None:
            self._next_ping = trio.current_time() + self._ping_interval
        async with self._writing:
            await self._write(head + protocol.data_to_send())

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        h1 = self._connection.protocol
        data = h1.send_response(status, headers) + h1.send_body(body, more=not end)
        async with self._writing:
            await self._write(data)

    async def send_body(self, body: bytes, end: bool) -> None:
        data = self._connection.protocol.send_body(body, more=not end)
        if data:
            async with self._writing:
                await self._write(data)

    # Messages and the closing handshake.

    async def send_message(self, data: bytes | str) -> None:
        async with self._writing:
            protocol = self.protocol
            if not protocol.open:
                raise ClientDisconnected("the WebSocket is closed")
            protocol.send_message(data)
            await self._write(protocol.data_to_send())

    async def close(self, code: int, reason: str) -> None:
        async with self._writing:
            if not self.protocol.open:
                return
            self.protocol.close(code, reason)
            self._close_deadline = trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
            if self._read_scope is not None:
                self._read_scope.deadline = min(self._read_scope.deadline, self._close_deadline)
            await self._write(self.protocol.data_to_send())

    async def receive_event(self) -> WebSocketEvent | None:
        protocol = self.protocol
        if self._left_at is not None:
            # The time nobody was reading (the app busy, its queue full) does not count
            # against the peer.
            self._pong_deadline += trio.current_time() - self._left_at
        try:
            while not self._events:
                if self._interrupted:
                    return None
                if protocol.disconnected:
                    raise RuntimeError("receive_event() called after the disconnect was reported")
                await self._read()
            return self._events.popleft()
        finally:
            self._interrupted = False
            # Pings are sent only while reading, so only an unanswered one needs the time.
            self._left_at = trio.current_time() if protocol.awaiting_pong else None

    def interrupt_receive(self) -> None:
        """Make the ``receive_event`` in progress return None; unread bytes stay in the socket."""
        self._interrupted = True
        if self._read_scope is not None:
            self._read_scope.cancel()

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
            with trio.CancelScope(shield=True, deadline=trio.current_time() + ABORT_TIMEOUT):
                await trio.aclose_forcefully(self._stream)

    # The reader.

    async def _read(self) -> None:
        protocol = self.protocol
        if self._lost:
            self._events.extend(protocol.receive_data(b""))
            return
        with trio.CancelScope(deadline=self._deadline()) as scope:
            self._read_scope = scope
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            finally:
                self._read_scope = None
        if scope.cancelled_caught:
            await self._on_timer()
            return
        self._events.extend(protocol.receive_data(data))
        if protocol.wants_write and not protocol.failed:
            await self._flush()

    def _deadline(self) -> float:
        protocol = self.protocol
        deadline = self._close_deadline
        if protocol.awaiting_pong:
            deadline = min(deadline, self._pong_deadline)
        elif protocol.open:
            deadline = min(deadline, self._next_ping)
        return deadline

    async def _on_timer(self) -> None:
        """A read deadline passed, or a failed write cancelled the read."""
        protocol = self.protocol
        now = trio.current_time()
        if self._lost or now >= self._close_deadline:
            # The peer never answered our close frame: give up on it (1006).
            self._lost = True
            self._events.extend(protocol.receive_data(b""))
        elif protocol.awaiting_pong and now >= self._pong_deadline:
            logger.debug("WebSocket keepalive ping timed out; closing with 1011")
            self._events.extend(protocol.fail(INTERNAL_ERROR, "keepalive ping timeout"))
            await self._flush()
            self._lost = True
        elif now >= self._next_ping:
            assert self._ping_interval is not None
            self._next_ping = now + self._ping_interval
            if protocol.open:
                protocol.send_ping()
                if self._ping_timeout is not None:
                    self._pong_deadline = now + self._ping_timeout
                await self._flush()

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
                    self._lost = True
                    return
            while True:
                with trio.move_on_after(LINGER_IDLE) as idle:
                    if not await self._receive():
                        break
                if idle.cancelled_caught:
                    break
        self._lost = True

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
            self._lost = True

    async def _receive(self) -> bytes:
        try:
            return await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def _write(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost = True
            if self._read_scope is not None:
                self._read_scope.cancel()
            raise ClientDisconnected("the client has disconnected") from None


class _WriteTurn:
    """Writers to the stream take turns, through a :class:`trio.Lock` taken without a yield.

    ``async with lock`` yields to the scheduler even when the lock is free,
    which cost a tenth of an echoed message; ``acquire_nowait`` does not, and
    the ``send_all`` that follows is the checkpoint.
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
