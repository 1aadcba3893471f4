"""WebSocket (RFC 6455, RFC 7692) over wsproto: bytes in, events out, bytes to write.

The opening handshake arrives as an ordinary HTTP request parsed by the HTTP
handler (HTTP/1.1 ``Upgrade`` today, an extended CONNECT stream over HTTP/2
later), so :class:`WSProtocol` validates the request headers, builds the
response headers, and from then on drives wsproto's post-handshake
:class:`~wsproto.connection.Connection` (design seed 002).

``receive_data`` never raises: a peer that breaks the protocol, sends invalid
UTF-8 or a message over ``max_size`` gets a close frame with the matching
code (1002, 1007, 1009) and the caller gets a :class:`WebSocketDisconnected`.
Everything to be written — pongs, the echo of the peer's close, our own
frames — is appended to one buffer in the order it was produced and taken with
:meth:`WSProtocol.data_to_send`, which keeps compressed frames in the order
their shared deflate context produced them.

Without an extension, whole unfragmented text and binary messages — nearly all
the traffic — are framed and parsed here directly, for about a tenth of
wsproto's cost per message; every other frame (control frames, fragments, anything
malformed or over ``max_size``) goes to wsproto, so its checks and close codes
stay the only ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
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
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake

from palfrey.protocols.events import (
    ProtocolError,
    WebSocketConnected,
    WebSocketDataReceived,
    WebSocketDisconnected,
    WebSocketEvent,
)

#: RFC 6455 §1.3: appended to the client's key before hashing.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SUPPORTED_VERSION = b"13"

#: The response headers only the server may set during the handshake.
_HANDSHAKE_HEADERS = frozenset(
    {b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-extensions"}
)

#: The first byte of a whole text or binary frame: FIN set, no RSV bit (RFC 6455 §5.2).
_PLAIN_OPCODES = frozenset({0x81, 0x82})
#: A server frame's head with a 16-bit or 64-bit payload length (RFC 6455 §5.2).
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")

# Close codes, RFC 6455 §7.4.1 (1012 is from the IANA registry).
NORMAL_CLOSURE = 1000
NO_STATUS = 1005
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012


class HandshakeError(ProtocolError):
    """The request is not an acceptable WebSocket handshake.

    ``headers`` are the extra response headers the refusal must carry
    (``Sec-WebSocket-Version`` on a 426).
    """

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message, status_code)
        self.headers = headers or []


def header_tokens(headers: Any, name: bytes, *, lower: bool = True) -> list[bytes]:
    """Every comma-separated token of every ``name`` header, stripped (and lower-cased)."""
    tokens = [
        token.strip()
        for key, value in headers
        if key.lower() == name
        for token in value.split(b",")
        if token.strip()
    ]
    return [token.lower() for token in tokens] if lower else tokens


def is_websocket_upgrade(headers: Any) -> bool:
    """Whether an HTTP/1.1 request asks to switch to WebSocket (other upgrades stay HTTP)."""
    return b"websocket" in header_tokens(headers, b"upgrade")


def check_h1_handshake(method: bytes, http_version: str, headers: Any) -> None:
    """The HTTP/1.1-only rules of RFC 6455 §4.2.1; raises :class:`HandshakeError`.

    Over HTTP/2 (RFC 8441) the request is an extended CONNECT instead and
    none of these headers exist, so they are kept out of :class:`WSProtocol`.
    """
    if method != b"GET":
        raise HandshakeError("a WebSocket handshake must be a GET request")
    if http_version != "1.1":
        raise HandshakeError("a WebSocket handshake needs HTTP/1.1")
    if b"upgrade" not in header_tokens(headers, b"connection"):
        raise HandshakeError("'Connection: upgrade' is missing")
    for key, value in headers:
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            raise HandshakeError("a WebSocket handshake must not have a body")


class BoundedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates a message beyond ``max_size``.

    wsproto inflates whatever arrives in one go, so a few kilobytes of
    compressed zeros could become gigabytes before the size check sees the
    message. Inflating with ``max_length`` caps the output of each chunk at
    what the message may still grow by; wsproto turns the returned close
    reason into a 1009 close. This relies on wsproto's private inbound state
    (``_inbound_compressed``, ``_inbound_is_compressible``, ``_decompressor``).
    """

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self._inflated = 0

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        decompressor = self._decompressor
        assert decompressor is not None
        budget = self.max_size - self._inflated
        try:
            out = decompressor.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if len(out) > budget or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


def negotiate_deflate(offers: list[str], max_size: int) -> tuple[bytes | None, list[Extension]]:
    """Accept the first acceptable permessage-deflate offer (RFC 7692 §5).

    wsproto's ``accept`` mutates the extension for every offer it sees, so
    each offer is tried on a fresh extension and the first one that is
    accepted wins; offers with malformed parameters are skipped.
    """
    for offer in offers:
        if offer.split(";", 1)[0].strip() != PerMessageDeflate.name:
            continue
        extension = BoundedPerMessageDeflate(max_size)
        try:
            accepted = server_extensions_handshake([offer], [extension])
        except ValueError:
            continue
        if accepted is not None:
            return accepted, [extension]
    return None, []


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
        self._key = _check_version_and_key(headers, require_key)
        self.subprotocols = _text_tokens(headers, b"sec-websocket-protocol")
        self.extension_offers = _text_tokens(headers, b"sec-websocket-extensions")
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
        response: list[tuple[bytes, bytes]] = []
        if self._key is not None:
            response += [
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", accept_token(self._key)),
            ]
        if subprotocol is not None:
            response.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        if self._deflate_response is not None:
            response.append((b"sec-websocket-extensions", self._deflate_response))
        for name, value in headers or ():
            if name in _HANDSHAKE_HEADERS:
                continue
            if name == b"sec-websocket-protocol" and subprotocol is not None:
                continue
            response.append((name, value))
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
        """Parse the leading whole, masked, unfragmented messages of ``data``; return the rest.

        Takes only what wsproto would accept unchanged (FIN set, no RSV bit,
        text or binary opcode, the shortest length encoding, at most
        ``max_size`` bytes, valid UTF-8 for text) and stops at the first frame
        that is anything else or incomplete, which wsproto then parses.
        """
        position = 0
        end = len(data)
        max_size = self.max_size
        while end - position >= 6:
            first = data[position]
            second = data[position + 1]
            if first not in _PLAIN_OPCODES or second < 0x80:
                break
            length = second & 0x7F
            start = position + 6
            if length == 126:
                start += 2
                if end < start:
                    break
                length = data[position + 2] << 8 | data[position + 3]
                if length < 126:
                    break
            elif length == 127:
                break
            stop = start + length
            if stop > end or length > max_size:
                break
            payload = _unmask(data[start:stop], data[start - 4 : start])
            if first == 0x81:
                try:
                    events.append(WebSocketDataReceived(payload.decode("utf-8")))
                except UnicodeDecodeError:
                    break
            else:
                events.append(WebSocketDataReceived(payload))
            position = stop
        return data[position:] if position else data

    def send_message(self, data: bytes | str) -> None:
        if not self._open:
            raise RuntimeError("the WebSocket is not open")
        if self._plain:
            if type(data) is str:
                payload = data.encode("utf-8")
                first = 0x81
            else:
                payload = bytes(data)
                first = 0x82
            length = len(payload)
            out = self._out
            if length < 126:
                out += bytes((first, length))
            elif length < 65536:
                out += _HEAD_16.pack(first, 126, length)
            else:
                out += _HEAD_64.pack(first, 127, length)
            out += payload
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
            self._parts.append(data)
            return None
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


def _unmask(payload: bytes, key: bytes) -> bytes:
    """XOR a client's payload with its 4-byte masking key (RFC 6455 §5.3), as one big integer."""
    length = len(payload)
    mask = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        length, "little"
    )


def accept_token(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())


def _text_tokens(headers: Any, name: bytes) -> list[str]:
    return [token.decode("latin-1") for token in header_tokens(headers, name, lower=False)]


def _check_version_and_key(headers: Any, require_key: bool) -> bytes | None:
    versions = [value.strip() for key, value in headers if key.lower() == b"sec-websocket-version"]
    if versions != [_SUPPORTED_VERSION]:
        raise HandshakeError(
            "unsupported Sec-WebSocket-Version",
            426,
            [(b"sec-websocket-version", _SUPPORTED_VERSION), (b"upgrade", b"websocket")],
        )
    if not require_key:
        return None
    keys = [value.strip() for key, value in headers if key.lower() == b"sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError("exactly one Sec-WebSocket-Key is required")
    try:
        nonce = base64.b64decode(keys[0], validate=True)
    except binascii.Error:
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64")
    return keys[0]
