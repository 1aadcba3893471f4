"""HTTP/2 as a sans-I/O state machine: bytes in, stream events out, calls to bytes.

A thin wrapper of :class:`h2.connection.H2Connection` with Palfrey's own
interface, keyed by stream id (an HTTP/2 connection carries many requests,
so it does not implement the one-request-at-a-time HTTP/1.1 handler
contract). It adds what h2 leaves to its user:

- requests become :class:`~palfrey.protocols.events.RequestReceived` with the
  pseudo-headers taken out (``:authority`` becomes ``host``, first);
- requests a server must turn away before any application sees them are
  answered here (a plain ``CONNECT``, an unknown ``:protocol``, a header list
  over the limit, a stream over the concurrency limit, a stream opened after
  GOAWAY);
- padding is handed back to the flow-control window at once; body bytes only
  when the caller says they were consumed (:meth:`acknowledge`), which is what
  makes the window the back-pressure;
- outbound data is cut to the peer's window and frame size
  (:meth:`send_data` sends what fits and says how much);
- graceful shutdown uses the two-step GOAWAY of RFC 9113 §6.8 built from
  frames directly, since h2's own ``close_connection`` forbids any further
  frame on the streams still being answered;
- work h2 and hpack would repeat for every request is done once: a header
  block seen before with the HPACK tables unchanged is not coded again
  (:class:`ReusingEncoder`, :class:`ReusingDecoder`), and h2's walk over all
  its streams on each new one is amortized (:class:`_Connection`).

Everything h2 raises for bad input becomes :class:`H2ConnectionError` (the
GOAWAY is already queued) and anything the app's side cannot do any more on a
stream becomes :class:`StreamClosed`.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.exceptions
from hpack.table import HeaderTable
from hyperframe.frame import GoAwayFrame, PingFrame, SettingsFrame

from palfrey.protocols.events import (
    ConnectionTerminated,
    ControlReceived,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamEvent,
    StreamReset,
    WindowUpdated,
)
from palfrey.protocols.h2_frames import InboundFrames, PeerGoaway
from palfrey.protocols.request_fields import (
    MalformedRequest,
    check_trailer_fields,
    parse_request_fields,
)

ErrorCodes = h2.errors.ErrorCodes

#: The highest stream id; the first GOAWAY of a graceful shutdown names it (RFC 9113 §6.8).
MAX_STREAM_ID = 2**31 - 1
#: Opaque data of the PING that follows the first GOAWAY.
GOAWAY_PING = b"palfrey!"

#: Hop-by-hop fields HTTP/2 forbids (RFC 9113 §8.2.2); dropped from responses.
_CONNECTION_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
#: The ``:protocol`` values an extended CONNECT may ask for (RFC 8441 §4).
SUPPORTED_PROTOCOLS = frozenset((b"websocket",))
#: h2's own header-list bound, a multiple of the advertised one: a list between the
#: two gets a 431 on its stream, a larger one ends the connection.
_HARD_HEADER_LIST_FACTOR = 4

#: Streams h2 may hold (open or closed) before closed ones are forgotten.
_PRUNE_FLOOR = 64

_H2_ERRORS = (
    h2.exceptions.H2Error,
    hyperframe.exceptions.HyperframeError,
    hpack.HPACKError,
)


class H2ConnectionError(Exception):
    """The peer broke HTTP/2; a GOAWAY with :attr:`error_code` is queued to send."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamClosed(Exception):
    """The stream can take no more frames (reset by the peer, or the connection ended)."""


class H2Protocol:
    """One server-side HTTP/2 connection, without I/O."""

    __slots__ = (
        "_conn",
        "_extra_window",
        "_final_goaway",
        "_frames",
        "_goaway_stream_id",
        "_hard_header_limit",
        "_header_list_limit",
        "_max_streams",
        "_open",
        "_out",
        "_preface_left",
        "connect_protocol",
    )

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 65536,
        max_inbound_frame_size: int = 16384,
        connection_window: int = 1024 * 1024,
        connect_protocol: bool = True,
    ) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Checked (and cookies joined) in one pass by ``parse_request_fields``, which
            # answers a malformed request with a stream error rather than h2's GOAWAY.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            # Responses are validated by the ASGI bridge and filtered in ``_response_headers``.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = _Connection(config=config)
        conn.encoder = ReusingEncoder()
        conn.decoder = ReusingDecoder()
        settings: dict[int, int] = {
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: max_inbound_frame_size,
        }
        if connect_protocol:
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        # h2 read the frame size limit from its default settings when it was made, and an
        # ACK moves it only for a changed setting: these are in force from the start.
        conn.max_inbound_frame_size = max_inbound_frame_size
        self._hard_header_limit = max_header_list_size * _HARD_HEADER_LIST_FACTOR
        conn.decoder.max_header_list_size = self._hard_header_limit
        self._conn = conn
        self._out = bytearray()
        self._max_streams = max_concurrent_streams
        self._header_list_limit = max_header_list_size
        #: Streams handed to the caller as requests and not yet ended or reset.
        self._open: set[int] = set()
        #: Set once GOAWAY went out: streams above it are refused.
        self._goaway_stream_id: int | None = None
        self._final_goaway = False
        self._frames = InboundFrames(lambda: conn.max_inbound_frame_size)
        self.connect_protocol = connect_protocol
        self._extra_window = connection_window - conn.inbound_flow_control_window

    # Starting.

    def initiate(self) -> None:
        """Queue the server's connection preface (SETTINGS, then the larger connection window)."""
        self._conn.initiate_connection()
        self._advertise_stream_limit()
        self._open_connection_window()
        self._flush()

    def initiate_upgrade(self, settings_header: bytes) -> None:
        """Start as the target of ``Upgrade: h2c`` (RFC 7540 §3.2); stream 1 is the upgrading
        request, already received whole."""
        try:
            self._conn.initiate_upgrade_connection(settings_header)
        except (*_H2_ERRORS, ValueError) as exc:
            raise H2ConnectionError(
                f"invalid HTTP2-Settings: {exc}", ErrorCodes.PROTOCOL_ERROR
            ) from None
        self._advertise_stream_limit()
        self._open_connection_window()
        self._open.add(1)
        self._flush()

    def _advertise_stream_limit(self) -> None:
        """SETTINGS_MAX_CONCURRENT_STREAMS in a SETTINGS frame of its own.

        Given to h2, the limit is enforced by h2 as a connection error for the
        first stream over it; kept out of h2, ``_request`` refuses just that
        stream (REFUSED_STREAM, RFC 9113 §5.1.2). The peer acknowledges this
        frame separately; h2 takes the extra ACK as acknowledging nothing.
        """
        self._flush()
        frame = SettingsFrame(0)
        frame.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self._max_streams
        self._out += frame.serialize()

    def _open_connection_window(self) -> None:
        if self._extra_window > 0:
            self._conn.increment_flow_control_window(self._extra_window)

    # Input.

    def receive_data(self, data: bytes) -> list[StreamEvent]:
        """Feed bytes from the peer; the events they complete, in order."""
        conn = self._conn
        events: list[StreamEvent] = []
        try:
            for piece in self._frames.split(data):
                if type(piece) is PeerGoaway:
                    events.append(ConnectionTerminated(piece.error_code, piece.last_stream_id))
                    continue
                for event in conn.receive_data(piece):
                    self._translate(event, events)
        except _H2_ERRORS as exc:
            error_code = getattr(exc, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, hpack.HPACKError) and error_code == ErrorCodes.PROTOCOL_ERROR:
                # h2 reports a header block it cannot decode as PROTOCOL_ERROR;
                # RFC 9113 §4.3 asks for COMPRESSION_ERROR.
                error_code = ErrorCodes.COMPRESSION_ERROR
            self._conn_failed(error_code)
            raise H2ConnectionError(str(exc) or type(exc).__name__, error_code) from None
        self._flush()
        return events

    def _conn_failed(self, error_code: int) -> None:
        """The connection is over: h2's own output is dropped (it may hold a GOAWAY with
        another code, or none, as after a bad preface) and one GOAWAY says why."""
        self._conn.data_to_send()
        self._goaway(error_code, self._conn.highest_inbound_stream_id)

    def _translate(self, event: h2.events.Event, events: list[StreamEvent]) -> None:
        kind = type(event)
        if kind is h2.events.DataReceived:
            stream_id = event.stream_id
            data = event.data
            padding = event.flow_controlled_length - len(data)
            if stream_id in self._open:
                if padding:
                    self._conn.acknowledge_received_data(padding, stream_id)
                if data:
                    events.append(StreamData(stream_id, data))
            else:
                # A stream this side already finished: nobody will consume it.
                self._conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            if not event.flow_controlled_length and event.stream_ended is None:
                events.append(ControlReceived())  # an empty DATA frame: a flood's unit
        elif kind is h2.events.RequestReceived:
            self._request(event.stream_id, event.headers, events)
        elif kind is h2.events.StreamEnded:
            if event.stream_id in self._open:
                events.append(StreamEnded(event.stream_id))
        elif kind is h2.events.StreamReset:
            stream_id = event.stream_id
            if stream_id in self._open:
                self._open.discard(stream_id)
                events.append(StreamReset(stream_id, int(event.error_code or 0), True))
        elif kind is h2.events.WindowUpdated:
            events.append(WindowUpdated(event.stream_id))
            if event.delta < TINY_WINDOW_INCREMENT:
                events.append(ControlReceived())
        elif kind is h2.events.RemoteSettingsChanged:
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                events.append(WindowUpdated(0))
        elif kind is h2.events.TrailersReceived:
            # ASGI has no request trailers; they are only checked, and the stream's
            # end (a StreamEnded event of its own) is what matters.
            try:
                check_trailer_fields(event.headers)
            except MalformedRequest:
                stream_id = event.stream_id
                if stream_id in self._open:
                    events.append(StreamReset(stream_id, ErrorCodes.PROTOCOL_ERROR, False))
                self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
        elif kind is h2.events.SettingsAcknowledged:
            # h2 set its decoder's bound to the advertised size; a list between the two
            # gets its 431 from ``_request`` instead of ending the connection.
            self._conn.decoder.max_header_list_size = self._hard_header_limit
        elif kind is h2.events.PingAckReceived and event.ping_data == GOAWAY_PING:
            # Every request the peer sent before this PING has been seen.
            self.finish_goaway()
        if kind in _COSTLY_EMPTY_EVENTS:
            events.append(ControlReceived())

    def _request(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], events: list[StreamEvent]
    ) -> None:
        if self._goaway_stream_id is not None and stream_id > self._goaway_stream_id:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(self._open) >= self._max_streams:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            # Counted with the peer's resets: opening streams only to have them
            # refused costs the server as much as resetting them.
            events.append(StreamReset(stream_id, ErrorCodes.REFUSED_STREAM, False))
            return
        try:
            head = parse_request_fields(fields)
        except MalformedRequest:
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        if head.size > self._header_list_limit:
            self._reject(stream_id, 431)
            return
        method = head.method
        protocol = head.protocol
        if method == b"CONNECT" and (protocol is None or not self.connect_protocol):
            # A CONNECT tunnel (RFC 9113 §8.5) is a proxy's job, not an ASGI app's.
            self._reject(stream_id, 501)
            return
        if protocol is not None and protocol not in SUPPORTED_PROTOCOLS:
            self._reject(stream_id, 501)
            return
        headers = head.headers
        authority = head.authority
        if authority is not None:
            # RFC 9113 §8.3.1: ``:authority`` stands for Host, which it replaces.
            headers = [(b"host", authority), *(f for f in headers if f[0] != b"host")]
        self._open.add(stream_id)
        events.append(
            RequestReceived(
                method=method,
                target=head.path or b"",
                headers=tuple(headers),
                http_version="2",
                stream_id=stream_id,
                scheme=head.scheme,
                authority=authority,
                protocol=protocol,
            )
        )

    def _reject(self, stream_id: int, status: int) -> None:
        """Answer a request no app will see, and stop the rest of it from coming."""
        if not self._stream_open(stream_id):
            # Reset, or the connection ended, later in the same read: no one to answer.
            return
        try:
            # No body: the peer's window may be too small for one.
            self._conn.send_headers(
                stream_id, [(b":status", str(status).encode())], end_stream=True
            )
        except _H2_ERRORS:
            return
        if self._stream_open(stream_id):
            self._reset(stream_id, ErrorCodes.NO_ERROR)

    # Output, per stream.

    def send_headers(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> None:
        """Queue the response head; ``end`` when no body follows."""
        fields = [(b":status", str(status).encode()), *_response_headers(headers)]
        self._call(self._conn.send_headers, stream_id, fields, end_stream=end)

    def send_informational(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Queue an interim 1xx response (e.g. 103 Early Hints)."""
        self.send_headers(stream_id, status, headers, False)

    def send_trailers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Queue the trailer section, which ends the response."""
        self._call(self._conn.send_headers, stream_id, _response_headers(headers), end_stream=True)

    def window(self, stream_id: int) -> int:
        """Bytes of body the peer's flow-control windows let ``stream_id`` send now."""
        try:
            return self._conn.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            raise StreamClosed(f"stream {stream_id} is closed") from None
        except h2.exceptions.ProtocolError as exc:
            raise StreamClosed(str(exc)) from None

    def send_data(self, stream_id: int, data: bytes | memoryview, end: bool) -> int:
        """Queue as much of ``data`` as the windows allow, in frames the peer accepts;
        ``end`` applies only if all of it went. Returns the number of bytes queued."""
        conn = self._conn
        window = self.window(stream_id)
        total = len(data)
        if total == 0:
            if end:
                self._call(conn.send_data, stream_id, b"", end_stream=True)
            return 0
        frame_size = conn.max_outbound_frame_size
        sent = 0
        while sent < total and window > 0:
            size = min(total - sent, window, frame_size)
            last = sent + size == total
            self._call(conn.send_data, stream_id, data[sent : sent + size], end_stream=end and last)
            sent += size
            window -= size
        return sent

    def acknowledge(self, stream_id: int, size: int) -> None:
        """``size`` body bytes of ``stream_id`` were consumed: give them back to the windows."""
        if size:
            self._call(self._conn.acknowledge_received_data, size, stream_id)

    def reset(self, stream_id: int, error_code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """Abort the stream with RST_STREAM, unless it is closed already."""
        if stream_id in self._open or self._stream_open(stream_id):
            self._reset(stream_id, error_code)

    def stream_finished(self, stream_id: int) -> None:
        """The caller is done with the stream: a request still sending its body is told to
        stop (RFC 9113 §8.1, RST_STREAM ``NO_ERROR`` after a complete response)."""
        self._open.discard(stream_id)
        if self._stream_open(stream_id):
            self._reset(stream_id, ErrorCodes.NO_ERROR)

    def _stream_open(self, stream_id: int) -> bool:
        stream = self._conn.streams.get(stream_id)
        return stream is not None and not stream.closed

    def _reset(self, stream_id: int, error_code: int) -> None:
        self._open.discard(stream_id)
        try:
            self._conn.reset_stream(stream_id, error_code)
        except _H2_ERRORS:
            return
        self._flush()

    # Output, connection-wide.

    def begin_goaway(self) -> None:
        """First step of a graceful shutdown: GOAWAY naming the highest stream id, and a PING
        whose answer shows that requests sent before it were all seen (RFC 9113 §6.8)."""
        if self._goaway_stream_id is None:
            self._goaway(ErrorCodes.NO_ERROR, MAX_STREAM_ID)
            self._out += PingFrame(0, opaque_data=GOAWAY_PING).serialize()

    def finish_goaway(self, error_code: int = ErrorCodes.NO_ERROR) -> None:
        """Final GOAWAY: no stream above the highest one seen will be served."""
        if not self._final_goaway or error_code != ErrorCodes.NO_ERROR:
            self._final_goaway = True
            self._goaway(error_code, self._conn.highest_inbound_stream_id)

    def _goaway(self, error_code: int, last_stream_id: int) -> None:
        self._goaway_stream_id = min(last_stream_id, self._goaway_stream_id or MAX_STREAM_ID)
        self._out += GoAwayFrame(
            0, last_stream_id=self._goaway_stream_id, error_code=error_code
        ).serialize()

    @property
    def goaway_sent(self) -> bool:
        """A GOAWAY was queued: no new stream will be served (or soon none)."""
        return self._goaway_stream_id is not None

    @property
    def goaway_final(self) -> bool:
        """The last GOAWAY was queued: once the streams below it end, the connection closes."""
        return self._final_goaway

    @property
    def open_streams(self) -> int:
        """Requests handed out and not yet finished or reset."""
        return len(self._open)

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        self._flush()
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def pending_output_size(self) -> int:
        """Bytes queued and not yet taken by :meth:`data_to_send`."""
        self._flush()
        return len(self._out)

    def _call(self, method, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        try:
            method(*args, **kwargs)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise StreamClosed(str(exc) or type(exc).__name__) from None

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._out += data


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The app's headers minus those HTTP/2 forbids (RFC 9113 §8.2.2)."""
    return [
        field
        for field in headers
        if field[0] not in _CONNECTION_FIELDS and (field[0] != b"te" or field[1] == b"trailers")
    ]


class _Connection(h2.connection.H2Connection):
    """h2's connection without its count of open streams on every new stream.

    h2 counts (walking every stream it holds) only to enforce its own
    SETTINGS_MAX_CONCURRENT_STREAMS, which is left unset here (``_request``
    enforces Palfrey's), and forgets closed streams during that walk. The walk
    is done once the streams held have doubled since the last one instead, so
    closed streams are still forgotten and their number stays bounded, at a
    constant cost per stream. Between walks it reports no stream open, which
    h2 only compares with that unset limit.
    """

    _prune_at = _PRUNE_FLOOR

    @property
    def open_inbound_streams(self) -> int:
        if len(self.streams) < self._prune_at:
            return 0
        count = self._open_streams(int(not self.config.client_side))
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(self.streams))
        return count


class VersionedTable(HeaderTable):
    """hpack's dynamic table, counting its changes in :attr:`version`.

    A header block is coded from the header list and the table alone, so one
    coded while the count stood still (it added nothing to the table) codes
    the same way again for as long as the count stands: see
    :class:`ReusingEncoder` and :class:`ReusingDecoder`.
    """

    version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, value)  # type: ignore[attr-defined]


#: Header blocks (or lists) each codec keeps for reuse, all coded against its current table.
MAX_REUSED_BLOCKS = 32
#: Larger header blocks are coded every time: they are rarely repeated whole, and this
#: bounds what is kept (a block of n bytes holds at most n fields).
MAX_REUSED_BLOCK_SIZE = 256


class ReusingEncoder(hpack.Encoder):
    """hpack's encoder, handing back the block it coded before for a response head it saw.

    Responses repeat their heads (same status, same fields), and once those
    fields are in the dynamic table their block is a few indices that cost
    hpack a table search, tuples and log calls per field. A block is kept
    only if coding it changed nothing in the table, and all are dropped once
    the table changes, so a kept block is exactly what coding again would
    give. Only plain 2-tuples are reused: a :class:`hpack.HeaderTuple` (such
    as a never-indexed field) compares equal to one but codes differently.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table: VersionedTable = VersionedTable()
        self._blocks: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
        self._version = 0

    def encode(self, headers, huffman: bool = True) -> bytes:  # type: ignore[no-untyped-def, override]
        table = self.header_table
        fields = tuple(headers)
        if not huffman or table.resized or not all(type(field) is tuple for field in fields):
            return super().encode(fields, huffman)
        blocks = self._blocks
        if table.version != self._version:
            blocks.clear()
            self._version = table.version
        block = blocks.get(fields)
        if block is None:
            block = super().encode(fields)
            if (
                table.version == self._version
                and len(block) <= MAX_REUSED_BLOCK_SIZE
                and len(blocks) < MAX_REUSED_BLOCKS
            ):
                blocks[fields] = block
        return block


class ReusingDecoder(hpack.Decoder):
    """hpack's decoder, handing back the header list it decoded before for a block it saw.

    A client repeating a request (same path, same fields) sends the same few
    indices each time once its fields are in the dynamic table. A list is
    kept only if decoding its block changed nothing in the table, and all are
    dropped once the table or a limit (header list size, table size)
    changes, so a kept list is exactly what decoding again would give, and
    holds only fields the table holds anyway.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table: VersionedTable = VersionedTable()
        self._lists: dict[bytes, list[hpack.HeaderTuple]] = {}
        self._state = (0, 0, 0, False)

    def decode(self, data: bytes, raw: bool = False) -> list[hpack.HeaderTuple]:  # type: ignore[override]
        table = self.header_table
        lists = self._lists
        state = (table.version, self.max_header_list_size, self.max_allowed_table_size, raw)
        if state != self._state:
            lists.clear()
            self._state = state
        headers = lists.get(data)
        if headers is not None:
            return list(headers)  # a copy: the caller may change its list
        headers = list(super().decode(data, raw))
        if (
            table.version == state[0]
            and len(data) <= MAX_REUSED_BLOCK_SIZE
            and len(lists) < MAX_REUSED_BLOCKS
        ):
            lists[bytes(data)] = list(headers)
        return headers


#: Frames the peer may send at will that cost work and carry nothing for a stream:
#: counted against the connection's flood budget (CVE-2019-9512, -9513, -9518), as
#: are empty DATA frames and tiny WINDOW_UPDATEs (in their own branches).
_COSTLY_EMPTY_EVENTS = frozenset(
    (h2.events.PingReceived, h2.events.RemoteSettingsChanged, h2.events.PriorityUpdated)
)
#: A WINDOW_UPDATE below this opens too little to be how a real client manages its
#: windows (they grant tens of KiB at a time); a stream of them is a flood.
TINY_WINDOW_INCREMENT = 1024
