"""H2Protocol without I/O: an h2 client's bytes in, Palfrey's stream events and frames out."""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from palfrey.protocols.events import (
    ConnectionTerminated,
    ControlReceived,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from palfrey.protocols.h2 import (
    GOAWAY_PING,
    MAX_REUSED_BLOCKS,
    MAX_STREAM_ID,
    H2ConnectionError,
    H2Protocol,
    ReusingDecoder,
    ReusingEncoder,
    StreamClosed,
)

ErrorCodes = h2.errors.ErrorCodes
SettingCodes = h2.settings.SettingCodes

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/path?q=1"),
]


def parse_frames(data: bytes) -> list[Frame]:
    """Split what the server queued into frames."""
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


class Pair:
    """A server-side H2Protocol and an h2 client, with the bytes between them pumped by hand."""

    def __init__(self, client_settings: dict[int, int] | None = None, **options: Any) -> None:
        self.server = H2Protocol(**options)
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        if client_settings:
            self.client.local_settings = h2.settings.Settings(
                client=True, initial_values=client_settings
            )
        self.server.initiate()
        self.client.initiate_connection()

    def to_server(self) -> list[Any]:
        """Deliver everything the client queued; the server's events."""
        return self.server.receive_data(self.client.data_to_send())

    def server_output(self) -> bytes:
        return self.server.data_to_send()

    def to_client(self) -> list[h2.events.Event]:
        """Deliver everything the server queued; the client's h2 events."""
        return self.client.receive_data(self.server.data_to_send())

    def handshake(self) -> None:
        """Exchange prefaces and SETTINGS (and their ACKs) both ways."""
        assert set(map(type, self.to_server())) <= {WindowUpdated, ControlReceived}
        self.to_client()
        assert self.to_server() == []

    def request(
        self, fields: list[tuple[bytes, bytes]] = REQUEST, end: bool = True, stream_id: int = 0
    ) -> int:
        stream_id = stream_id or self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, fields, end_stream=end)
        return stream_id


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


# Requests.


def test_request_received_without_pseudo_headers() -> None:
    pair = Pair()
    pair.handshake()
    fields = [*REQUEST, (b"user-agent", b"test"), (b"accept", b"*/*")]
    stream_id = pair.request(fields)
    events = pair.to_server()
    assert events == [
        RequestReceived(
            method=b"GET",
            target=b"/path?q=1",
            headers=((b"host", b"example.com"), (b"user-agent", b"test"), (b"accept", b"*/*")),
            http_version="2",
            stream_id=stream_id,
            scheme=b"https",
            authority=b"example.com",
            protocol=None,
        ),
        StreamEnded(stream_id),
    ]


def test_authority_replaces_host_header_and_comes_first() -> None:
    pair = Pair()
    pair.handshake()
    pair.request([*REQUEST, (b"accept", b"*/*"), (b"host", b"example.com"), (b"x-a", b"1")])
    (request,) = of_type(pair.to_server(), RequestReceived)
    assert request.headers == ((b"host", b"example.com"), (b"accept", b"*/*"), (b"x-a", b"1"))


def test_host_header_without_authority() -> None:
    pair = Pair()
    pair.handshake()
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
    pair.request([*fields, (b"accept", b"*/*"), (b"host", b"example.org")])
    (request,) = of_type(pair.to_server(), RequestReceived)
    assert request.authority is None
    assert request.scheme == b"http"
    assert request.headers == ((b"accept", b"*/*"), (b"host", b"example.org"))


def test_cookie_crumbs_are_joined() -> None:
    pair = Pair()
    pair.handshake()
    pair.request([*REQUEST, (b"cookie", b"a=1"), (b"x-b", b"2"), (b"cookie", b"c=3")])
    (request,) = of_type(pair.to_server(), RequestReceived)
    assert request.headers == (
        (b"host", b"example.com"),
        (b"x-b", b"2"),
        (b"cookie", b"a=1; c=3"),
    )


@pytest.mark.parametrize(
    "fields",
    [
        [*REQUEST, (b"X-Upper", b"1")],
        [*REQUEST, (b"connection", b"keep-alive")],
        [*REQUEST, (b"te", b"gzip")],
        [*REQUEST, (b":unknown", b"1")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com")],
        [*REQUEST, (b"host", b"other.example")],
        [*REQUEST, (b"x-a", b" padded")],
    ],
    ids=["uppercase", "connection", "te", "unknown-pseudo", "no-path", "host-differs", "space"],
)
def test_malformed_request_resets_only_its_stream(fields: list[tuple[bytes, bytes]]) -> None:
    pair = Pair()
    pair.handshake()
    bad = pair.request(fields)
    assert of_type(pair.to_server(), RequestReceived) == []
    (reset,) = [f for f in parse_frames(pair.server_output()) if isinstance(f, RstStreamFrame)]
    assert (reset.stream_id, reset.error_code) == (bad, ErrorCodes.PROTOCOL_ERROR)
    good = pair.request()
    assert of_type(pair.to_server(), RequestReceived)[0].stream_id == good


# Request bodies and flow control.


def test_body_arrives_as_stream_data_then_stream_ended() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.client.send_data(stream_id, b"hello ")
    pair.client.send_data(stream_id, b"world", end_stream=True)
    events = pair.to_server()
    assert events[1:] == [
        StreamData(stream_id, b"hello "),
        StreamData(stream_id, b"world"),
        StreamEnded(stream_id),
    ]


def window_updates(pair: Pair) -> dict[int, int]:
    """The WINDOW_UPDATE increments the server sent, per stream id (0: the connection)."""
    updates: dict[int, int] = {}
    for frame in parse_frames(pair.server_output()):
        if isinstance(frame, WindowUpdateFrame):
            updates[frame.stream_id] = updates.get(frame.stream_id, 0) + frame.window_increment
    return updates


def test_body_window_reopens_only_on_acknowledge() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    body = b"x" * 40000  # over half the 65535-byte stream window
    for start in range(0, len(body), 10000):
        pair.client.send_data(stream_id, body[start : start + 10000])
    events = pair.to_server()
    assert b"".join(e.data for e in of_type(events, StreamData)) == body
    assert window_updates(pair) == {}
    pair.server.acknowledge(stream_id, len(body))
    assert window_updates(pair) == {stream_id: len(body)}


def test_padding_is_acknowledged_at_once() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    # 128 frames of 1 byte with 255 bytes of padding (and a Pad Length byte): 32768 bytes
    # of padding, just over half the stream window, where h2 sends a WINDOW_UPDATE.
    for _ in range(128):
        pair.client.send_data(stream_id, b"a", pad_length=255)
    events = pair.to_server()
    assert b"".join(e.data for e in of_type(events, StreamData)) == b"a" * 128
    assert window_updates(pair) == {stream_id: 128 * 256}
    pair.server.acknowledge(stream_id, 128)
    assert window_updates(pair) == {}  # 128 bytes is below h2's threshold for an update


def test_empty_padded_frames_yield_no_stream_data() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.client.send_data(stream_id, b"", pad_length=10, end_stream=True)
    assert pair.to_server()[1:] == [StreamEnded(stream_id)]


def test_data_after_stream_finished_is_acknowledged_and_stopped() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.to_server()
    pair.server.send_headers(stream_id, 200, [], end=True)
    pair.server.stream_finished(stream_id)
    resets = [f for f in parse_frames(pair.server_output()) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(stream_id, ErrorCodes.NO_ERROR)]
    assert pair.server.open_streams == 0


# Responses.


def test_send_data_cut_to_a_one_byte_window() -> None:
    pair = Pair(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 1})
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.server.send_headers(stream_id, 200, [], end=False)
    assert pair.server.window(stream_id) == 1
    received = b""
    ended = False
    for _ in range(5):
        assert pair.server.send_data(stream_id, b"hello"[len(received) :], end=True) == 1
        assert pair.server.send_data(stream_id, b"ignored", end=True) == 0
        for event in pair.to_client():
            if isinstance(event, h2.events.DataReceived):
                received += event.data
                pair.client.acknowledge_received_data(event.flow_controlled_length, stream_id)
            ended = ended or isinstance(event, h2.events.StreamEnded)
        assert ended == (received == b"hello")
        if not ended:
            assert WindowUpdated(stream_id) in pair.to_server()
    assert received == b"hello"


def test_send_data_cut_to_max_frame_size() -> None:
    pair = Pair(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    pair.client.increment_flow_control_window(1 << 20)
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.server.send_headers(stream_id, 200, [], end=False)
    body = bytes(range(256)) * 400  # 102400 bytes
    assert pair.server.send_data(stream_id, body, end=True) == len(body)
    data = [f for f in parse_frames(pair.server_output()) if isinstance(f, DataFrame)]
    assert [len(f.data) for f in data] == [16384] * 6 + [len(body) - 6 * 16384]
    assert b"".join(f.data for f in data) == body
    assert ["END_STREAM" in f.flags for f in data] == [False] * 6 + [True]


def test_send_data_cut_to_connection_window() -> None:
    pair = Pair(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.server.send_headers(stream_id, 200, [], end=False)
    assert pair.server.send_data(stream_id, b"x" * 100000, end=True) == 65535
    data = [f for f in parse_frames(pair.server_output()) if isinstance(f, DataFrame)]
    assert not any("END_STREAM" in f.flags for f in data)


def test_response_drops_connection_specific_fields() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.server.send_headers(
        stream_id,
        200,
        [
            (b"connection", b"close"),
            (b"x-before", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-connection", b"keep-alive"),
            (b"upgrade", b"websocket"),
            (b"te", b"gzip"),
            (b"te", b"trailers"),
            (b"x-after", b"2"),
        ],
        end=True,
    )
    (response,) = of_type(pair.to_client(), h2.events.ResponseReceived)
    assert response.headers == [
        (b":status", b"200"),
        (b"x-before", b"1"),
        (b"te", b"trailers"),
        (b"x-after", b"2"),
    ]


def test_informational_then_response_then_trailers() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.server.send_informational(stream_id, 103, [(b"link", b"</a.css>; rel=preload")])
    pair.server.send_headers(stream_id, 200, [(b"trailer", b"x-checksum")], end=False)
    pair.server.send_data(stream_id, b"body", end=False)
    pair.server.send_trailers(stream_id, [(b"x-checksum", b"abc"), (b"connection", b"close")])
    events = pair.to_client()
    kinds = [type(e) for e in events]
    assert kinds == [
        h2.events.InformationalResponseReceived,
        h2.events.ResponseReceived,
        h2.events.DataReceived,
        h2.events.TrailersReceived,
        h2.events.StreamEnded,
    ]
    assert events[0].headers == [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")]
    assert events[3].headers == [(b"x-checksum", b"abc")]


# Requests the protocol turns away itself.


def rejected_status(pair: Pair, stream_id: int) -> bytes:
    events = pair.to_client()
    (response,) = of_type(events, h2.events.ResponseReceived)
    assert response.stream_id == stream_id
    assert of_type(events, h2.events.StreamEnded)[0].stream_id == stream_id
    return dict(response.headers)[b":status"]


def test_plain_connect_answered_501() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request([(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
    assert of_type(pair.to_server(), RequestReceived) == []
    assert rejected_status(pair, stream_id) == b"501"
    assert pair.server.open_streams == 0


def test_plain_connect_with_body_answered_501_and_reset() -> None:
    pair = Pair()
    pair.handshake()
    connect = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
    stream_id = pair.request(connect, end=False)
    pair.client.send_data(stream_id, b"tunnel bytes")
    events = pair.to_server()
    assert [e for e in events if not isinstance(e, ControlReceived)] == []
    frames = parse_frames(pair.server.data_to_send())
    assert [type(f) for f in frames] == [HeadersFrame, RstStreamFrame]
    assert frames[1].error_code == ErrorCodes.NO_ERROR


def extended_connect(protocol: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", protocol),
        (b":scheme", b"https"),
        (b":authority", b"example.com"),
        (b":path", b"/chat"),
        (b"sec-websocket-version", b"13"),
    ]


def test_extended_connect_websocket_is_a_request() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(extended_connect(b"websocket"), end=False)
    (request,) = of_type(pair.to_server(), RequestReceived)
    assert (request.stream_id, request.method, request.protocol) == (
        stream_id,
        b"CONNECT",
        b"websocket",
    )
    assert request.target == b"/chat"


def test_unknown_protocol_answered_501() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(extended_connect(b"webtransport"), end=False)
    assert of_type(pair.to_server(), RequestReceived) == []
    assert rejected_status(pair, stream_id) == b"501"


def test_extended_connect_disabled_answered_501() -> None:
    pair = Pair(connect_protocol=False)
    pair.handshake()
    stream_id = pair.request(extended_connect(b"websocket"), end=False)
    assert of_type(pair.to_server(), RequestReceived) == []
    assert rejected_status(pair, stream_id) == b"501"


def big_request(size: int) -> list[tuple[bytes, bytes]]:
    return [*REQUEST, (b"x-big", b"v" * size)]


@pytest.mark.parametrize("acknowledged", [False, True], ids=["before-ack", "after-ack"])
def test_header_list_over_limit_answered_431(acknowledged: bool) -> None:
    pair = Pair(max_header_list_size=1000)
    if acknowledged:
        pair.handshake()
    else:
        pair.to_server()
    stream_id = pair.request(big_request(1500))
    assert of_type(pair.to_server(), RequestReceived) == []
    assert rejected_status(pair, stream_id) == b"431"
    # The connection goes on.
    good = pair.request(big_request(100))
    assert of_type(pair.to_server(), RequestReceived)[0].stream_id == good


def test_header_list_over_limit_in_same_read_as_settings_ack() -> None:
    # A client commonly writes its SETTINGS ACK and its next request together: the
    # HEADERS right after the ACK must meet the same (soft) bound, not h2's advertised one.
    pair = Pair(max_header_list_size=1000)
    pair.to_server()
    pair.to_client()  # the client queues its SETTINGS ACK
    stream_id = pair.request(big_request(1500))
    assert of_type(pair.to_server(), RequestReceived) == []
    assert rejected_status(pair, stream_id) == b"431"


@pytest.mark.parametrize("then", ["reset", "reset-then-new-stream", "goaway"])
@pytest.mark.parametrize("status", [501, 431])
def test_rejected_request_then_reset_in_same_read(status: int, then: str) -> None:
    # h2 handles the whole read before H2Protocol translates its events: by the time the
    # RequestReceived is answered, the stream is closed (forgotten, once a newer stream was
    # opened), or the connection is; ``_reject``'s send_headers raises StreamClosedError,
    # StreamIDTooLowError or ProtocolError. On the wire: an ERROR traceback in the log
    # ("Unhandled error on an HTTP/2 connection") and the connection dropped without GOAWAY.
    pair = Pair(max_header_list_size=1000)
    pair.handshake()
    if status == 501:
        fields = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
    else:
        fields = big_request(1500)
    stream_id = pair.request(fields, end=False)
    if then == "goaway":
        pair.client.close_connection(ErrorCodes.NO_ERROR)
    else:
        pair.client.reset_stream(stream_id, ErrorCodes.CANCEL)
    if then == "reset-then-new-stream":
        good = pair.request()
    events = pair.to_server()
    assert [e.stream_id for e in of_type(events, RequestReceived)] == (
        [good] if then == "reset-then-new-stream" else []
    )


def test_header_list_far_over_limit_ends_connection() -> None:
    pair = Pair(max_header_list_size=1000)
    pair.handshake()
    pair.request(big_request(5000))
    with pytest.raises(H2ConnectionError):
        pair.to_server()
    goaway = parse_frames(pair.server_output())[-1]
    assert isinstance(goaway, GoAwayFrame)


def test_streams_over_limit_before_settings_ack_refused() -> None:
    pair = Pair(max_concurrent_streams=2)
    # The client has not seen the server's SETTINGS yet: nothing stops it opening three.
    streams = [pair.request(end=False) for _ in range(3)]
    events = pair.to_server()
    assert [e.stream_id for e in of_type(events, RequestReceived)] == streams[:2]
    resets = [f for f in parse_frames(pair.server_output()) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [
        (streams[2], ErrorCodes.REFUSED_STREAM)
    ]
    assert pair.server.open_streams == 2


def test_streams_not_finished_by_the_caller_count_against_the_limit() -> None:
    pair = Pair(max_concurrent_streams=1)
    pair.handshake()
    first = pair.request()
    pair.to_server()
    pair.server.send_headers(first, 204, [], end=True)  # closed for h2, not yet finished
    pair.to_client()
    second = pair.request()
    assert of_type(pair.to_server(), RequestReceived) == []
    (reset,) = parse_frames(pair.server_output())
    assert isinstance(reset, RstStreamFrame)
    assert (reset.stream_id, reset.error_code) == (second, ErrorCodes.REFUSED_STREAM)


def test_finished_streams_free_their_slot() -> None:
    pair = Pair(max_concurrent_streams=1)
    pair.to_server()
    first = pair.request()
    assert of_type(pair.to_server(), RequestReceived)[0].stream_id == first
    pair.server.send_headers(first, 204, [], end=True)
    pair.server.stream_finished(first)
    second = pair.request()
    assert of_type(pair.to_server(), RequestReceived)[0].stream_id == second


# Connection-level events and errors.


@pytest.mark.parametrize(
    "preface",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        b"INVALID CONNECTION PREFACE\r\n\r\n",
    ],
)
def test_invalid_preface_queues_goaway(preface: bytes) -> None:
    server = H2Protocol()
    server.initiate()
    server.data_to_send()
    with pytest.raises(H2ConnectionError) as info:
        server.receive_data(preface)
    assert info.value.error_code == ErrorCodes.PROTOCOL_ERROR
    (goaway,) = parse_frames(server.data_to_send())
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return struct.pack(">L", length)[1:] + bytes([kind, flags]) + struct.pack(">L", stream_id)


@pytest.mark.parametrize("limit", [16384, 65536])
def test_frame_over_max_frame_size_is_frame_size_error(limit: int) -> None:
    pair = Pair(max_inbound_frame_size=limit)
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.to_server()
    with pytest.raises(H2ConnectionError) as info:
        pair.server.receive_data(frame_header(limit + 1, 0x0, 0x0, stream_id) + b"x" * (limit + 1))
    assert info.value.error_code == ErrorCodes.FRAME_SIZE_ERROR
    goaway = parse_frames(pair.server_output())[-1]
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_frame_over_max_frame_size_refused_at_its_header() -> None:
    pair = Pair()
    pair.handshake()
    # Announces 16 MiB: refused before any of it is buffered.
    with pytest.raises(H2ConnectionError) as info:
        pair.server.receive_data(frame_header(2**24 - 1, 0x0, 0x0, 1))
    assert info.value.error_code == ErrorCodes.FRAME_SIZE_ERROR
    goaway = parse_frames(pair.server.data_to_send())[-1]
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_large_frame_in_the_same_read_as_the_settings_ack_is_accepted() -> None:
    # A raised --h2-max-inbound-frame-size applies from the client's ACK on, also to a
    # frame that arrives in the same read as that ACK.
    pair = Pair(max_inbound_frame_size=65536)
    pair.to_server()
    pair.to_client()  # the client takes the server's SETTINGS and queues its ACK
    stream_id = pair.request(end=False)
    pair.client.send_data(stream_id, b"x" * 20000, end_stream=True)
    events = pair.to_server()
    assert sum(len(event.data) for event in of_type(events, StreamData)) == 20000


def test_server_preface_is_settings_then_connection_window() -> None:
    server = H2Protocol(
        max_concurrent_streams=7, max_header_list_size=5000, connection_window=1 << 20
    )
    server.initiate()
    settings, streams, window = parse_frames(server.data_to_send())
    assert isinstance(settings, SettingsFrame)
    # The stream limit has a SETTINGS frame of its own, so that h2 does not enforce it.
    assert SettingCodes.MAX_CONCURRENT_STREAMS not in settings.settings
    assert isinstance(streams, SettingsFrame)
    assert streams.settings == {SettingCodes.MAX_CONCURRENT_STREAMS: 7}
    assert settings.settings[SettingCodes.MAX_HEADER_LIST_SIZE] == 5000
    assert settings.settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert isinstance(window, WindowUpdateFrame)
    assert (window.stream_id, window.window_increment) == (0, (1 << 20) - 65535)


def test_two_step_goaway() -> None:
    pair = Pair()
    pair.handshake()
    first = pair.request(end=False)
    pair.to_server()
    pair.server.begin_goaway()
    assert pair.server.goaway_sent and not pair.server.goaway_final
    goaway, ping = parse_frames(pair.server_output())
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.last_stream_id, goaway.error_code) == (MAX_STREAM_ID, ErrorCodes.NO_ERROR)
    assert isinstance(ping, PingFrame)
    assert ping.opaque_data == GOAWAY_PING and "ACK" not in ping.flags
    pair.server.begin_goaway()  # a second call changes nothing
    assert pair.server_output() == b""

    # A request already in flight when the client read the GOAWAY is still served.
    in_flight = pair.request()
    assert of_type(pair.to_server(), RequestReceived)[0].stream_id == in_flight

    # The PING's answer: every request sent before it has been seen.
    ack = PingFrame(0, flags=["ACK"], opaque_data=GOAWAY_PING).serialize()
    assert pair.server.receive_data(ack) == []
    assert pair.server.goaway_final
    (final,) = parse_frames(pair.server_output())
    assert isinstance(final, GoAwayFrame)
    assert (final.last_stream_id, final.error_code) == (in_flight, ErrorCodes.NO_ERROR)

    late = pair.request()
    assert of_type(pair.to_server(), RequestReceived) == []
    (reset,) = parse_frames(pair.server_output())
    assert isinstance(reset, RstStreamFrame)
    assert (reset.stream_id, reset.error_code) == (late, ErrorCodes.REFUSED_STREAM)

    # Streams below the final GOAWAY still get their responses.
    pair.client.send_data(first, b"body", end_stream=True)
    assert pair.to_server() == [StreamData(first, b"body"), StreamEnded(first)]
    pair.server.send_headers(first, 200, [], end=True)
    assert of_type(pair.to_client(), h2.events.ResponseReceived)[0].stream_id == first


def test_unrelated_ping_ack_does_not_finish_goaway() -> None:
    pair = Pair()
    pair.handshake()
    pair.server.begin_goaway()
    pair.server_output()
    pair.server.receive_data(PingFrame(0, flags=["ACK"], opaque_data=b"other!!!").serialize())
    assert not pair.server.goaway_final
    assert pair.server_output() == b""


def test_finish_goaway_with_error_code() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.server.finish_goaway(ErrorCodes.INTERNAL_ERROR)
    (goaway,) = parse_frames(pair.server_output())
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.last_stream_id, goaway.error_code) == (stream_id, ErrorCodes.INTERNAL_ERROR)


def test_client_reset_is_stream_reset_remote() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.to_server()
    pair.client.reset_stream(stream_id, ErrorCodes.CANCEL)
    assert pair.to_server() == [StreamReset(stream_id, ErrorCodes.CANCEL, True)]
    assert pair.server.open_streams == 0
    # The app's side learns of it when it next tries to send.
    with pytest.raises(StreamClosed):
        pair.server.send_headers(stream_id, 200, [], end=True)
    with pytest.raises(StreamClosed):
        pair.server.send_data(stream_id, b"late", end=True)


def test_server_reset() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.to_server()
    pair.server.reset(stream_id)
    pair.server.reset(stream_id)  # already closed: nothing more
    (reset,) = parse_frames(pair.server_output())
    assert isinstance(reset, RstStreamFrame)
    assert (reset.stream_id, reset.error_code) == (stream_id, ErrorCodes.INTERNAL_ERROR)


def test_client_goaway_is_connection_terminated() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=0)
    assert pair.to_server() == [ConnectionTerminated(ErrorCodes.ENHANCE_YOUR_CALM, 0)]


def test_ping_and_settings_are_control_frames() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.ping(b"12345678")
    assert pair.to_server() == [ControlReceived()]
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    assert pair.to_server() == [WindowUpdated(0), ControlReceived()]
    events = pair.to_client()
    assert any(isinstance(e, h2.events.PingAckReceived) for e in events)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)


def test_window_update_event() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request()
    pair.to_server()
    pair.client.increment_flow_control_window(65536, stream_id)
    pair.client.increment_flow_control_window(65536)
    assert pair.to_server() == [WindowUpdated(stream_id), WindowUpdated(0)]


def test_frames_that_carry_nothing_are_reported_for_the_flood_budget() -> None:
    pair = Pair()
    pair.handshake()
    stream_id = pair.request(end=False)
    pair.to_server()
    pair.client.increment_flow_control_window(1, stream_id)
    pair.client.send_data(stream_id, b"")
    pair.client.prioritize(stream_id, weight=32)
    events = pair.to_server()
    assert events.count(ControlReceived()) == 3, events


# h2c upgrade.


def test_h2c_upgrade() -> None:
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.local_settings = h2.settings.Settings(
        client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 3}
    )
    settings_header = client.initiate_upgrade_connection()
    server = H2Protocol()
    server.initiate_upgrade(settings_header)
    # Stream 1 is the upgrading request; the client's settings already apply to it.
    assert server.open_streams == 1
    assert server.window(1) == 3
    assert RequestReceived not in map(type, server.receive_data(client.data_to_send()))
    server.send_headers(1, 200, [(b"content-type", b"text/plain")], end=False)
    assert server.send_data(1, b"hello", end=True) == 3
    events = client.receive_data(server.data_to_send())
    (response,) = of_type(events, h2.events.ResponseReceived)
    assert response.stream_id == 1
    assert b"".join(e.data for e in of_type(events, h2.events.DataReceived)) == b"hel"


@pytest.mark.parametrize("value", [b"!!!not base64!!!", b"AAMAAABk" + b"A"])
def test_h2c_upgrade_with_invalid_settings(value: bytes) -> None:
    server = H2Protocol()
    with pytest.raises(H2ConnectionError) as info:
        server.initiate_upgrade(value)
    assert info.value.error_code == ErrorCodes.PROTOCOL_ERROR


def test_hpack_garbage_is_compression_error() -> None:
    pair = Pair()
    pair.handshake()
    frame = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
    frame.data = b"\xff\xff\xff\xff\xff"  # an index far beyond the tables
    with pytest.raises(H2ConnectionError):
        pair.server.receive_data(frame.serialize())
    frames = parse_frames(pair.server_output())
    assert isinstance(frames[-1], GoAwayFrame)
    assert frames[-1].error_code == ErrorCodes.COMPRESSION_ERROR


def test_encoder_state_survives_rejected_requests() -> None:
    # Rejected streams are still decoded, so the HPACK tables stay in step.
    pair = Pair(max_header_list_size=1000)
    pair.handshake()
    pair.request(big_request(1500))
    pair.request([(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
    good = pair.request([*REQUEST, (b"x-big", b"v" * 50)])
    assert [e.stream_id for e in of_type(pair.to_server(), RequestReceived)] == [good]


# HPACK blocks reused, and h2's closed streams bounded: invisible on the wire.

HEAD = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"13")]


def head_sequence() -> list[list[tuple[bytes, bytes]]]:
    """Repeats, new values, a field that evicts the table, and repeats again."""
    return [
        HEAD,
        HEAD,
        HEAD,
        [(b":status", b"404"), *HEAD[1:]],
        HEAD,
        [(b":status", b"200"), (b"x-big", b"v" * 5000)],  # larger than the table: clears it
        HEAD,
        HEAD,
        [(b":status", b"200"), (b"x-fill", b"w" * 3000)],  # evicts the others
        HEAD,
        HEAD,
    ]


def test_encoder_blocks_match_hpack() -> None:
    ours, theirs = ReusingEncoder(), hpack.Encoder()
    for index, fields in enumerate(head_sequence()):
        if index == 5:
            ours.header_table_size = theirs.header_table_size = 256
        assert ours.encode(fields) == theirs.encode(fields), index


def test_encoder_codes_a_repeated_head_once(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = ReusingEncoder()
    first = encoder.encode(HEAD)  # adds the fields to the table
    second = encoder.encode(HEAD)  # all indexed: changes nothing, kept
    monkeypatch.setattr(encoder, "add", None)  # coding again would fail
    assert encoder.encode(HEAD) == second != first


def test_encoder_codes_again_after_a_table_size_change() -> None:
    ours, theirs = ReusingEncoder(), hpack.Encoder()
    for fields in (HEAD, HEAD):
        assert ours.encode(fields) == theirs.encode(fields)
    ours.header_table_size = theirs.header_table_size = 1024
    block = ours.encode(HEAD)
    assert block == theirs.encode(HEAD)
    assert block[0] & 0xE0 == 0x20  # starts with the size update


def test_encoder_never_reuses_for_never_indexed_fields() -> None:
    ours, theirs = ReusingEncoder(), hpack.Encoder()
    sensitive = [hpack.NeverIndexedHeaderTuple(*field) for field in HEAD]
    for fields in (HEAD, HEAD, sensitive, HEAD, sensitive):
        assert ours.encode(fields) == theirs.encode(fields)


def request_blocks() -> list[bytes]:
    encoder = hpack.Encoder()
    other = [*REQUEST[:3], (b":path", b"/other")]
    return [encoder.encode(fields) for fields in (REQUEST, REQUEST, REQUEST, other, REQUEST)]


def test_decoder_lists_match_hpack() -> None:
    ours, theirs = ReusingDecoder(), hpack.Decoder()
    for block in request_blocks():
        assert ours.decode(block, raw=True) == theirs.decode(block, raw=True)


def test_decoder_decodes_a_repeated_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = ReusingDecoder()
    blocks = request_blocks()
    decoder.decode(blocks[0], raw=True)
    expected = decoder.decode(blocks[1], raw=True)
    monkeypatch.setattr(decoder, "_decode_indexed", None)  # decoding again would fail
    assert decoder.decode(blocks[2], raw=True) == expected
    # A copy each time: a caller changing its list changes no other.
    decoder.decode(blocks[2], raw=True).clear()
    assert decoder.decode(blocks[2], raw=True) == expected


def test_decoder_applies_a_lowered_header_list_limit_to_a_repeated_block() -> None:
    decoder = ReusingDecoder()
    blocks = request_blocks()
    decoder.decode(blocks[0], raw=True)
    decoder.decode(blocks[1], raw=True)
    decoder.max_header_list_size = 100
    with pytest.raises(hpack.OversizedHeaderListError):
        decoder.decode(blocks[2], raw=True)


def test_decoder_keeps_a_bounded_number_of_small_blocks() -> None:
    decoder = ReusingDecoder()
    for index in range(3 * MAX_REUSED_BLOCKS):
        # Literal without indexing: changes nothing, so each is kept until the bound.
        decoder.decode(b"\x00\x01a\x02" + b"%02d" % index, raw=True)
    big = hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(b"a", b"x" * 640)], huffman=False)
    decoder.decode(big, raw=True)
    assert len(decoder._lists) == MAX_REUSED_BLOCKS
    assert big not in decoder._lists


def test_connection_forgets_closed_streams() -> None:
    pair = Pair()
    pair.handshake()
    server: H2Protocol = pair.server
    for _ in range(500):
        stream_id = pair.request()
        (request,) = of_type(pair.to_server(), RequestReceived)
        assert request.stream_id == stream_id
        server.send_headers(stream_id, 200, HEAD[1:], end=False)
        server.send_data(stream_id, b"Hello, world!", end=True)
        server.stream_finished(stream_id)
        pair.to_client()
    assert len(server._conn.streams) <= 128


def test_responses_decode_after_the_client_shrinks_its_table() -> None:
    # Kept blocks index the old table; after SETTINGS_HEADER_TABLE_SIZE the next head
    # carries the size update and codes its fields again, as the client expects.
    pair = Pair()
    pair.handshake()
    heads = []
    for table_size in (None, None, 0, None, 64, None):
        if table_size is not None:
            pair.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
        stream_id = pair.request()
        pair.to_server()
        pair.server.send_headers(stream_id, 200, HEAD[1:], end=True)
        pair.server.stream_finished(stream_id)
        (response,) = of_type(pair.to_client(), h2.events.ResponseReceived)
        heads.append(response.headers)
    assert heads == [HEAD] * 6
