"""A small HTTP/2 client over a trio stream, for the HTTP/2 integration tests.

One task does everything: :meth:`H2Client.run_until` sends what is queued
(request bodies as the server's windows allow), reads, and updates the
per-stream results, so tests never race two readers. Every wait is bounded
(:data:`WAIT` by default).

Two modes:

- tracked (default): the ``h2`` library keeps the client's state, so requests,
  bodies and flow control are correct by construction;
- ``raw=True``: nothing is validated. Frames are built with ``hyperframe`` and
  ``hpack`` (HEADERS without END_HEADERS, RST_STREAM floods, data on closed
  streams...), and the server's frames are decoded here. SETTINGS and PING are
  acknowledged only while ``answer_control`` is set.

Both record every frame the server sent (:attr:`H2Client.frames`) and every
GOAWAY (:attr:`H2Client.goaways`); the GOAWAY is kept away from ``h2``, which
would refuse the frames after it (python-hyper/h2#1199) although the streams
below it are still being answered.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hpack
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

ErrorCodes = h2.errors.ErrorCodes
SettingCodes = h2.settings.SettingCodes

#: Upper bound for any single network wait in these tests.
WAIT = 5.0
#: How often :meth:`H2Client.run_until` looks at its predicate while nothing arrives.
POLL = 0.05
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@attrs.define
class StreamResult:
    """What the server sent on one stream."""

    stream_id: int
    headers: list[tuple[bytes, bytes]] | None = None
    informational: list[list[tuple[bytes, bytes]]] = attrs.Factory(list)
    trailers: list[tuple[bytes, bytes]] | None = None
    body: bytearray = attrs.Factory(bytearray)
    ended: bool = False
    #: The error code of the server's RST_STREAM, if it reset the stream.
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers or []).get(name)


def get_headers(
    path: str = "/",
    *,
    method: str = "GET",
    scheme: str = "http",
    authority: str = "example.com",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method.encode()),
        (b":scheme", scheme.encode()),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        *(extra or []),
    ]


class H2Client:
    """One HTTP/2 connection; see the module docstring."""

    def __init__(
        self,
        sock: trio.abc.Stream,
        *,
        raw: bool = False,
        settings: dict[int, int] | None = None,
        window: str = "ack",
    ) -> None:
        """``window``: how received DATA is handed back to the server: ``"ack"`` (h2's
        acknowledgement, batched), ``"exact"`` (a WINDOW_UPDATE per DATA frame, for
        stream and connection) or ``"none"`` (the windows stay shut)."""
        self.sock = sock
        self.raw = raw
        self.window = window
        self.settings = dict(settings or {})
        self.answer_control = True
        self.streams: dict[int, StreamResult] = {}
        #: Stream ids in the order their response ended (or was reset).
        self.finished: list[int] = []
        self.frames: list[Frame] = []
        self.goaways: list[GoAwayFrame] = []
        self.closed = False
        self.server_settings: dict[int, int] = {}
        self.settings_acked = False
        self._buffer = bytearray()
        self._out = bytearray()
        self._uploads: dict[int, tuple[memoryview, bool]] = {}
        self._next_stream_id = 1
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = 2**31
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )

    # Starting.

    async def start(self, *, preface: bytes = PREFACE) -> None:
        """Send the connection preface and the client's SETTINGS."""
        if self.raw:
            frame = SettingsFrame(0)
            frame.settings.update(self.settings)
            await self.send_raw(preface + frame.serialize())
            return
        if self.settings:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values=self.settings
            )
        self.conn.initiate_connection()
        await self.flush()

    # Sending.

    async def send_raw(self, data: bytes) -> None:
        try:
            with trio.fail_after(WAIT):
                await self.sock.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True

    async def flush(self) -> None:
        if not self.raw:
            self._out += self.conn.data_to_send()
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            await self.send_raw(data)

    def request(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        end: bool = True,
    ) -> int:
        """Queue a request; ``body`` goes as the windows allow while :meth:`run_until` runs.
        With ``end=False`` the stream stays open after the body."""
        stream_id = self.next_stream_id()
        self.streams[stream_id] = StreamResult(stream_id)
        if self.raw:
            self.queue_frame(self.headers_frame(stream_id, headers, end=end and not body))
            if body:
                self.queue_frame(self.data_frame(stream_id, body, end=end))
            return stream_id
        self.conn.send_headers(stream_id, headers, end_stream=end and not body)
        if body:
            self._uploads[stream_id] = (memoryview(body), end)
        return stream_id

    def next_stream_id(self) -> int:
        if self.raw:
            stream_id = self._next_stream_id
            self._next_stream_id += 2
            return stream_id
        return self.conn.get_next_available_stream_id()

    def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        """Queue more body for an open stream (tracked mode)."""
        self._uploads[stream_id] = (memoryview(body), end)

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> None:
        if self.raw:
            self.queue_frame(RstStreamFrame(stream_id, error_code=error_code))
        else:
            self._uploads.pop(stream_id, None)
            self.conn.reset_stream(stream_id, error_code)

    def queue_frame(self, frame: Frame) -> None:
        self._out += frame.serialize()

    def headers_frame(
        self,
        stream_id: int,
        headers: list[tuple[bytes, bytes]],
        *,
        end: bool = True,
        end_headers: bool = True,
    ) -> HeadersFrame:
        flags = set()
        if end:
            flags.add("END_STREAM")
        if end_headers:
            flags.add("END_HEADERS")
        return HeadersFrame(stream_id, self._encoder.encode(headers), flags=flags)

    @staticmethod
    def data_frame(stream_id: int, data: bytes, *, end: bool = True) -> DataFrame:
        return DataFrame(stream_id, data, flags={"END_STREAM"} if end else set())

    def _push_uploads(self) -> None:
        conn = self.conn
        for stream_id, (pending, end) in list(self._uploads.items()):
            data = pending
            try:
                window = conn.local_flow_control_window(stream_id)
            except h2.exceptions.StreamClosedError:
                del self._uploads[stream_id]
                continue
            while data and window > 0:
                size = min(len(data), window, conn.max_outbound_frame_size)
                last = size == len(data)
                conn.send_data(stream_id, data[:size].tobytes(), end_stream=end and last)
                data = data[size:]
                window -= size
            if data:
                self._uploads[stream_id] = (data, end)
            else:
                del self._uploads[stream_id]
                if end and not self._last_sent(stream_id):
                    conn.end_stream(stream_id)

    def _last_sent(self, stream_id: int) -> bool:
        stream = self.conn.streams.get(stream_id)
        return stream is None or stream.state_machine.state in (
            h2.stream.StreamState.HALF_CLOSED_LOCAL,
            h2.stream.StreamState.CLOSED,
        )

    # Receiving.

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes read from the socket by someone else (after an HTTP/1.1 ``101``)."""
        self._buffer += data

    async def receive(self) -> None:
        """Send what is queued, then read once and handle what arrived."""
        if not self.raw:
            self._push_uploads()
        await self.flush()
        count = len(self.frames)
        self._parse()
        if len(self.frames) > count:
            await self.flush()
            return
        if self.closed:
            raise EOFError("the connection is closed")
        data = None
        # Bounded, so that a predicate on the app's side is looked at again soon; a cancelled
        # receive_some loses nothing.
        with trio.move_on_after(POLL):
            try:
                data = await self.sock.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
        if data is None:
            return
        if not data:
            self.closed = True
            return
        self._buffer += data
        self._parse()
        await self.flush()

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            chunk = bytes(self._buffer[: 9 + length])
            del self._buffer[: 9 + length]
            frame, _ = Frame.parse_frame_header(memoryview(chunk[:9]))
            frame.parse_body(memoryview(chunk[9:]))
            self.frames.append(frame)
            if isinstance(frame, GoAwayFrame):
                self.goaways.append(frame)
            elif self.raw:
                self._raw_frame(frame)
            else:
                for event in self.conn.receive_data(chunk):
                    self._event(event)

    async def run_until(
        self, predicate: Callable[[], object], timeout: float = WAIT, *, eof_ok: bool = True
    ) -> None:
        """Serve the connection until ``predicate()`` holds (or the server closes, if
        ``eof_ok``; an error otherwise), at most ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not predicate():
                if self.closed:
                    if eof_ok:
                        return
                    raise EOFError("the server closed the connection")
                await self.receive()

    async def response(self, stream_id: int, timeout: float = WAIT) -> StreamResult:
        """Wait for the stream to end or be reset (or the connection to close)."""
        result = self.streams[stream_id]
        await self.run_until(lambda: result.done, timeout)
        return result

    async def get(self, path: str = "/", timeout: float = WAIT, **kwargs: Any) -> StreamResult:
        return await self.response(self.request(get_headers(path, **kwargs)), timeout)

    async def until_closed(self, timeout: float = WAIT) -> None:
        """Read until the server closes the connection."""
        await self.run_until(lambda: False, timeout)

    def goaway_codes(self) -> list[int]:
        return [frame.error_code for frame in self.goaways]

    def _finish(self, stream_id: int) -> None:
        if stream_id not in self.finished:
            self.finished.append(stream_id)

    def _stream(self, stream_id: int) -> StreamResult:
        if stream_id not in self.streams:
            self.streams[stream_id] = StreamResult(stream_id)
        return self.streams[stream_id]

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._stream(event.stream_id).headers = list(event.headers)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            self._stream(event.stream_id).informational.append(list(event.headers))
        elif isinstance(event, h2.events.TrailersReceived):
            self._stream(event.stream_id).trailers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._stream(event.stream_id).body += event.data
            self._hand_back(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            self._stream(event.stream_id).ended = True
            self._finish(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._stream(event.stream_id).reset = int(event.error_code)
            self._uploads.pop(event.stream_id, None)
            self._finish(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.server_settings[int(code)] = change.new_value
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acked = True

    def _hand_back(self, stream_id: int, size: int) -> None:
        if not size or self.window == "none":
            return
        if self.raw:
            self.queue_frame(WindowUpdateFrame(0, window_increment=size))
            if not self.streams[stream_id].done:
                self.queue_frame(WindowUpdateFrame(stream_id, window_increment=size))
        elif self.window == "ack":
            self.conn.acknowledge_received_data(size, stream_id)
        else:
            self.conn.increment_flow_control_window(size)
            stream = self.conn.streams.get(stream_id)
            if stream is not None and stream.open:
                self.conn.increment_flow_control_window(size, stream_id)

    def _raw_frame(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acked = True
            else:
                self.server_settings.update(frame.settings)
                if self.answer_control:
                    self.queue_frame(SettingsFrame(0, flags={"ACK"}))
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags and self.answer_control:
                self.queue_frame(PingFrame(0, opaque_data=frame.opaque_data, flags={"ACK"}))
        elif isinstance(frame, HeadersFrame):
            assert "END_HEADERS" in frame.flags, "the server sent CONTINUATION"
            result = self._stream(frame.stream_id)
            fields = [(bytes(n), bytes(v)) for n, v in self._decoder.decode(frame.data, raw=True)]
            if result.headers is None:
                status = int(dict(fields)[b":status"])
                if status < 200:
                    result.informational.append(fields)
                else:
                    result.headers = fields
            else:
                result.trailers = fields
            if "END_STREAM" in frame.flags:
                result.ended = True
                self._finish(frame.stream_id)
        elif isinstance(frame, DataFrame):
            result = self._stream(frame.stream_id)
            result.body += frame.data
            if "END_STREAM" in frame.flags:
                result.ended = True
                self._finish(frame.stream_id)
            self._hand_back(frame.stream_id, frame.flow_controlled_length)
        elif isinstance(frame, RstStreamFrame):
            self._stream(frame.stream_id).reset = frame.error_code
            self._finish(frame.stream_id)


@asynccontextmanager
async def h2_connect(
    server: Any,
    *,
    tls: ssl.SSLContext | None = None,
    raw: bool = False,
    settings: dict[int, int] | None = None,
    window: str = "ack",
    start: bool = True,
) -> AsyncIterator[H2Client]:
    """An HTTP/2 connection to ``server`` (h2c prior knowledge, or TLS with ALPN h2)."""
    with trio.fail_after(WAIT):
        sock: trio.abc.Stream = await trio.open_tcp_stream(server.host, server.port)
        if tls is not None:
            sock = trio.SSLStream(sock, tls, server_hostname="localhost")
            await sock.do_handshake()
            assert sock.selected_alpn_protocol() == "h2"
    client = H2Client(sock, raw=raw, settings=settings, window=window)
    try:
        if start:
            await client.start()
        yield client
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await sock.aclose()


def continuation_frame(stream_id: int, data: bytes, *, end_headers: bool = False) -> bytes:
    return ContinuationFrame(
        stream_id, data, flags={"END_HEADERS"} if end_headers else set()
    ).serialize()


def parse_frames(data: bytes) -> list[Frame]:
    """The whole frames in ``data`` (what a server sent, read by someone else)."""
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if len(data) < 9 + length:
            break
        frame, _ = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames
