"""One WebSocket seen from the application (ASGI ``websocket`` scope, spec 2.4).

The session owns the ASGI rules — ``websocket.connect`` first, nothing
received before the handshake is answered, 403 for a close before accept, 500
for an app that fails or never answers, 1011 for one that fails afterwards,
the HTTP denial response extension — and what the app is told about the end
of the WebSocket. It knows nothing about frames, sockets or who reads them:
each transport provides a :class:`WebSocketTransport` and brings its own
back-pressure (over HTTP/1.1 the socket is read only as the app keeps up;
over an HTTP/2 stream, RFC 8441, that is the flow-control window), so this
class serves both unchanged.

Every ``receive()`` and ``send()`` is a trio checkpoint, whatever the state:
the transport's methods are, and where the session answers without calling
one it takes a checkpoint itself. An app looping on either can be cancelled
and never starves other tasks. Each message is a fresh dict.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any, Protocol

import attrs
import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.headers import TOKEN, DefaultHeaders, validate_headers
from palfrey.asgi.messages import INTERNAL_ERROR_BODY, plain_text_headers, response_body
from palfrey.asgi.types import ASGIApp, Message
from palfrey.observability import access_log
from palfrey.observability.metrics import Metrics
from palfrey.protocols.events import (
    LocalProtocolError,
    WebSocketDataReceived,
    WebSocketDisconnected,
)
from palfrey.protocols.ws import ABNORMAL_CLOSURE, INTERNAL_ERROR, NORMAL_CLOSURE, SERVICE_RESTART

logger = logging.getLogger("palfrey.error")

_FORBIDDEN_BODY = b"Forbidden"


class WebSocketTransport(Protocol):
    """What a transport provides for one WebSocket.

    Before the handshake is answered: ``accept`` (the switch, with the app's
    headers), or an HTTP response through ``send_head``/``send_body`` as in
    :class:`palfrey.asgi.http.HTTPStream`. Whatever the HTTP version needs
    around that response (HTTP/1.1 closes the connection and says so) is the
    transport's to add.

    Once accepted, ``receive_message`` returns the next message the peer
    sent, or a :class:`WebSocketDisconnected` once no more will come: the
    peer closed, the connection was lost, or ``close``/``close_soon`` was
    called (then the messages already received come first, and the end does
    not wait for the peer's answer). It may be called from several tasks;
    reading, read-ahead, back-pressure, keepalive and the closing handshake's
    timing are the transport's business. ``send_message`` and ``close``
    raise :class:`ClientDisconnected` once the WebSocket cannot carry
    messages any more; ``close`` on a WebSocket already closing does nothing.
    ``close_soon`` closes without waiting, from the transport's own task, for
    a caller that cannot wait (the server shutting down). ``app_finished``
    says the app returned: nobody will call ``receive_message`` again, so the
    transport need not keep anything for it.

    Every async method is a trio checkpoint, also when it does no I/O.
    """

    #: The status an accepted handshake answers with: 101 over HTTP/1.1, 200 over
    #: HTTP/2 (RFC 8441 §5), which the access log shows.
    accept_status: int

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None: ...

    async def send_body(self, body: bytes, end: bool) -> None: ...

    async def receive_message(self) -> WebSocketDataReceived | WebSocketDisconnected: ...

    async def send_message(self, data: bytes | str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def close_soon(self, code: int, reason: str) -> None: ...

    def app_finished(self) -> None: ...


class Phase(enum.Enum):
    """Where the session is in the ASGI websocket message order."""

    #: Waiting for the app to answer ``websocket.connect``.
    CONNECTING = "connecting"
    #: Sending an HTTP denial response.
    RESPONDING = "responding"
    #: Accepted: messages flow both ways.
    OPEN = "open"
    #: Ending without the app having asked (the server is stopping, a send
    #: failed): ``send()`` raises, ``receive()`` still returns the messages
    #: already received, then the transport's end.
    CLOSING = "closing"
    #: Over for the app: ``receive()`` returns the recorded disconnect.
    CLOSED = "closed"


# The phases read on every message, as module globals: looking a member up on its
# Enum class costs several times as much.
_OPEN = Phase.OPEN
_CLOSING = Phase.CLOSING
_CLOSED = Phase.CLOSED


@attrs.define(slots=True, eq=False)
class WebSocketSession:
    """The ``receive``/``send`` pair handed to the application for one WebSocket."""

    scope: dict[str, Any]
    transport: WebSocketTransport
    defaults: DefaultHeaders
    phase: Phase = Phase.CONNECTING
    #: Status of the handshake answer (the transport's ``accept_status`` when accepted,
    #: otherwise an HTTP response), for logs.
    status: int = 0
    #: Where the session is counted, when ``--metrics-bind`` is on.
    metrics: Metrics | None = None
    #: (code, reason) reported to the app once the phase is ``CLOSED``.
    _disconnect: tuple[int, str] = (ABNORMAL_CLOSURE, "")
    _connect_delivered: bool = False
    _head_sent: bool = False
    _status_pending: int = 0
    _headers_pending: list[tuple[bytes, bytes]] = attrs.Factory(list)
    #: Set once the handshake is answered: ``receive()`` waits for it.
    _answered: trio.Event = attrs.Factory(trio.Event)
    #: The server began stopping before the app answered: close right after an accept.
    _shutdown_pending: bool = False

    def shutdown(self) -> None:
        """The server is stopping: close with 1012 and tell the app so right away."""
        phase = self.phase
        if phase is _OPEN:
            self.phase = _CLOSING
            self.transport.close_soon(SERVICE_RESTART, "")
        elif phase is Phase.CONNECTING or phase is Phase.RESPONDING:
            self._shutdown_pending = True

    async def run_app(self, app: ASGIApp) -> None:
        """Call the app and enforce the ASGI rules on what it did; contain its errors."""
        metrics = self.metrics
        if metrics is not None:
            metrics.websockets_open += 1
            started = time.perf_counter()
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
            elif self.phase is _OPEN:
                self._closed(NORMAL_CLOSURE, "")
                await self._close_quietly(NORMAL_CLOSURE, "")
        finally:
            if self.phase is Phase.CONNECTING or self.phase is Phase.RESPONDING:
                self._finish_handshake()  # cancelled before it could answer
            self.transport.app_finished()
            if metrics is not None:
                metrics.websockets_open -= 1
                metrics.websocket_done(self.status, time.perf_counter() - started)

    async def receive(self) -> Message:
        if not self._connect_delivered:
            await trio.lowlevel.checkpoint()
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        while True:
            phase = self.phase
            if phase is _OPEN or phase is _CLOSING:
                event = await self.transport.receive_message()
                if type(event) is WebSocketDataReceived:
                    if self.phase is _CLOSED:
                        break  # the app closed meanwhile, from another task
                    data = event.data
                    if type(data) is str:
                        return {"type": "websocket.receive", "text": data}
                    return {"type": "websocket.receive", "bytes": data}
                assert isinstance(event, WebSocketDisconnected)
                self._closed(event.code, event.reason)
                break
            if phase is _CLOSED:
                await trio.lowlevel.checkpoint()
                break
            # Nothing is received before the handshake is answered.
            await self._answered.wait()
        code, reason = self._disconnect
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    async def send(self, message: Message) -> None:
        message_type = message.get("type")
        phase = self.phase
        if phase is _OPEN:
            if message_type == "websocket.send":
                try:
                    await self.transport.send_message(_payload(message))
                except ClientDisconnected:
                    if self.phase is _OPEN:
                        self.phase = _CLOSING
                    raise
            elif message_type == "websocket.close":
                code, reason = _close_args(message)
                self._closed(code, reason)
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
                await trio.lowlevel.checkpoint()  # nothing is written until the body
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
            await trio.lowlevel.checkpoint()
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
        self.status = self.transport.accept_status
        self._log_access()
        try:
            await self.transport.accept(subprotocol, headers)
        except ClientDisconnected:
            # Accepted, but the client is gone: receive() reports the transport's end.
            self.phase = _CLOSING
            self._answered.set()
            raise
        # Anything else (a head the transport refused, a cancellation) leaves the
        # handshake unanswered: the app may still fail into a 500.
        self.phase = _OPEN
        self._answered.set()
        if self._shutdown_pending:
            self.shutdown()

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
        self._closed(ABNORMAL_CLOSURE, "")
        self._answered.set()

    async def _fail(self) -> None:
        """The app failed: 500 if the handshake is unanswered, else close 1011 or cut it off."""
        phase = self.phase
        if phase is _OPEN:
            self._closed(INTERNAL_ERROR, "")
            await self._close_quietly(INTERNAL_ERROR, "")
        elif phase is Phase.CONNECTING or (phase is Phase.RESPONDING and not self._head_sent):
            await self._respond(500, [], INTERNAL_ERROR_BODY)
        elif phase is Phase.RESPONDING:
            self._finish_handshake()

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            await self.transport.close(code, reason)
        except ClientDisconnected:
            logger.debug("WebSocket client gone before close %d could be sent", code)

    def _closed(self, code: int, reason: str) -> None:
        """The WebSocket is over for the app; the first ending recorded is the one reported."""
        if self.phase is not _CLOSED:
            self.phase = _CLOSED
            self._disconnect = (code, reason)

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
    # Spec 2.5: ``websocket.disconnect`` carries the close ``reason``.
    scope["asgi"] = {**scope.get("asgi", {}), "spec_version": "2.5"}
    scope.pop("method", None)
    scope["scheme"] = {"http": "ws", "https": "wss"}.get(scope["scheme"], scope["scheme"])
    scope["subprotocols"] = subprotocols
    # The ``http.response.*`` extensions belong to an HTTP response, not to a WebSocket.
    extensions = {
        name: value
        for name, value in scope.get("extensions", {}).items()
        if not name.startswith("http.response.")
    }
    extensions["websocket.http.response"] = {}
    scope["extensions"] = extensions
    return scope
