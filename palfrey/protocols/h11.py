"""HTTP/1.1 over h11: the pure-Python :class:`ProtocolHandler`."""

from __future__ import annotations

import h11

from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    ProtocolEvent,
    RequestReceived,
)
from palfrey.protocols.status import reason_phrase

_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")


class H1Protocol:
    """One HTTP/1.1 server connection parsed and framed by h11.

    h11 pauses after each complete request, so a pipelining client can never
    make this object parse more than one request ahead of the responses.
    """

    __slots__ = (
        "_body_received",
        "_conn",
        "_head_request",
        "_limit_request_body",
        "_max_head_size",
    )

    def __init__(
        self,
        *,
        max_incomplete_event_size: int = 16 * 1024,
        limit_request_body: int | None = None,
    ) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._max_head_size = max_incomplete_event_size
        self._head_request = False
        self._limit_request_body = limit_request_body
        self._body_received = 0

    def receive_data(self, data: bytes) -> list[ProtocolEvent]:
        try:
            self._conn.receive_data(data)
        except RuntimeError:
            return [ConnectionClosed("data after end of file")]
        return self.next_events()

    def next_events(self) -> list[ProtocolEvent]:
        events: list[ProtocolEvent] = []
        conn = self._conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.trailing_data[1]:
                    events.append(ConnectionClosed("peer closed in the middle of a request"))
                    return events
                raise ProtocolError(str(exc), exc.error_status_hint) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return events
            if isinstance(event, h11.Data):
                self._count_body(len(event.data))
                if events and isinstance(events[-1], BodyReceived):
                    events[-1] = BodyReceived(events[-1].data + event.data, True)
                else:
                    events.append(BodyReceived(bytes(event.data), True))
            elif isinstance(event, h11.EndOfMessage):
                if events and isinstance(events[-1], BodyReceived):
                    events[-1] = BodyReceived(events[-1].data, False)
                else:
                    events.append(BodyReceived(b"", False))
            elif isinstance(event, h11.Request):
                events.append(self._request_received(event))
            elif isinstance(event, h11.ConnectionClosed):
                events.append(ConnectionClosed("peer closed the connection"))
                return events

    def _request_received(self, event: h11.Request) -> RequestReceived:
        if event.method == b"CONNECT":
            # RFC 9110 §9.3.6: an origin server need not support tunnelling.
            raise ProtocolError("CONNECT is not supported", 405)
        if not event.target.isascii():
            raise ProtocolError("request target is not ASCII", 400)
        if not event.http_version.startswith(b"1."):
            raise ProtocolError("HTTP version not supported", 505)
        headers = tuple(event.headers)
        # h11 only limits a head that is still incomplete; one that arrives in a
        # single read is measured here (request line, fields, CRLFs).
        head_size = len(event.method) + len(event.target) + 14
        head_size += sum(len(name) + len(value) + 4 for name, value in headers)
        if head_size > self._max_head_size:
            raise ProtocolError("request head too large", 431)
        content_length = transfer_encoding = False
        for name, value in headers:
            if name == b"content-length":
                content_length = True
                if self._limit_request_body is not None and int(value) > self._limit_request_body:
                    raise ProtocolError("request body too large", 413)
            elif name == b"transfer-encoding":
                transfer_encoding = True
        if content_length and transfer_encoding:
            # RFC 9112 §6.1: a request smuggling vector; rejecting it is allowed.
            raise ProtocolError("both Content-Length and Transfer-Encoding", 400)
        self._head_request = event.method == b"HEAD"
        self._body_received = 0
        # RFC 9112 §2.3: a higher 1.x minor version is processed as 1.1.
        http_version = "1.0" if event.http_version == b"1.0" else "1.1"
        return RequestReceived(
            method=event.method,
            target=event.target,
            headers=headers,
            http_version=http_version,
        )

    def _count_body(self, size: int) -> None:
        self._body_received += size
        if self._limit_request_body is not None and self._body_received > self._limit_request_body:
            raise ProtocolError("request body too large", 413)

    def send_continue(self) -> bytes:
        if not self._conn.they_are_waiting_for_100_continue:
            return b""
        return self._conn.send(_CONTINUE) or b""

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        try:
            return (
                self._conn.send(
                    h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))
                )
                or b""
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None

    def send_body(self, data: bytes, more: bool = False) -> bytes:
        conn = self._conn
        try:
            out = b""
            if data and not self._head_request:
                out = conn.send(h11.Data(data=data)) or b""
            if not more:
                out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            conn.send_failed()
            raise LocalProtocolError(str(exc)) from None
        return out

    def start_new_cycle(self) -> None:
        self._conn.start_next_cycle()

    def upgrade(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """Send ``101 Switching Protocols``; return its bytes and the bytes after the request."""
        response = h11.InformationalResponse(
            status_code=101, headers=headers, reason=b"Switching Protocols"
        )
        try:
            out = self._conn.send(response) or b""
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        return out, self._conn.trailing_data[0]

    @property
    def keep_alive(self) -> bool:
        """Whether another request may follow on this connection once both sides are done."""
        conn = self._conn
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    @property
    def response_complete(self) -> bool:
        return self._conn.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    @property
    def request_complete(self) -> bool:
        return self._conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    @property
    def has_pending_input(self) -> bool:
        """True when part of a request is buffered (decides 408 versus a silent close)."""
        return bool(self._conn.trailing_data[0])
