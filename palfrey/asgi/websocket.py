"""One WebSocket seen from the application (ASGI ``websocket`` scope, spec 2.4).

The session owns the ASGI rules — ``websocket.connect`` first, nothing
received before the handshake is answered, 403 for a close before accept, 500
for an app that fails or never answers, 1011 for one that fails afterwards,
the HTTP denial response extension — and the bounded inbound queue. It knows
nothing about frames or sockets: each transport provides a
:class:`WebSocketTransport` (HTTP/1.1 upgrade today; RFC 8441 streams over
HTTP/2 reuse this class unchanged).

Reading takes one of two paths. When the app calls ``receive()`` with nothing
queued and nobody reading, the app task asks the transport for the next
message itself: no hand-off between tasks, so an echo costs one task switch
per message instead of two. When no app task has finished such a read for
:data:`READ_AHEAD_DELAY` (the app is busy, only sends, or polls ``receive()``
under a timeout that expires first), the connection task reads for it instead,
so pings are answered and a peer's close or lost connection is noticed; it
hands reading back as soon as it has given a message to an app that was
waiting for it. Only one task reads at a time.

Back-pressure follows the wsproto advice (design seed 002): messages are read
ahead only while fewer than ``max_queue`` wait for the app, and the app reads
inline only when none wait, so a slow app stops the socket reads and TCP
pushes back on the client. The disconnect is a state, not a queued message, so
it never waits for room in the queue and always comes after the messages
received before it (design seed 004).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from typing import Any, Protocol

import attrs
import trio

from palfrey.asgi import access_log
from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.headers import TOKEN, DefaultHeaders, validate_headers
from palfrey.asgi.messages import INTERNAL_ERROR_BODY, plain_text_headers, response_body
from palfrey.asgi.types import ASGIApp, Message
from palfrey.protocols.events import (
    LocalProtocolError,
    WebSocketDataReceived,
    WebSocketDisconnected,
    WebSocketEvent,
)
from palfrey.protocols.ws import ABNORMAL_CLOSURE, INTERNAL_ERROR, NORMAL_CLOSURE, SERVICE_RESTART

logger = logging.getLogger("palfrey.error")

_CONNECT: dict[str, Any] = {"type": "websocket.connect"}
_FORBIDDEN_BODY = b"Forbidden"

#: How long the app may stay away from ``receive()`` before the connection task reads for it.
#: An app that echoes comes back within microseconds and keeps reading inline; one that
#: only sends, or is busy, still has pings answered and a peer's close noticed this soon.
READ_AHEAD_DELAY = 0.05


class WebSocketTransport(Protocol):
    """What a transport provides for one WebSocket.

    Before the handshake is answered the transport can send either the
    accepting response or an HTTP response (``send_head``/``send_body``, as
    in :class:`palfrey.asgi.http.HTTPStream`). Afterwards the session calls
    ``receive_event`` from one task at a time (the app's or the connection's),
    only while its queue has room; it returns :class:`WebSocketDisconnected`
    exactly once, last, and owns keepalive and the closing handshake's timing.
    ``interrupt_receive`` makes a ``receive_event`` in progress return None
    soon, without losing data, so that an app reading inline learns of a
    disconnect the server recorded meanwhile. Send methods raise
    :class:`ClientDisconnected` once the WebSocket can no longer carry
    messages.
    """

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None: ...

    async def send_body(self, body: bytes, end: bool) -> None: ...

    async def receive_event(self) -> WebSocketEvent | None: ...

    def interrupt_receive(self) -> None: ...

    async def send_message(self, data: bytes | str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Phase(enum.Enum):
    """Where the session is in the ASGI websocket message order."""

    CONNECTING = "connecting"  # waiting for the app to answer websocket.connect
    RESPONDING = "responding"  # sending an HTTP denial response
    CONNECTED = "connected"  # accepted; messages flow until a disconnect is recorded
    DONE = "done"  # the handshake was refused or the denial response is complete


@attrs.define(slots=True, eq=False)
class WebSocketSession:
    """The ``receive``/``send`` pair handed to the application for one WebSocket."""

    scope: dict[str, Any]
    transport: WebSocketTransport
    defaults: DefaultHeaders
    max_queue: int = 32
    phase: Phase = Phase.CONNECTING
    #: Status of the handshake answer (101 accepted, otherwise an HTTP response), for logs.
    status: int = 0
    #: Most messages that waited for the app at once (back-pressure is observable in tests).
    queue_high_water: int = 0
    _queue: deque[Message] = attrs.Factory(deque)
    #: (code, reason) once the WebSocket is over for the app; receive() reports it after the queue.
    _disconnect: tuple[int, str] | None = None
    _connect_delivered: bool = False
    _head_sent: bool = False
    _status_pending: int = 0
    _headers_pending: list[tuple[bytes, bytes]] = attrs.Factory(list)
    _answered: trio.Event = attrs.Factory(trio.Event)
    #: App tasks waiting for the connection task to deliver a message.
    _app_waiting: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    _reader_waiting: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    #: The connection task's pause; the app arms its deadline when it leaves ``receive()``.
    _pause_scope: trio.CancelScope | None = None
    #: The transport accepted the WebSocket: the app may read messages itself.
    _accepted: bool = False
    #: Some task is inside ``transport.receive_event()``.
    _reading: bool = False
    #: That task is an app task reading inline (``interrupt_receive`` reaches it).
    _app_reading: bool = False
    #: When an app task last finished reading the socket itself.
    _app_read_at: float = 0.0
    #: The transport reported the disconnect; nothing more will be read.
    _ended: bool = False
    _nursery: trio.Nursery | None = None
    _shutdown_pending: bool = False

    async def serve(self, app: ASGIApp, app_nursery: trio.Nursery) -> None:
        """Start the app in ``app_nursery`` and read messages until the WebSocket is over.

        Returns once the handshake was refused or the connection closed; the
        app task may still be running (the caller's nursery waits for it), so
        the transport can release the socket without waiting for the app.
        """
        app_nursery.start_soon(self.run_app, app)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._answered.wait()
            if self.phase is Phase.CONNECTED:
                if self._shutdown_pending:
                    self.shutdown()
                await self._read_messages()
            # A close still waiting for the send lock is moot once the peer is gone.
            nursery.cancel_scope.cancel()
            self._nursery = None

    def shutdown(self) -> None:
        """The server is stopping: close with 1012 and tell the app so right away."""
        if self.phase is Phase.CONNECTING or self._nursery is None:
            self._shutdown_pending = True
            return
        if self.phase is not Phase.CONNECTED or self._disconnect is not None:
            return
        self._set_disconnect(SERVICE_RESTART, "")
        self._nursery.start_soon(self._close_quietly, SERVICE_RESTART)

    async def run_app(self, app: ASGIApp) -> None:
        """Call the app and enforce the ASGI rules on what it did; contain its errors."""
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("WebSocket client disconnected while the application was sending")
        except Exception:
            logger.exception("Exception in ASGI application")
            await self._fail()
        else:
            if self.phase is Phase.CONNECTING:
                logger.error("ASGI callable returned without accepting or closing the WebSocket")
                await self._fail()
            elif self.phase is Phase.RESPONDING:
                logger.error("ASGI callable returned without completing the denial response")
                await self._fail()
            elif self._disconnect is None:
                self._set_disconnect(NORMAL_CLOSURE, "")
                await self._close_quietly(NORMAL_CLOSURE)
        finally:
            if self.phase is not Phase.CONNECTED:
                self.phase = Phase.DONE
            self._answered.set()

    async def receive(self) -> Message:
        if not self._connect_delivered:
            self._connect_delivered = True
            return dict(_CONNECT)
        while True:
            if self._queue:
                message = self._queue.popleft()
                self._reader_waiting.unpark_all()
                return message
            if self._disconnect is not None:
                code, reason = self._disconnect
                return {"type": "websocket.disconnect", "code": code, "reason": reason}
            if self._reading or not self._accepted:
                await self._app_waiting.park()
                continue
            message = await self._read_inline()
            if message is not None:
                return message

    async def _read_inline(self) -> Message | None:
        """Read the next message in the app's task; None if there is none to return yet."""
        self._reading = self._app_reading = True
        try:
            event = await self.transport.receive_event()
            # Only a read that finished counts: an app whose receive() is cancelled
            # before it reads (a poll under ``move_on_after(0)``) is not reading.
            self._app_read_at = trio.current_time()
        finally:
            self._reading = self._app_reading = False
            if self._app_waiting:
                self._app_waiting.unpark_all()
            scope = self._pause_scope
            if self._disconnect is not None:
                self._reader_waiting.unpark_all()
            elif scope is not None and scope.deadline == math.inf:
                # Nobody reads now: the connection task takes over unless the app comes back.
                scope.deadline = self._app_read_at + READ_AHEAD_DELAY
        return self._take(event)

    def _take(self, event: WebSocketEvent | None) -> Message | None:
        """The app's message for what the transport read; a disconnect is recorded instead.

        Messages that arrive once a disconnect is recorded are dropped: the app
        has been, or is about to be, told the WebSocket is over.
        """
        if type(event) is WebSocketDataReceived:
            if self._disconnect is None:
                data = event.data
                if type(data) is str:
                    return {"type": "websocket.receive", "text": data}
                return {"type": "websocket.receive", "bytes": data}
        elif type(event) is WebSocketDisconnected:
            self._ended = True
            self._set_disconnect(event.code, event.reason)
        return None

    async def send(self, message: Message) -> None:
        message_type = message.get("type")
        phase = self.phase
        if phase is Phase.CONNECTED:
            if self._disconnect is not None:
                raise ClientDisconnected("the WebSocket is closed")
            if message_type == "websocket.send":
                await self.transport.send_message(_payload(message))
            elif message_type == "websocket.close":
                code, reason = _close_args(message)
                self._queue.clear()
                self._set_disconnect(code, reason)
                await self._close_quietly(code, reason)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"got {message_type!r}"
                )
        elif phase is Phase.CONNECTING:
            if message_type == "websocket.accept":
                await self._accept(message)
            elif message_type == "websocket.close":
                _close_args(message)
                await self._respond(403, [], _FORBIDDEN_BODY)
            elif message_type == "websocket.http.response.start":
                status = message.get("status")
                if type(status) is not int or not 200 <= status <= 999:
                    raise TypeError(f"'status' must be an int from 200 to 999, got {status!r}")
                self._headers_pending = validate_headers(message.get("headers", ()))
                self._status_pending = status
                self.phase = Phase.RESPONDING
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start', got {message_type!r}"
                )
        elif phase is Phase.RESPONDING:
            if message_type != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body', got {message_type!r}"
                )
            await self._response_body(message)
        else:
            raise ClientDisconnected("the WebSocket is closed")

    async def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        # RFC 6455 §4.1: a subprotocol is a token; anything else could split the header.
        if subprotocol is not None and (
            type(subprotocol) is not str
            or not subprotocol.isascii()
            or TOKEN.fullmatch(subprotocol.encode("ascii")) is None
        ):
            raise TypeError(f"'subprotocol' must be a token str or None, got {subprotocol!r}")
        headers = self.defaults.merge(validate_headers(message.get("headers", ())))
        self.phase = Phase.CONNECTED
        self.status = 101
        self._log_access()
        try:
            await self.transport.accept(subprotocol, headers)
            self._accepted = True
            self._app_waiting.unpark_all()
        finally:
            self._answered.set()

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A complete server-made response (403 for a refusal, 500 for a failure)."""
        self.status = status
        self._head_sent = True
        self._log_access()
        headers = plain_text_headers(self.defaults, body, headers)
        try:
            await self.transport.send_head(status, headers, body, True)
        except (ClientDisconnected, LocalProtocolError):
            logger.debug("Client disconnected before the handshake response was sent")
        finally:
            self._finish_handshake()

    async def _response_body(self, message: Message) -> None:
        body, more = response_body(message)
        try:
            if self._head_sent:
                await self.transport.send_body(body, not more)
            else:
                self._head_sent = True
                self.status = self._status_pending
                self._log_access()
                headers = self.defaults.merge(self._headers_pending)
                if not any(name == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                await self.transport.send_head(self.status, headers, body, not more)
        except LocalProtocolError as exc:
            self._finish_handshake()
            raise RuntimeError(f"Invalid denial response: {exc}") from None
        except ClientDisconnected:
            self._finish_handshake()
            raise
        if not more:
            self._finish_handshake()

    def _finish_handshake(self) -> None:
        """The handshake was answered with an HTTP response: the WebSocket never opens."""
        self.phase = Phase.DONE
        self._set_disconnect(ABNORMAL_CLOSURE, "")
        self._answered.set()

    async def _fail(self) -> None:
        """The app failed: 500 if the handshake is unanswered, else close 1011 or cut it off."""
        if self.phase is Phase.CONNECTED:
            if self._disconnect is None:
                self._set_disconnect(INTERNAL_ERROR, "")
                await self._close_quietly(INTERNAL_ERROR)
        elif not self._head_sent:
            await self._respond(500, [], INTERNAL_ERROR_BODY)
        else:
            self._finish_handshake()

    async def _close_quietly(self, code: int, reason: str = "") -> None:
        try:
            await self.transport.close(code, reason)
        except ClientDisconnected:
            logger.debug("WebSocket client gone before close %d could be sent", code)

    def _set_disconnect(self, code: int, reason: str) -> None:
        if self._disconnect is None:
            self._disconnect = (code, reason)
        if self._app_reading:
            self.transport.interrupt_receive()
        self._app_waiting.unpark_all()
        self._reader_waiting.unpark_all()

    async def _read_messages(self) -> None:
        """The connection task: read for the app while it is away, until the transport ends.

        Once a disconnect is recorded (the app or the server closed) this
        task reads whatever the app does, no longer waits for room and drops
        new messages, so the closing handshake completes.
        """
        transport = self.transport
        queue = self._queue
        self._app_read_at = trio.current_time()
        while not self._ended:
            if self._reading or (
                self._disconnect is None
                and (
                    len(queue) >= self.max_queue
                    or trio.current_time() < self._app_read_at + READ_AHEAD_DELAY
                )
            ):
                await self._pause()
                continue
            self._reading = True
            try:
                event = await transport.receive_event()
            finally:
                self._reading = False
                if self._app_waiting:
                    # An app waiting in receive() takes the message, then reads inline
                    # again: give reading back to it.
                    self._app_waiting.unpark_all()
                    self._app_read_at = trio.current_time()
            message = self._take(event)
            if message is not None:
                queue.append(message)
                self.queue_high_water = max(self.queue_high_water, len(queue))

    async def _pause(self) -> None:
        """Wait until reading may be this task's turn.

        Without a deadline while someone reads or the queue is full: the end
        of an inline read, room in the queue and the disconnect wake this
        task. Otherwise it wakes once the app has not finished a read of its
        own for :data:`READ_AHEAD_DELAY`.
        """
        deadline = math.inf
        if not self._reading and len(self._queue) < self.max_queue:
            deadline = self._app_read_at + READ_AHEAD_DELAY
        with trio.CancelScope(deadline=deadline) as scope:
            self._pause_scope = scope
            try:
                await self._reader_waiting.park()
            finally:
                self._pause_scope = None

    def _log_access(self) -> None:
        if access_log.enabled():
            access_log.log_websocket(self.scope, self.status)


def _payload(message: Message) -> bytes | str:
    """The data of a ``websocket.send``: exactly one of ``bytes``/``text`` is not None."""
    data = message.get("bytes")
    text = message.get("text")
    if (data is None) == (text is None):
        raise TypeError("'websocket.send' needs exactly one of 'bytes' or 'text' to be non-None")
    if text is not None:
        if type(text) is not str:
            raise TypeError(f"'text' must be a str, got {type(text).__name__}")
        return text
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"'bytes' must be bytes, got {type(data).__name__}")
    return bytes(data)


def _close_args(message: Message) -> tuple[int, str]:
    code = message.get("code", NORMAL_CLOSURE)
    if code is None:
        code = NORMAL_CLOSURE
    if type(code) is not int or not 1000 <= code <= 4999 or code in (1004, 1005, 1006, 1015):
        raise ValueError(f"'code' must be a valid WebSocket close code, got {code!r}")
    reason = message.get("reason") or ""
    if type(reason) is not str:
        raise TypeError(f"'reason' must be a str, got {type(reason).__name__}")
    return code, reason


def websocket_scope(scope: dict[str, Any], subprotocols: list[str]) -> dict[str, Any]:
    """Turn the ``http`` scope built for the handshake request into a ``websocket`` scope."""
    scope["type"] = "websocket"
    scope.pop("method", None)
    scope["scheme"] = {"http": "ws", "https": "wss"}.get(scope["scheme"], scope["scheme"])
    scope["subprotocols"] = subprotocols
    scope["extensions"] = {**scope.get("extensions", {}), "websocket.http.response": {}}
    return scope
