"""HTTP/1.1 over httptools (llhttp): the C-accelerated :class:`ProtocolHandler`.

:class:`H1HttpToolsProtocol` is a drop-in for :class:`~palfrey.protocols.h11.H1Protocol`:
same constructor, same events, same error status codes, same bytes on the wire
(including h11's ``Transfer-Encoding: chunked`` / ``Connection: close`` additions),
so the server behaves the same whichever parser ``--http`` picks. The state
machine below is h11's, reduced to what a server needs; comments name the h11
rule each piece mirrors.

llhttp parses only the request head. httptools cannot pause between pipelined
requests or report where a message ended, so this module frames messages
itself: it hands llhttp exactly one complete head (found with h11's ``\\n\\r?\\n``
rule) and reads the body by ``Content-Length`` or its own chunked decoder. Bytes
after the current request stay buffered until :meth:`start_new_cycle`, so a
pipelining client can never make it parse more than one request ahead.

The one deliberate difference from H1Protocol, on input no conforming client
sends: methods llhttp does not know are answered 400. What else llhttp refuses
and h11 tolerates (obsolete line folding, bare LF line endings, control
characters in field values, a repeated ``Content-Length``) H1Protocol refuses
too (:func:`~palfrey.protocols.h1_wire.lax_head_error`).
tests/test_httptools_protocol.py and tests/test_http11_edges.py hold both
handlers to the same transcripts.
"""

from __future__ import annotations

import httptools

from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolEvent,
    RequestReceived,
)
from palfrey.protocols.h1_wire import (
    CHUNKED,
    LENGTH,
    MAX_TARGET_LENGTH,
    BodyCounter,
    ChunkedDecoder,
    PeerError,
    ResponseFields,
    check_request_head,
    informational_head,
    lax_head_error,
    render_response_head,
    trailer_section,
    transfer_coding_error,
)
from palfrey.protocols.llhttp_head import PARSERS, new_parser

# One side's state, named after h11's states so the two handlers read alike.
IDLE = 0
SEND_RESPONSE = 1
SEND_BODY = 2
DONE = 3
MUST_CLOSE = 4
CLOSED = 5
MIGHT_SWITCH = 6
SWITCHED = 7
ERROR = 8
_FINISHED = (DONE, MUST_CLOSE, CLOSED)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_EMPTY_END = BodyReceived(b"", False)
_PEER_CLOSED = ConnectionClosed("peer closed the connection")
_PEER_CLOSED_MID_REQUEST = ConnectionClosed("peer closed in the middle of a request")
_DATA_AFTER_EOF = ConnectionClosed("data after end of file")


class H1HttpToolsProtocol:
    """One HTTP/1.1 server connection: llhttp parses heads, this class does the rest."""

    __slots__ = (
        "_body",
        "_body_left",
        "_buf",
        "_chunks",
        "_client",
        "_eof",
        "_keep_alive",
        "_max_incomplete",
        "_max_target_length",
        "_request_method",
        "_scan",
        "_server",
        "_switch_pending",
        "_their_version",
        "_waiting_100",
        "_write_left",
        "_writer",
    )

    def __init__(
        self,
        *,
        max_incomplete_event_size: int = 16 * 1024,
        limit_request_body: int | None = None,
        max_target_length: int = MAX_TARGET_LENGTH,
    ) -> None:
        self._max_incomplete = max_incomplete_event_size
        self._max_target_length = max_target_length
        self._body = BodyCounter(limit_request_body)
        self._buf = b""
        self._scan = 0
        self._eof = False
        self._client = IDLE
        self._server = IDLE
        self._keep_alive = True
        self._switch_pending = False
        self._waiting_100 = False
        self._request_method: bytes | None = None
        self._their_version: str | None = None
        self._body_left = 0
        self._chunks: ChunkedDecoder | None = None
        self._writer = LENGTH
        self._write_left = 0

    # Receiving.

    def receive_data(self, data: bytes) -> list[ProtocolEvent]:
        if data:
            if self._eof:
                return [_DATA_AFTER_EOF]
            self._buf = self._buf + data if self._buf else bytes(data)
        else:
            self._eof = True
        return self.next_events()

    def next_events(self) -> list[ProtocolEvent]:
        events: list[ProtocolEvent] = []
        try:
            self._pump(events)
        except PeerError:
            self._client = ERROR
            self._settle()
            if self._eof:
                events.append(_PEER_CLOSED_MID_REQUEST)
                return events
            raise
        return events

    def _pump(self, events: list[ProtocolEvent]) -> None:
        """Parse until the current request is complete or more input is needed (h11's loop)."""
        while True:
            state = self._client
            if state == SEND_BODY:
                if not self._read_body(events):
                    self._need_data()
                    return
            elif state == IDLE:
                buf = self._buf
                if not buf:
                    if self._eof:
                        self._peer_closed(events)
                    return
                if buf[0] < 0x21:
                    # h11 rejects a request line starting with whitespace or CR/LF at once.
                    raise PeerError("illegal request line")
                end = self._head_end(buf)
                if end < 0:
                    self._need_data()
                    return
                events.append(self._parse_head(buf, end))
            elif state == DONE:
                # Paused: whatever is buffered waits for start_new_cycle().
                if self._eof and not self._buf:
                    self._peer_closed(events)
                return
            elif state == MUST_CLOSE:
                # Bytes after a request that said ``connection: close`` are not processed
                # (RFC 9112 §9.6): the request is answered, then the connection closes.
                if self._eof:
                    self._peer_closed(events)
                return
            elif state == CLOSED:
                if self._buf:
                    raise PeerError("Got data when expecting EOF")
                if self._eof:
                    self._peer_closed(events)
                return
            elif state == ERROR:
                raise PeerError("Can't receive data when peer state is ERROR")
            else:
                return

    def _need_data(self) -> None:
        if len(self._buf) > self._max_incomplete:
            if self._client == IDLE and b"\n" not in self._buf:
                # Still in the request line: its target is what is too long.
                raise PeerError("request target too long", 414)
            raise PeerError("Receive buffer too long", 431)
        if self._eof:
            raise PeerError("peer unexpectedly closed connection")

    def _peer_closed(self, events: list[ProtocolEvent]) -> None:
        events.append(_PEER_CLOSED)
        self._client = CLOSED
        self._settle()

    def _head_end(self, buf: bytes) -> int:
        """Index just past the blank line ending the head, or -1 (h11's ``\\n\\r?\\n``)."""
        start = self._scan
        crlf = buf.find(b"\n\r\n", start)
        if crlf >= 0:
            lf = buf.find(b"\n\n", start, crlf + 1)
            self._scan = 0
            return lf + 2 if lf >= 0 else crlf + 3
        lf = buf.find(b"\n\n", start)
        if lf >= 0:
            self._scan = 0
            return lf + 2
        self._scan = max(0, len(buf) - 2)
        return -1

    def _parse_head(self, buf: bytes, end: int) -> RequestReceived:
        parser, head = PARSERS.pop() if PARSERS else new_parser()
        head.reset()
        if end == len(buf):
            self._buf = b""
        else:
            self._buf = buf[end:]
            buf = buf[:end]
        upgraded = False
        try:
            parser.feed_data(buf)
        except httptools.HttpParserUpgrade:
            upgraded = True  # llhttp now expects another protocol
        except httptools.HttpParserCallbackError:
            raise head.error or PeerError("malformed request head") from None
        except httptools.HttpParserError as exc:
            message = str(exc)
            if "Transfer-Encoding" not in message or "Content-Length" in message:
                raise PeerError(message) from None
            # llhttp's own Transfer-Encoding rules: answered by transfer_coding_error.
            head.error = head.error or PeerError(message, 501)
        method = parser.get_method()
        url = head.url
        # h11's request line is method SP target SP version: llhttp also takes
        # runs of spaces, and a line without a version as HTTP/0.9.
        after_url = len(method) + len(url) + 2
        # The version is read off the line when it is plainly HTTP/1.1: llhttp
        # formats a new string for it on every call.
        if buf[after_url - 1] == 0x20 and buf.startswith(b"HTTP/1.1\r\n", after_url):
            version = "1.1"
        else:
            version = parser.get_http_version()
        if (
            buf[len(method) + 1] == 0x20
            or buf[after_url] == 0x20
            or (version == "0.9" and b" HTTP/" not in buf[: buf.find(b"\n")])
        ):
            raise PeerError("illegal request line")
        if head.error is not None:
            if head.error.status_code == 501:
                raise lax_head_error(buf) or transfer_coding_error(buf)
            raise head.error
        if not head.done:
            raise PeerError("malformed request head")
        # h11: HTTP/1.1 needs exactly one Host, any version at most one (RFC 9112 §3.2).
        if head.hosts != 1 and (head.hosts or version == "1.1"):
            raise PeerError("Missing mandatory Host: header or found multiple Host: headers")
        fields = head.fields
        body = self._body
        # llhttp has already refused Content-Length with Transfer-Encoding (400).
        scope_version = check_request_head(
            method,
            url,
            version,
            fields,
            content_length=head.content_length,
            chunked=head.chunked,
            max_head_size=self._max_incomplete,
            max_target_length=self._max_target_length,
            limit_request_body=body.limit,
            raw_size=end,
            host=head.host,
        )

        self._client = SEND_BODY
        if self._server == IDLE:
            self._server = SEND_RESPONSE
        self._request_method = method
        self._their_version = version
        # h11 keeps HTTP/1.0 connections alive never, HTTP/1.1 unless told to close.
        if head.close or version < "1.1":
            self._keep_alive = False
        if head.upgrade:
            self._switch_pending = True
        self._waiting_100 = head.expect and version >= "1.1"
        body.received = 0
        if head.chunked:
            self._body_left = -1
            self._chunks = ChunkedDecoder()
        else:
            self._body_left = head.content_length or 0
            # llhttp only saw a head; it is ready for another if that ended the message.
            if not (head.content_length or upgraded or head.close or version < "1.1"):
                PARSERS.append((parser, head))
        return RequestReceived(method, url, tuple(fields), scope_version)

    def _read_body(self, events: list[ProtocolEvent]) -> bool:
        """Move buffered body bytes into ``events``; True once the request is complete."""
        left = self._body_left
        if left < 0:
            return self._read_chunked(events)
        if left == 0:
            events.append(_EMPTY_END)
            self._end_of_request()
            return True
        buf = self._buf
        if not buf:
            return False
        if len(buf) <= left:
            data = buf
            self._buf = b""
        else:
            data = buf[:left]
            self._buf = buf[left:]
        left -= len(data)
        self._body_left = left
        self._body.add(len(data))
        self._waiting_100 = False
        if left:
            events.append(BodyReceived(data, True))
            return False
        events.append(BodyReceived(data, False))
        self._end_of_request()
        return True

    def _read_chunked(self, events: list[ProtocolEvent]) -> bool:
        parts: list[bytes] = []
        complete = False
        try:
            assert self._chunks is not None
            consumed, complete = self._chunks.decode(self._buf, parts, self._body.add)
            self._buf = self._buf[consumed:]
        finally:
            # Like H1Protocol, the data before an error still counts if the peer has gone.
            if parts or complete:
                self._waiting_100 = False
                events.append(BodyReceived(b"".join(parts), not complete))
        if complete:
            self._chunks = None
            self._end_of_request()
        return complete

    def _end_of_request(self) -> None:
        self._client = DONE
        self._waiting_100 = False
        self._settle()

    def _settle(self) -> None:
        """h11's state-triggered transitions, in h11's order (one pass reaches the fixpoint)."""
        client = self._client
        server = self._server
        if self._switch_pending:
            if client == DONE:
                client = MIGHT_SWITCH
        elif client == MIGHT_SWITCH:
            client = DONE
        if not self._keep_alive:
            if client == DONE:
                client = MUST_CLOSE
            if server == DONE:
                server = MUST_CLOSE
        if client == MIGHT_SWITCH and server == SWITCHED:
            client = SWITCHED
        elif (client == CLOSED and server in (DONE, IDLE)) or (client == ERROR and server == DONE):
            server = MUST_CLOSE
        elif client == DONE and server == ERROR:
            client = MUST_CLOSE
        self._client = client
        self._server = server

    # Sending.

    def send_continue(self) -> bytes:
        if not self._waiting_100:
            return b""
        self._waiting_100 = False
        return _CONTINUE

    def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        head = informational_head(status, headers)
        if self._their_version is not None and self._their_version < "1.1":
            return b""  # RFC 9110 §15.2: no 1xx for an HTTP/1.0 client
        if self._server != SEND_RESPONSE:
            self._fail_send()
            raise LocalProtocolError(f"can't send a 1xx response in state {self._server}")
        # As h11 is made to: only a 100 answers ``Expect: 100-continue``.
        self._waiting_100 = self._waiting_100 and status != 100
        return head

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        if not isinstance(status, int):
            raise LocalProtocolError("status code must be integer")
        status = int(status)
        if not 200 <= status < 1000:
            raise LocalProtocolError(
                f"Response status_code should be in range [200, 1000), not {status}"
            )
        if self._server not in (SEND_RESPONSE, IDLE):
            # h11 checks the fields first: a bad one is the error to report.
            ResponseFields(headers)
            self._fail_send()
            raise LocalProtocolError(f"can't send a response in state {self._server}")
        head, self._writer, self._write_left, self._keep_alive = render_response_head(
            status, headers, self._request_method, self._their_version, self._keep_alive
        )
        self._server = SEND_BODY
        self._switch_pending = False
        self._waiting_100 = False
        self._settle()
        return head

    def send_body(self, data: bytes, more: bool = False) -> bytes:
        out = b""
        # A HEAD response has no body, whatever the application sends (h11 drops it too).
        if data and self._request_method != b"HEAD":
            if self._server != SEND_BODY:
                self._fail_send()
                raise LocalProtocolError(f"can't send body data in state {self._server}")
            writer = self._writer
            if writer == LENGTH:
                if len(data) > self._write_left:
                    self._fail_send()
                    raise LocalProtocolError("Too much data for declared Content-Length")
                self._write_left -= len(data)
                out = data
            elif writer == CHUNKED:
                if not more:
                    out = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
                    self._end_of_response()
                    return out
                out = b"%x\r\n%s\r\n" % (len(data), data)
            else:
                out = data
        if not more:
            if self._server != SEND_BODY:
                self._fail_send()
                raise LocalProtocolError(f"can't end the response in state {self._server}")
            if self._writer == LENGTH and self._write_left:
                self._fail_send()
                raise LocalProtocolError("Too little data for declared Content-Length")
            if self._writer == CHUNKED:
                out += _LAST_CHUNK
            self._end_of_response()
        return out

    def frame_body(self, length: int, more: bool = False) -> tuple[bytes, bytes]:
        if self._server != SEND_BODY:
            self._fail_send()
            raise LocalProtocolError(f"can't send body data in state {self._server}")
        before = after = b""
        writer = self._writer
        if writer == LENGTH:
            if length > self._write_left:
                self._fail_send()
                raise LocalProtocolError("Too much data for declared Content-Length")
            self._write_left -= length
        elif writer == CHUNKED:
            before, after = b"%x\r\n" % length, b"\r\n"
        if not more:
            after += self.send_body(b"")
        return before, after

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if self._writer != CHUNKED or self._server != SEND_BODY:
            return self.send_body(b"")  # no chunked body to trail: dropped, as by h11
        try:
            section = trailer_section(headers)
        except LocalProtocolError:
            self._fail_send()
            raise
        self._end_of_response()
        return section

    def _end_of_response(self) -> None:
        self._server = DONE
        self._settle()

    def _fail_send(self) -> None:
        self._server = ERROR
        self._settle()

    def start_new_cycle(self) -> None:
        if self._client != DONE or self._server != DONE:
            raise LocalProtocolError("not in a reusable state")
        self._client = IDLE
        self._server = IDLE
        self._request_method = None

    def upgrade(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """Send ``101 Switching Protocols``; return its bytes and the bytes after the request."""
        fields = ResponseFields(headers)
        if self._server != SEND_RESPONSE or not self._switch_pending:
            self._fail_send()
            raise LocalProtocolError("no upgrade was proposed by the client")
        self._server = SWITCHED
        self._waiting_100 = False
        self._settle()
        fields.lines[0] = _SWITCHING
        fields.lines.append(b"\r\n")
        return b"".join(fields.lines), self._buf

    # State, as h11 reports it.

    @property
    def upgrade_requested(self) -> bool:
        return self._switch_pending

    @property
    def awaiting_continue(self) -> bool:
        return self._waiting_100

    @property
    def keep_alive(self) -> bool:
        """Whether another request may follow on this connection once both sides are done."""
        return self._client == DONE and self._server == DONE

    @property
    def response_complete(self) -> bool:
        return self._server in _FINISHED

    @property
    def request_complete(self) -> bool:
        return self._client in _FINISHED

    @property
    def has_pending_input(self) -> bool:
        """True when part of a request is buffered (decides 408 versus a silent close)."""
        return bool(self._buf)

    @property
    def pending_input_size(self) -> int:
        return len(self._buf)

    @property
    def unread_body_size(self) -> int | None:
        if self.request_complete:
            return 0
        return None if self._body_left < 0 else self._body_left
