"""The server side of one WebSocket: wsproto's connection behind a sans-I/O interface.

The handshake request has already been parsed by the HTTP handler, so
:class:`WSProtocol` validates its headers, builds the response headers, and
from then on drives wsproto's post-handshake
:class:`~wsproto.connection.Connection`; the handshake itself never goes
through wsproto, which would want to parse the HTTP request again.

``receive_data`` never raises: a peer that breaks the protocol, sends invalid
UTF-8 or a message over ``max_size`` gets a close frame with the matching
code (1002, 1007, 1009) and the caller gets a :class:`WebSocketDisconnected`.
Everything to be written — pongs, the echo of the peer's close, our own
frames — is appended to one buffer in the order it was produced and taken with
:meth:`WSProtocol.data_to_send`, which keeps compressed frames in the order
their shared deflate context produced them.
"""

from __future__ import annotations

import struct
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason

from palfrey.protocols.events import (
    WebSocketConnected,
    WebSocketDataReceived,
    WebSocketDisconnected,
    WebSocketEvent,
)
from palfrey.protocols.ws.close_codes import ABNORMAL_CLOSURE, NO_STATUS, NORMAL_CLOSURE
from palfrey.protocols.ws.deflate import negotiate_deflate
from palfrey.protocols.ws.frames import append_plain_frame, parse_plain
from palfrey.protocols.ws.handshake import check_version_and_key, response_headers, text_tokens

#: Empty non-final fragments tolerated in one message (RFC 6455 §5.4 allows them; no
#: client needs more than a few). Beyond it the connection closes with 1008.
MAX_EMPTY_FRAGMENTS = 1024


class WSProtocol:
    """One server-side WebSocket, from the handshake request to the closed connection.

    The constructor checks what every HTTP version requires of the request
    (version 13; over HTTP/1.1 a 16-byte base64 key) and raises
    :class:`HandshakeError` otherwise. :meth:`accept` returns the response
    headers and opens the connection; the first events after it are
    :class:`WebSocketConnected` and whatever the peer had already sent.
    """

    __slots__ = (
        "_conn",
        "_deflate_response",
        "_disconnected",
        "_empty_fragments",
        "_extensions",
        "_failed",
        "_key",
        "_message_size",
        "_open",
        "_out",
        "_parts",
        "_pending",
        "_ping_payload",
        "_pings_sent",
        "_plain",
        "_wsproto_busy",
        "extension_offers",
        "max_size",
        "subprotocols",
    )

    def __init__(
        self,
        headers: Any,
        *,
        max_size: int = 16 * 1024 * 1024,
        per_message_deflate: bool = True,
        require_key: bool = True,
    ) -> None:
        self.max_size = max_size
        self._key = check_version_and_key(headers, require_key)
        self.subprotocols = text_tokens(headers, b"sec-websocket-protocol")
        self.extension_offers = text_tokens(headers, b"sec-websocket-extensions")
        self._deflate_response: bytes | None = None
        self._extensions: list[Extension] = []
        if per_message_deflate:
            self._deflate_response, self._extensions = negotiate_deflate(
                self.extension_offers, max_size
            )
        self._conn: Connection | None = None
        self._out = bytearray()
        self._pending: list[WebSocketEvent] = []
        self._parts: list[bytes | str] = []
        self._message_size = 0
        self._empty_fragments = 0
        self._failed = False
        self._open = False
        self._disconnected = False
        self._pings_sent = 0
        self._ping_payload: bytes | None = None
        #: No extension was negotiated, so whole messages may bypass wsproto.
        self._plain = False
        #: wsproto holds part of a frame or of a message: input must go through it.
        self._wsproto_busy = False

    def accept(
        self, subprotocol: str | None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Open the connection; return the handshake response headers.

        ``headers`` are the application's (already validated); any that would
        contradict the handshake are dropped, and ``Sec-WebSocket-Protocol``
        from ``subprotocol`` replaces one the application set by hand.
        """
        if self._conn is not None:
            raise RuntimeError("the WebSocket was already accepted")
        response = response_headers(self._key, subprotocol, self._deflate_response, headers)
        self._conn = Connection(ConnectionType.SERVER, self._extensions)
        self._plain = not self._extensions
        self._open = True
        self._pending.append(WebSocketConnected(subprotocol))
        return response

    @property
    def extensions(self) -> list[Extension]:
        """The negotiated extensions (empty until a deflate offer was accepted)."""
        return list(self._extensions)

    @property
    def open(self) -> bool:
        """Messages may be sent: accepted, and no close frame sent or received.

        Kept as a flag because it is asked before every message sent: wsproto
        leaves its OPEN state only when a close frame is sent (always through
        :meth:`_send_close`) or received (which is always answered with one).
        """
        return self._open

    @property
    def wants_write(self) -> bool:
        """Bytes are waiting for :meth:`data_to_send`."""
        return bool(self._out)

    @property
    def disconnected(self) -> bool:
        """A :class:`WebSocketDisconnected` was returned; nothing more will be."""
        return self._disconnected

    @property
    def failed(self) -> bool:
        """We failed the connection (RFC 6455 §7.1.7); the input can no longer be parsed."""
        return self._failed

    @property
    def awaiting_pong(self) -> bool:
        return self._ping_payload is not None

    def data_to_send(self) -> bytes:
        """Everything produced since the last call, in production order."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_events(self) -> list[WebSocketEvent]:
        """Events produced without new input (``WebSocketConnected`` after :meth:`accept`)."""
        events, self._pending = self._pending, []
        return events

    def receive_data(self, data: bytes) -> list[WebSocketEvent]:
        """Feed bytes from the peer; ``b""`` means the transport closed (code 1006)."""
        events = self.next_events()
        conn = self._conn
        if conn is None or self._disconnected:
            return events
        if not data:
            self._disconnected = True
            events.append(WebSocketDisconnected(ABNORMAL_CLOSURE, ""))
            return events
        if self._plain and not self._wsproto_busy:
            data = self._receive_plain(data, events)
            if not data:
                return events
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, Message):
                message = self._message(event)
                if message is not None:
                    events.append(message)
                    if self._disconnected:
                        break
            elif isinstance(event, Ping):
                if conn.state is ConnectionState.OPEN:
                    self._out += conn.send(event.response())
            elif isinstance(event, Pong):
                if event.payload == self._ping_payload:
                    self._ping_payload = None
            elif isinstance(event, CloseConnection):
                events.append(self._closed(event))
                break
        else:
            # wsproto's private parser state: it is idle once it holds no byte and no
            # unfinished message, and the next frame may take the plain path again.
            proto = conn._proto
            decoder = proto._frame_decoder
            self._wsproto_busy = bool(
                len(decoder.buffer)
                or decoder.header is not None
                or proto._message_decoder.opcode is not None
            )
        return events

    def _receive_plain(self, data: bytes, events: list[WebSocketEvent]) -> bytes:
        """Take the leading plain messages of ``data`` into ``events``; return the rest for wsproto.

        A method, so a subclass can switch the fast path off and compare it with wsproto.
        """
        return parse_plain(data, events, self.max_size)

    def send_message(self, data: bytes | str) -> None:
        if not self._open:
            raise RuntimeError("the WebSocket is not open")
        if self._plain:
            append_plain_frame(self._out, data)
            return
        assert self._conn is not None
        self._out += self._conn.send(
            TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        )

    def send_ping(self) -> None:
        """Ping with a fresh payload; :attr:`awaiting_pong` stays True until it is answered."""
        if not self.open:
            return
        assert self._conn is not None
        self._pings_sent += 1
        self._ping_payload = struct.pack("!I", self._pings_sent & 0xFFFFFFFF)
        self._out += self._conn.send(Ping(payload=self._ping_payload))

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; the peer's close frame ends it."""
        if self.open:
            self._send_close(code, reason)

    def fail(self, code: int, reason: str = "") -> list[WebSocketEvent]:
        """Fail the connection ourselves (keepalive timeout): close frame, then disconnect."""
        if self._disconnected:
            return []
        if self._conn is not None and self._conn.state is ConnectionState.OPEN:
            self._send_close(code, reason)
        self._failed = True
        self._open = False
        self._disconnected = True
        return [WebSocketDisconnected(code, reason)]

    def _send_close(self, code: int, reason: str) -> None:
        assert self._conn is not None
        self._open = False
        if code == NO_STATUS:
            # wsproto sends an empty close frame only for the enum member itself.
            self._out += self._conn.send(CloseConnection(code=CloseReason.NO_STATUS_RCVD))
        else:
            self._out += self._conn.send(CloseConnection(code=code, reason=reason))

    def _message(self, event: Message[Any]) -> WebSocketEvent | None:
        """Add one chunk to the current message; the message once complete, or the 1009 failure."""
        data = event.data
        if isinstance(data, str):
            self._message_size += len(data) if data.isascii() else len(data.encode("utf-8"))
        else:
            data = bytes(data)
            self._message_size += len(data)
        if self._message_size > self.max_size:
            return self._fail_parsing(CloseReason.MESSAGE_TOO_BIG, "message too big")
        if not event.message_finished:
            if not data:
                # Fragments without payload cost parsing yet grow no message, so
                # ``max_size`` cannot bound them: a stream of them would hold the loop.
                self._empty_fragments += 1
                if self._empty_fragments > MAX_EMPTY_FRAGMENTS:
                    return self._fail_parsing(
                        CloseReason.POLICY_VIOLATION, "too many empty fragments"
                    )
            self._parts.append(data)
            return None
        self._empty_fragments = 0
        if self._parts:
            self._parts.append(data)
            parts: Any = self._parts
            data = "".join(parts) if isinstance(data, str) else b"".join(parts)
            self._parts.clear()
        self._message_size = 0
        return WebSocketDataReceived(data)

    def _closed(self, event: CloseConnection) -> WebSocketDisconnected:
        """A close frame from the peer, or wsproto's report of a frame it could not parse."""
        assert self._conn is not None
        state = self._conn.state
        code = int(event.code)
        reason = event.reason or ""
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: echo its code (RFC 6455 §5.5.1).
            self._disconnected = True
            self._send_close(code, reason)
            return WebSocketDisconnected(code, reason)
        if state is ConnectionState.CLOSED:
            # The peer's answer to our close frame.
            self._disconnected = True
            return WebSocketDisconnected(code, reason)
        # wsproto reports a ParseFailed as a close event without changing state.
        return self._fail_parsing(code, reason)

    def _fail_parsing(self, code: int, reason: str) -> WebSocketDisconnected:
        """Fail the connection over bad input (RFC 6455 §7.1.7); the parser is dead from here."""
        assert self._conn is not None
        if self._conn.state is ConnectionState.OPEN:
            self._send_close(code, reason)
        self._failed = True
        self._open = False
        self._disconnected = True
        self._parts.clear()
        return WebSocketDisconnected(code, reason)
