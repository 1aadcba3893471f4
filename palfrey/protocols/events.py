"""Events the sans-I/O handlers emit (the contract in the design seed 001)."""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class RequestReceived:
    """A complete HTTP request head has been parsed."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    http_version: str


@attrs.frozen(slots=True)
class BodyReceived:
    """A chunk of request body; ``more`` is False on the last one (which may be empty)."""

    data: bytes
    more: bool


@attrs.frozen(slots=True)
class ConnectionClosed:
    """The peer closed the connection, cleanly or not."""

    reason: str


@attrs.frozen(slots=True)
class Upgraded:
    """The connection now speaks another protocol; ``trailing_data`` belongs to it."""

    protocol: str
    trailing_data: bytes = b""


@attrs.frozen(slots=True)
class WebSocketConnected:
    """The WebSocket handshake completed."""

    subprotocol: str | None


@attrs.frozen(slots=True)
class WebSocketDataReceived:
    """A whole WebSocket message: ``str`` for text frames, ``bytes`` for binary."""

    data: bytes | str


@attrs.frozen(slots=True)
class WebSocketDisconnected:
    """The WebSocket closed with this code and reason."""

    code: int
    reason: str


ProtocolEvent = RequestReceived | BodyReceived | ConnectionClosed | Upgraded
WebSocketEvent = WebSocketConnected | WebSocketDataReceived | WebSocketDisconnected


class ProtocolError(Exception):
    """The peer broke the protocol; ``status_code`` is the HTTP answer it deserves.

    Raised by ``receive_data`` for bad input. The caller answers with
    ``status_code`` (when a response can still be sent) and closes the connection.
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class LocalProtocolError(Exception):
    """The application asked for something the protocol forbids (e.g. too much body)."""
