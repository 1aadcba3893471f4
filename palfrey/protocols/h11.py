"""HTTP/1.1 over h11: the pure-Python :class:`ProtocolHandler`."""

from __future__ import annotations

import re

import h11

from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    ProtocolEvent,
    RequestReceived,
)
from palfrey.protocols.h1_wire import (
    CHUNK_SIZE_LIMIT,
    MAX_TARGET_LENGTH,
    BodyCounter,
    PeerError,
    check_request_head,
    comma_tokens,
    lax_head_error,
    transfer_coding_error,
)
from palfrey.protocols.status import reason_phrase

_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
#: h11 events are immutable, so the one every response ends with is made once.
_END_OF_MESSAGE = h11.EndOfMessage()
_EMPTY_END = BodyReceived(b"", False)
#: The field h11 writes (title-cased, replacing any the app gave) when, and only
#: when, it frames a response body chunked.
_CHUNKED_FIELD = b"\r\nTransfer-Encoding: chunked\r\n"
#: The end of a request head, by h11's rule.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _check_chunk_size(conn: h11.Connection) -> None:
    """Refuse a chunk of 2**64 bytes or more, as the shared ChunkedDecoder does.

    h11 takes up to 20 hex digits and waits for that many bytes; the size it
    is waiting for is only in its reader's private state, read here defensively.
    """
    left = getattr(getattr(conn, "_reader", None), "_bytes_in_chunk", 0)
    if isinstance(left, int) and left >= CHUNK_SIZE_LIMIT:
        raise PeerError("chunk size too large")


class _BodyLength:
    """Stands for body bytes written around h11 (:meth:`H1Protocol.frame_body`): h11
    reads only their length."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class H1Protocol:
    """One HTTP/1.1 server connection parsed and framed by h11.

    h11 pauses after each complete request, so a pipelining client can never
    make this object parse more than one request ahead of the responses.

    h11 unfolds lines, accepts bare LF and merges repeated Content-Length
    fields before its events show them, and llhttp refuses all of these; so
    that both handlers answer alike, this one keeps the raw bytes of the head
    being parsed (``_head``) and checks them with :func:`lax_head_error`.
    """

    __slots__ = (
        "_body",
        "_body_length",
        "_chunked",
        "_conn",
        "_head",
        "_head_request",
        "_in_head",
        "_max_head_size",
        "_max_target_length",
        "_upgrade_requested",
    )

    def __init__(
        self,
        *,
        max_incomplete_event_size: int = 16 * 1024,
        limit_request_body: int | None = None,
        max_target_length: int = MAX_TARGET_LENGTH,
    ) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._max_head_size = max_incomplete_event_size
        self._max_target_length = max_target_length
        self._head_request = False
        self._body = BodyCounter(limit_request_body)
        #: The current request's Content-Length; None for a chunked body.
        self._body_length: int | None = 0
        #: The current response's body is framed chunked, so it can end with trailers.
        self._chunked = False
        #: The bytes received since the current request head began (and perhaps more).
        self._head = bytearray()
        #: No request head has been parsed in this cycle (h11's client state is IDLE).
        self._in_head = True
        self._upgrade_requested = False

    def receive_data(self, data: bytes) -> list[ProtocolEvent]:
        conn = self._conn
        try:
            conn.receive_data(data)
        except RuntimeError:
            return [ConnectionClosed("data after end of file")]
        if self._in_head:
            self._head += data
        return self.next_events()

    def next_events(self) -> list[ProtocolEvent]:
        events: list[ProtocolEvent] = []
        conn = self._conn
        if conn.their_state is h11.MUST_CLOSE:
            return self._ignore_after_close(events)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.trailing_data[1]:
                    events.append(ConnectionClosed("peer closed in the middle of a request"))
                    return events
                raise self._peer_error(exc) from None
            kind = type(event)
            if kind is h11.Request:
                events.append(self._request_received(event))
            elif kind is h11.EndOfMessage:
                if events and type(events[-1]) is BodyReceived:
                    events[-1] = BodyReceived(events[-1].data, False)
                else:
                    events.append(_EMPTY_END)
                if conn.their_state is h11.MUST_CLOSE:
                    return self._ignore_after_close(events)
            elif kind is h11.Data:
                if self._body_length is None:
                    _check_chunk_size(conn)
                self._body.add(len(event.data))
                if events and type(events[-1]) is BodyReceived:
                    events[-1] = BodyReceived(events[-1].data + event.data, True)
                else:
                    events.append(BodyReceived(bytes(event.data), True))
            elif kind is h11.ConnectionClosed:
                events.append(ConnectionClosed("peer closed the connection"))
                return events
            else:  # NEED_DATA or PAUSED
                if self._body_length is None and conn.their_state is h11.SEND_BODY:
                    _check_chunk_size(conn)
                return events

    def _ignore_after_close(self, events: list[ProtocolEvent]) -> list[ProtocolEvent]:
        """The request said ``connection: close`` (or was HTTP/1.0): RFC 9112 §9.6 has the
        server answer it and process nothing further, so bytes after it are not parsed
        (h11 would call them an error); only the client's close is still reported."""
        if self._conn.trailing_data[1]:
            events.append(ConnectionClosed("peer closed the connection"))
        return events

    def _peer_error(self, exc: h11.RemoteProtocolError) -> ProtocolError:
        """h11's error as the status llhttp's handler gives the same input."""
        status = exc.error_status_hint
        if self._in_head:
            if status == 501:
                # h11 answers any Transfer-Encoding but one "chunked" with 501, before
                # the rest of the head's grammar, which llhttp checks first.
                head = self._raw_head()
                return lax_head_error(head) or transfer_coding_error(bytes(head))
            if status == 431 and b"\n" not in self._head:
                # Still in the request line: its target is what is too long.
                return ProtocolError("request target too long", 414)
        elif status == 501:
            return ProtocolError("bad Transfer-Encoding in trailers", 400)
        return ProtocolError(str(exc), status)

    def _raw_head(self) -> bytearray:
        """The received bytes up to the end of the head, or all of them if it has not ended."""
        head = self._head
        end = _BLANK_LINE.search(head)
        return head[: end.end()] if end else head

    def _request_received(self, event: h11.Request) -> RequestReceived:
        error = lax_head_error(self._raw_head())
        if error is not None:
            raise error
        self._head = bytearray()
        self._in_head = False
        # raw_items() is a plain list; iterating h11's Headers builds a tuple per item.
        headers = tuple([(name.lower(), value) for name, value in event.headers.raw_items()])
        content_length: int | None = None
        chunked = False
        host: bytes | None = None
        upgrade = False
        for name, value in headers:
            # h11 has already refused conflicting Content-Length fields (and
            # lax_head_error repeated ones) and any Transfer-Encoding but one "chunked".
            if name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"host":
                host = value
            elif name == b"upgrade":
                # h11's rule for a switch proposal: the field lists a protocol.
                upgrade = upgrade or bool(comma_tokens(value))
        http_version = check_request_head(
            event.method,
            event.target,
            event.http_version.decode("ascii"),
            headers,
            content_length=content_length,
            chunked=chunked,
            max_head_size=self._max_head_size,
            max_target_length=self._max_target_length,
            limit_request_body=self._body.limit,
            host=host,
        )
        self._head_request = event.method == b"HEAD"
        self._upgrade_requested = upgrade
        self._body.received = 0
        self._body_length = None if chunked else content_length or 0
        return RequestReceived(
            method=event.method,
            target=event.target,
            headers=headers,
            http_version=http_version,
        )

    def send_continue(self) -> bytes:
        if not self._conn.they_are_waiting_for_100_continue:
            return b""
        return self._conn.send(_CONTINUE) or b""

    def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        if status == 101:
            raise LocalProtocolError("101 Switching Protocols is sent by upgrade()")
        conn = self._conn
        try:
            event = h11.InformationalResponse(
                status_code=status, headers=headers, reason=reason_phrase(status)
            )
            version = conn.their_http_version
            if version is not None and version < b"1.1":
                return b""  # RFC 9110 §15.2: no 1xx for an HTTP/1.0 client
            waiting = conn.client_is_waiting_for_100_continue
            out = conn.send(event) or b""
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        # h11 takes any 1xx as the answer to ``Expect: 100-continue``; only a 100 is.
        conn.client_is_waiting_for_100_continue = waiting and status != 100
        return out

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        try:
            out = (
                self._conn.send(
                    h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))
                )
                or b""
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        # A HEAD, 204 or 304 response may name chunked framing without a body to frame.
        self._chunked = (
            _CHUNKED_FIELD in out and not self._head_request and status not in (204, 304)
        )
        return out

    def send_body(self, data: bytes, more: bool = False) -> bytes:
        conn = self._conn
        try:
            out = b""
            if data and not self._head_request:
                out = conn.send(h11.Data(data=data)) or b""
            if not more:
                out += conn.send(_END_OF_MESSAGE) or b""
        except h11.LocalProtocolError as exc:
            conn.send_failed()
            raise LocalProtocolError(str(exc)) from None
        return out

    def frame_body(self, length: int, more: bool = False) -> tuple[bytes, bytes]:
        # h11 hands back the very object given as data (its sendfile support), so a
        # stand-in with only a length frames bytes h11 never sees.
        conn = self._conn
        stand_in = _BodyLength(length)
        try:
            parts = conn.send_with_data_passthrough(h11.Data(data=stand_in)) or []  # type: ignore[arg-type]
            index = next(i for i, part in enumerate(parts) if part is stand_in)
            before = b"".join(parts[:index])
            after = b"".join(parts[index + 1 :])
            if not more:
                after += conn.send(_END_OF_MESSAGE) or b""
        except h11.LocalProtocolError as exc:
            conn.send_failed()
            raise LocalProtocolError(str(exc)) from None
        return before, after

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        conn = self._conn
        try:
            # h11 refuses trailers after a content-length or HTTP/1.0 body: dropped there.
            event = h11.EndOfMessage(headers=headers) if self._chunked else _END_OF_MESSAGE
            return conn.send(event) or b""
        except h11.LocalProtocolError as exc:
            conn.send_failed()
            raise LocalProtocolError(str(exc)) from None

    def start_new_cycle(self) -> None:
        conn = self._conn
        conn.start_next_cycle()
        # A pipelined head h11 has buffered begins the next request.
        self._head = bytearray(conn.trailing_data[0])
        self._in_head = True

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
    def upgrade_requested(self) -> bool:
        return self._upgrade_requested

    @property
    def awaiting_continue(self) -> bool:
        return self._conn.they_are_waiting_for_100_continue

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

    @property
    def pending_input_size(self) -> int:
        return len(self._conn.trailing_data[0])

    @property
    def unread_body_size(self) -> int | None:
        if self.request_complete:
            return 0
        if self._body_length is None:
            return None
        return self._body_length - self._body.received
