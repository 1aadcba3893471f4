"""Events the sans-I/O handlers emit: bytes go in, these come out.

Request events are version-neutral, so the trio side serves an HTTP/1.1
request and an HTTP/2 or HTTP/3 stream through one path.

Every event is immutable. The two that every request makes, :class:`RequestReceived`
and :class:`BodyReceived`, are named tuples rather than frozen attrs classes: a
frozen attrs instance sets each field through ``object.__setattr__``, which made
building them a visible part of a small request's cost.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs


class RequestReceived(NamedTuple):
    """A complete HTTP request head has been parsed.

    ``target`` is the request-target (HTTP/1.1) or ``:path`` (HTTP/2 and 3).
    ``scheme`` and ``authority`` are the ``:scheme`` and ``:authority``
    pseudo-headers where the version has them; an HTTP/1.1 request leaves
    them None (the connection knows its scheme, and Host is a header).
    ``stream_id`` is 0 on HTTP/1.1, which carries one request at a time.
    """

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    http_version: str
    stream_id: int = 0
    scheme: bytes | None = None
    authority: bytes | None = None
    #: The ``:protocol`` of an extended CONNECT (RFC 8441), e.g. ``b"websocket"``.
    protocol: bytes | None = None


class BodyReceived(NamedTuple):
    """A chunk of request body; ``more`` is False on the last one (which may be empty)."""

    data: bytes
    more: bool


@attrs.frozen(slots=True)
class ConnectionClosed:
    """The peer closed the connection, cleanly or not."""

    reason: str


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


ProtocolEvent = RequestReceived | BodyReceived | ConnectionClosed
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


# Stream events: HTTP/2 (and HTTP/3) connections carry many requests at once,
# so everything after the request head names its stream.


@attrs.frozen(slots=True)
class StreamData:
    """Request body bytes on a stream, to be acknowledged once consumed (flow control)."""

    stream_id: int
    data: bytes


@attrs.frozen(slots=True)
class StreamEnded:
    """The client finished sending on the stream: the request body is complete."""

    stream_id: int


@attrs.frozen(slots=True)
class StreamReset:
    """The stream was aborted (``remote``: by the peer's RST_STREAM) with this error code."""

    stream_id: int
    error_code: int
    remote: bool


@attrs.frozen(slots=True)
class WindowUpdated:
    """The peer opened its flow-control window for a stream (0: for every stream)."""

    stream_id: int


@attrs.frozen(slots=True)
class ConnectionTerminated:
    """The peer sent GOAWAY: streams above ``last_stream_id`` will not be served."""

    error_code: int
    last_stream_id: int


@attrs.frozen(slots=True)
class ControlReceived:
    """A frame that costs work and carries nothing for a stream arrived (PING, SETTINGS,
    PRIORITY, an empty DATA frame, a tiny WINDOW_UPDATE); counted against floods."""


StreamEvent = (
    RequestReceived
    | StreamData
    | StreamEnded
    | StreamReset
    | WindowUpdated
    | ConnectionTerminated
    | ControlReceived
)
