"""HTTP/3 as a sans-I/O state machine: datagrams in, stream events out, calls to datagrams.

A wrapper of aioquic's :class:`~aioquic.quic.connection.QuicConnection` and
:class:`~aioquic.h3.connection.H3Connection` with the same stream-id
interface as :class:`~palfrey.protocols.h2.H2Protocol`. The caller passes
every datagram with its address and the current time (no clock is read
here), and asks :meth:`H3Protocol.get_timer` when to call
:meth:`H3Protocol.handle_timer`. It adds what aioquic leaves to its user:

- requests become :class:`~palfrey.protocols.events.RequestReceived` with the
  pseudo-headers taken out (``:authority`` becomes the first ``host``);
- a malformed request is a *stream* error ``H3_MESSAGE_ERROR`` (RFC 9114
  §4.1.2), where aioquic would close the whole connection;
- requests no application may see (CONNECT, ``:protocol``, a header list over
  the limit, a stream after GOAWAY) are answered or refused here;
- flow control follows consumption: aioquic doubles a stream's receive
  window whenever the peer has sent half of it, whatever the application
  read, so a client could make the server buffer a body without bound.
  :class:`_ConsumptionQuic` instead keeps each window at "consumed plus
  the stream window" (``--h3-receive-window``, :data:`STREAM_WINDOW` by default),
  and the connection's at "consumed plus four stream windows";
  :meth:`H3Protocol.acknowledge` reports what
  the app consumed. That is the only place aioquic's internals are touched
  for flow control (tested in ``tests/test_h3_protocol.py``);
- graceful shutdown sends GOAWAY (RFC 9114 §5.2) and then ``CONNECTION_CLOSE``.

Whatever aioquic raises for bad input is caught; the caller only sees
:class:`StreamClosed` for a stream that can take no more.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import pylsqpack
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import (
    ErrorCode,
    FrameType,
    H3Connection,
    HeadersState,
    MessageError,
    encode_frame,
)
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection

from palfrey.protocols.events import (
    ConnectionTerminated,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamEvent,
    StreamReset,
)
from palfrey.protocols.request_fields import (
    CONNECTION_SPECIFIC,
    MalformedRequest,
    check_trailer_fields,
    parse_request_fields,
)

__all__ = [
    "CONNECTION_WINDOWS",
    "STREAM_WINDOW",
    "ConnectionIdIssued",
    "ConnectionIdRetired",
    "ErrorCode",
    "H3Protocol",
    "StreamClosed",
]

#: Request body bytes a stream may have received and not yet consumed (its window), by default.
STREAM_WINDOW = 1024 * 1024
#: The same for all streams of a connection together, in stream windows.
CONNECTION_WINDOWS = 4
#: The largest client-initiated bidirectional stream id (RFC 9000 §2.1, 62-bit ids).
MAX_STREAM_ID = 2**62 - 4


class StreamClosed(Exception):
    """The stream can take no more frames (reset, stopped, or the connection ended)."""


@attrs.frozen(slots=True)
class ConnectionIdIssued:
    """The connection will also answer to ``cid``: route datagrams carrying it here."""

    cid: bytes


@attrs.frozen(slots=True)
class ConnectionIdRetired:
    """``cid`` no longer names this connection."""

    cid: bytes


H3Event = StreamEvent | ConnectionIdIssued | ConnectionIdRetired


class _ConsumptionQuic(QuicConnection):
    """A QUIC connection whose receive windows grow only as the application consumes.

    aioquic's ``_write_stream_limits`` and ``_write_connection_limits`` raise a
    limit whenever ``received * 2 > limit``. Here the limit is first moved to
    where consumption puts it, and the two checks are then run with the received
    count hidden (set to zero for the call), so aioquic only writes the frame.
    """

    def __init__(self, *args: Any, stream_window: int, max_streams: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aioquic's initial_max_streams_bidi (128), which it raises as streams finish:
        # the number of request streams a client may have open at once.
        self._local_max_streams_bidi.value = max_streams
        self.stream_window = stream_window
        self.connection_window = CONNECTION_WINDOWS * stream_window
        #: Body bytes of open request streams handed out and not yet consumed.
        self.unconsumed: dict[int, int] = {}
        self.total_unconsumed = 0

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if stream.max_stream_data_local:
            received = stream.receiver.highest_offset
            window = self.stream_window
            limit = received - self.unconsumed.get(stream.stream_id, 0) + window
            if limit - stream.max_stream_data_local >= window // 2:
                stream.max_stream_data_local = limit
            stream.receiver.highest_offset = 0
            try:
                super()._write_stream_limits(builder, space, stream)
            finally:
                stream.receiver.highest_offset = received
        else:
            super()._write_stream_limits(builder, space, stream)

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        max_data = self._local_max_data
        used = max_data.used
        window = self.connection_window
        limit = used - self.total_unconsumed + window
        if limit - max_data.value >= window // 2:
            max_data.value = limit
        max_data.used = 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used


class _StreamErrorH3(H3Connection):
    """aioquic's H3Connection, with a malformed request a stream error (RFC 9114 §4.1.2).

    aioquic closes the connection with ``H3_MESSAGE_ERROR`` for a bad header
    section or a body that contradicts ``content-length``. The frame has been
    consumed (and the QPACK state kept in step) by the time the check fails,
    so the stream is recorded in :attr:`malformed`, to be reset, and the rest
    of its frames are accepted and dropped.
    """

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.malformed: list[int] = []

    def _handle_request_or_push_frame(
        self, frame_type: int, frame_data: bytes | None, stream: Any, stream_ended: bool
    ) -> list[Any]:
        try:
            return super()._handle_request_or_push_frame(
                frame_type, frame_data, stream, stream_ended
            )
        except MessageError:
            if stream.push_id is not None:
                raise
            stream.headers_recv_state = HeadersState.AFTER_HEADERS
            stream.expected_content_length = None
            self.malformed.append(stream.stream_id)
            return []


class H3Protocol:
    """One server-side QUIC connection carrying HTTP/3, without I/O."""

    __slots__ = (
        "_goaway_stream_id",
        "_h3",
        "_header_list_limit",
        "_highest_stream_id",
        "_open",
        "_quic",
        "terminated",
    )

    def __init__(
        self,
        configuration: QuicConfiguration,
        *,
        original_destination_connection_id: bytes,
        max_header_list_size: int = 65536,
        stream_window: int = STREAM_WINDOW,
        max_concurrent_streams: int = 100,
    ) -> None:
        # The windows the peer is first given must be the ones kept up afterwards.
        configuration.max_stream_data = stream_window
        configuration.max_data = CONNECTION_WINDOWS * stream_window
        self._quic = _ConsumptionQuic(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            stream_window=stream_window,
            max_streams=max_concurrent_streams,
        )
        self._h3 = _StreamErrorH3(self._quic)
        self._header_list_limit = max_header_list_size
        #: Request streams handed to the caller and not yet finished or reset.
        self._open: set[int] = set()
        self._highest_stream_id = -4
        self._goaway_stream_id: int | None = None
        #: The QUIC connection is over (closed by either side, or idle): stop serving it.
        self.terminated = False

    @property
    def handshake_complete(self) -> bool:
        """The TLS handshake finished: the client proved it can answer (RFC 9001 §4.1.1)."""
        return bool(self._quic._handshake_complete)

    @property
    def cipher_suite(self) -> int | None:
        """The negotiated TLS 1.3 cipher suite's IANA number, once the handshake chose it."""
        schedule = self._quic.tls.key_schedule
        return None if schedule is None else int(schedule.cipher_suite)

    @property
    def host_cid(self) -> bytes:
        """The connection id this server chose first (route it here as well)."""
        return self._quic.host_cid

    # Input.

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> list[H3Event]:
        """Feed one datagram from ``addr``; the events it completes, in order."""
        try:
            self._quic.receive_datagram(data, addr, now)
        except Exception as exc:  # aioquic's parsers raise assorted types on garbage
            self._quic.close(error_code=ErrorCode.H3_INTERNAL_ERROR, reason_phrase=str(exc)[:64])
        return self._drain()

    def handle_timer(self, now: float) -> list[H3Event]:
        """The time from :meth:`get_timer` has come; the events that follow."""
        try:
            self._quic.handle_timer(now)
        except Exception:
            return self._broken()
        return self._drain()

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: no timer)."""
        if self.terminated:
            return None
        try:
            return self._quic.get_timer()
        except Exception:
            self._broken()
            return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """Everything to send now, with its destination."""
        if self.terminated:
            return []
        try:
            return self._quic.datagrams_to_send(now)
        except Exception:
            # E.g. a connection whose first datagram was unusable has no path to send on.
            self._broken()
            return []

    def _broken(self) -> list[H3Event]:
        """aioquic failed on its own state: the connection is over, without a goodbye."""
        if self.terminated:
            return []
        self.terminated = True
        events: list[H3Event] = [
            StreamReset(s, ErrorCode.H3_INTERNAL_ERROR, False) for s in self._open
        ]
        self._open.clear()
        events.append(ConnectionTerminated(ErrorCode.H3_INTERNAL_ERROR, 0))
        return events

    @property
    def closing(self) -> bool:
        """CONNECTION_CLOSE was sent or received: the streams are over, the connection
        lingers (RFC 9000 §10.2) until :attr:`terminated`."""
        return self._quic._close_event is not None

    def _drain(self) -> list[H3Event]:
        events: list[H3Event] = []
        quic = self._quic
        if self._open and quic._close_event is not None:
            # RFC 9000 §10.2: closing or draining, no stream frame is processed any more.
            code = int(quic._close_event.error_code)
            events.extend(StreamReset(s, code, True) for s in sorted(self._open))
            self._open.clear()
        while (event := quic.next_event()) is not None:
            kind = type(event)
            if kind is quic_events.ConnectionIdIssued:
                events.append(ConnectionIdIssued(event.connection_id))
                continue
            if kind is quic_events.ConnectionIdRetired:
                events.append(ConnectionIdRetired(event.connection_id))
                continue
            if kind is quic_events.ConnectionTerminated:
                self.terminated = True
                for stream_id in sorted(self._open):
                    events.append(StreamReset(stream_id, int(event.error_code), True))
                self._open.clear()
                events.append(ConnectionTerminated(int(event.error_code), 0))
                continue
            if kind is quic_events.StreamReset or kind is quic_events.StopSendingReceived:
                stream_id = event.stream_id
                if stream_id in self._open:
                    self._forget(stream_id)
                    events.append(StreamReset(stream_id, int(event.error_code), True))
            try:
                h3_events = self._h3.handle_event(event)
            except Exception as exc:  # nothing of aioquic's may escape
                quic.close(error_code=ErrorCode.H3_INTERNAL_ERROR, reason_phrase=str(exc)[:64])
                continue
            for h3_event in h3_events:
                self._translate(h3_event, events)
            malformed = self._h3.malformed
            while malformed:
                stream_id = malformed.pop()
                if stream_id in self._open:
                    self._forget(stream_id)
                    events.append(StreamReset(stream_id, ErrorCode.H3_MESSAGE_ERROR, False))
                self._abort(stream_id, ErrorCode.H3_MESSAGE_ERROR)
        return events

    def _translate(self, event: Any, events: list[H3Event]) -> None:
        stream_id = event.stream_id
        if type(event) is DataReceived:
            if stream_id in self._open:
                if event.data:
                    self._quic.unconsumed[stream_id] = self._quic.unconsumed.get(
                        stream_id, 0
                    ) + len(event.data)
                    self._quic.total_unconsumed += len(event.data)
                    events.append(StreamData(stream_id, event.data))
                if event.stream_ended:
                    events.append(StreamEnded(stream_id))
        elif type(event) is HeadersReceived:
            if stream_id in self._open:
                # Trailers: ASGI has none for requests; they are only checked.
                try:
                    check_trailer_fields(event.headers)
                except MalformedRequest:
                    self._forget(stream_id)
                    events.append(StreamReset(stream_id, ErrorCode.H3_MESSAGE_ERROR, False))
                    self._abort(stream_id, ErrorCode.H3_MESSAGE_ERROR)
                    return
                if event.stream_ended:
                    events.append(StreamEnded(stream_id))
            elif self._is_request_head(stream_id):
                self._request(stream_id, event.headers, event.stream_ended, events)

    def _is_request_head(self, stream_id: int) -> bool:
        """A stream's first HEADERS (not the trailers of a request already turned away).

        Streams may arrive out of order (RFC 9000 §2.2), so the stream's own state
        says it, not the highest stream id seen.
        """
        stream = self._h3._stream.get(stream_id)
        return stream is None or stream.headers_recv_state is HeadersState.AFTER_HEADERS

    def _request(
        self,
        stream_id: int,
        fields: list[tuple[bytes, bytes]],
        ended: bool,
        events: list[H3Event],
    ) -> None:
        self._highest_stream_id = max(self._highest_stream_id, stream_id)
        if self._goaway_stream_id is not None and stream_id >= self._goaway_stream_id:
            # RFC 9114 §5.2: never processed, so the client may retry it elsewhere.
            self._abort(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            return
        try:
            head = parse_request_fields(fields)
        except MalformedRequest:
            self._abort(stream_id, ErrorCode.H3_MESSAGE_ERROR)
            return
        if head.size > self._header_list_limit:
            self._reject(stream_id, 431)
            return
        if head.method == b"CONNECT" or head.protocol is not None:
            # No tunnels and no WebSocket over HTTP/3 (RFC 9220 is not offered).
            self._reject(stream_id, 501)
            return
        headers = head.headers
        authority = head.authority
        if authority is not None:
            # RFC 9114 §4.3.1: ``:authority`` stands for Host, which it replaces.
            headers = [(b"host", authority), *(f for f in headers if f[0] != b"host")]
        self._open.add(stream_id)
        events.append(
            RequestReceived(
                method=head.method,
                target=head.path or b"",
                headers=tuple(headers),
                http_version="3",
                stream_id=stream_id,
                scheme=head.scheme,
                authority=authority,
            )
        )
        if ended:
            events.append(StreamEnded(stream_id))

    def _reject(self, stream_id: int, status: int) -> None:
        """Answer a request no app will see, and ask the client to stop sending its body."""
        try:
            self._h3.send_headers(stream_id, [(b":status", str(status).encode())], True)
        except Exception:  # the stream is already gone
            return
        self._stop(stream_id)

    def _abort(self, stream_id: int, error_code: int) -> None:
        """Reset both directions of the stream (RESET_STREAM and STOP_SENDING)."""
        # Raises once the stream was discarded: then there is nothing to reset.
        with contextlib.suppress(ValueError, RuntimeError):
            self._quic.reset_stream(stream_id, error_code)
        self._stop(stream_id, error_code)

    def _stop(self, stream_id: int, error_code: int = ErrorCode.H3_NO_ERROR) -> None:
        # Raises for a stream unknown or discarded already: nothing to stop.
        with contextlib.suppress(ValueError, RuntimeError):
            self._quic.stop_stream(stream_id, error_code)

    def _forget(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._quic.total_unconsumed -= self._quic.unconsumed.pop(stream_id, 0)

    # Output, per stream.

    def send_headers(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> None:
        """Queue the response head; ``end`` when no body follows."""
        fields = [(b":status", str(status).encode()), *_response_headers(headers)]
        self._call(self._h3.send_headers, stream_id, fields, end)

    def send_informational(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Queue an interim 1xx response (e.g. 103 Early Hints, RFC 9114 §4.1)."""
        self.send_headers(stream_id, status, headers, False)

    def send_trailers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Queue the trailer section, which ends the response."""
        self._call(self._h3.send_headers, stream_id, _response_headers(headers), True)

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        """Queue ``data`` whole as one DATA frame; QUIC sends it as the peer's windows allow."""
        self._call(self._h3.send_data, stream_id, bytes(data), end)

    def unsent_size(self, stream_id: int) -> int:
        """Response bytes of ``stream_id`` queued and not yet acknowledged by the peer.

        aioquic buffers everything written; a stream waits while this is high,
        which is what bounds the memory of a client that stops reading.
        """
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    @property
    def responses_delivered(self) -> bool:
        """Every response written was acknowledged whole, or reset.

        aioquic drops stream data still queued when it sends CONNECTION_CLOSE, so
        a graceful close waits for this (bounded by the shutdown deadline).
        """
        for stream_id, stream in self._quic._streams.items():
            if stream_id % 4:
                continue  # not a request stream
            sender = stream.sender
            if sender.is_finished or sender._reset_error_code is not None:
                continue
            if sender._buffer_stop == 0 and sender._buffer_fin is None:
                continue  # nothing written on it
            return False
        return True

    def acknowledge(self, stream_id: int, size: int) -> None:
        """``size`` body bytes of ``stream_id`` were consumed: the window may move on."""
        quic = self._quic
        left = quic.unconsumed.get(stream_id)
        if left is not None and size:
            size = min(size, left)
            quic.unconsumed[stream_id] = left - size
            quic.total_unconsumed -= size

    def reset(self, stream_id: int, error_code: int = ErrorCode.H3_INTERNAL_ERROR) -> None:
        """Abort the stream both ways, unless it is closed already."""
        self._forget(stream_id)
        self._abort(stream_id, error_code)

    def stream_finished(self, stream_id: int, *, request_ended: bool) -> None:
        """The caller is done with the stream; a request still sending its body is asked
        to stop (RFC 9114 §4.1: STOP_SENDING ``H3_NO_ERROR`` after a complete response)."""
        was_open = stream_id in self._open
        self._forget(stream_id)
        if was_open and not request_ended:
            self._stop(stream_id)

    # Output, connection-wide.

    def send_goaway(self) -> None:
        """GOAWAY (RFC 9114 §5.2): requests on streams after the last one seen are refused."""
        if self._goaway_stream_id is not None or self.terminated:
            return
        self._goaway_stream_id = self._highest_stream_id + 4
        control = self._h3._local_control_stream_id
        if control is not None:
            self._quic.send_stream_data(
                control,
                encode_frame(FrameType.GOAWAY, encode_uint_var(self._goaway_stream_id)),
            )

    @property
    def goaway_sent(self) -> bool:
        """A GOAWAY was queued: no new request will be served."""
        return self._goaway_stream_id is not None

    def close(self, error_code: int = ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """Queue CONNECTION_CLOSE; the connection ends once the closing period is over."""
        self._quic.close(error_code=error_code, reason_phrase=reason)

    @property
    def open_streams(self) -> int:
        """Requests handed out and not yet finished or reset."""
        return len(self._open)

    def _call(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except (ValueError, RuntimeError, AssertionError, pylsqpack.EncoderStreamError) as exc:
            raise StreamClosed(str(exc) or type(exc).__name__) from None
        except Exception as exc:  # aioquic's H3 ProtocolError: wrong state for the frame
            raise StreamClosed(str(exc) or type(exc).__name__) from None


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The app's headers minus those HTTP/3 forbids (RFC 9114 §4.2)."""
    return [
        field
        for field in headers
        if field[0] not in CONNECTION_SPECIFIC and (field[0] != b"te" or field[1] == b"trailers")
    ]
