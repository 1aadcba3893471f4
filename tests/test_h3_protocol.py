"""The sans-I/O HTTP/3 handler, driven against aioquic's client in memory (no sockets)."""

from __future__ import annotations

import ssl

import pytest
from aioquic.buffer import Buffer
from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamReset as QuicStreamReset
from aioquic.quic.packet import pull_quic_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palfrey.protocols.events import (
    ConnectionTerminated,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamReset,
)
from palfrey.protocols.h3 import (
    CONNECTION_WINDOWS,
    STREAM_WINDOW,
    ConnectionIdIssued,
    H3Protocol,
    StreamClosed,
)

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)


def server_configuration(certificate) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    configuration.load_cert_chain(certificate.certfile, certificate.keyfile)
    return configuration


class Pair:
    """An aioquic client and an :class:`H3Protocol` server exchanging datagrams in memory."""

    def __init__(self, certificate, **server_options) -> None:
        self.now = 1000.0
        self.client_quic = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE
            )
        )
        self.client = H3Connection(self.client_quic)
        self.client_quic.connect(SERVER_ADDR, now=self.now)
        first = self.client_quic.datagrams_to_send(now=self.now)
        header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
        self.server = H3Protocol(
            server_configuration(certificate),
            original_destination_connection_id=header.destination_cid,
            **server_options,
        )
        self.server_events: list = []
        self.client_events: list = []
        self.client_quic_events: list = []
        for data, _ in first:
            self.server_events += self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        self.pump()

    def pump(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            moved = False
            for data, _ in self.server.datagrams_to_send(self.now):
                moved = True
                self.client_quic.receive_datagram(data, SERVER_ADDR, self.now)
            while (event := self.client_quic.next_event()) is not None:
                self.client_quic_events.append(event)
                self.client_events += self.client.handle_event(event)
            for data, _ in self.client_quic.datagrams_to_send(self.now):
                moved = True
                self.server_events += self.server.receive_datagram(data, CLIENT_ADDR, self.now)
            if not moved:
                return
            self.now += 0.001

    def request(self, headers, body: bytes = b"", end: bool = True) -> int:
        stream_id = self.client_quic.get_next_available_stream_id()
        self.client.send_headers(stream_id, headers, end_stream=end and not body)
        if body:
            self.client.send_data(stream_id, body, end_stream=end)
        self.pump()
        return stream_id

    def take(self, kind) -> list:
        found = [e for e in self.server_events if isinstance(e, kind)]
        self.server_events = [e for e in self.server_events if not isinstance(e, kind)]
        return found


GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.org"),
    (b":path", b"/x?y=1"),
    (b"user-agent", b"test"),
]


def response_to(pair: Pair, stream_id: int) -> tuple[list, bytes, bool]:
    headers: list = []
    body = b""
    ended = False
    for event in pair.client_events:
        if getattr(event, "stream_id", None) != stream_id:
            continue
        if isinstance(event, HeadersReceived):
            headers.append(event.headers)
        elif isinstance(event, DataReceived):
            body += event.data
        ended = ended or event.stream_ended
    return headers, body, ended


def test_get_request_and_response(certificate) -> None:
    pair = Pair(certificate)
    assert pair.take(ConnectionIdIssued)
    stream_id = pair.request(GET)
    [request] = pair.take(RequestReceived)
    assert request.http_version == "3"
    assert request.method == b"GET"
    assert request.target == b"/x?y=1"
    assert request.scheme == b"https"
    assert request.headers == ((b"host", b"example.org"), (b"user-agent", b"test"))
    assert pair.take(StreamEnded) == [StreamEnded(stream_id)]
    pair.server.send_informational(stream_id, 103, [(b"link", b"</a.css>; rel=preload")])
    pair.server.send_headers(stream_id, 200, [(b"connection", b"close"), (b"x", b"1")], False)
    pair.server.send_data(stream_id, b"hello", False)
    pair.server.send_trailers(stream_id, [(b"x-checksum", b"abc")])
    pair.pump()
    heads, body, ended = response_to(pair, stream_id)
    assert heads[0] == [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")]
    assert heads[1] == [(b":status", b"200"), (b"x", b"1")]
    assert heads[2] == [(b"x-checksum", b"abc")]
    assert body == b"hello"
    assert ended
    with pytest.raises(StreamClosed):
        pair.server.send_data(stream_id, b"more", False)


def test_request_body_events(certificate) -> None:
    pair = Pair(certificate)
    post = [(b":method", b"POST"), *GET[1:]]
    stream_id = pair.request(post, b"x" * 5000)
    assert pair.take(RequestReceived)
    data = pair.take(StreamData)
    assert b"".join(e.data for e in data) == b"x" * 5000
    assert pair.take(StreamEnded) == [StreamEnded(stream_id)]


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a")],  # no :path
        [*GET, (b"Upper", b"x")],
        [*GET, (b"connection", b"keep-alive")],
        [(b":method", b"GET"), (b"x", b"1"), (b":path", b"/"), (b":authority", b"a")],
        [*GET, (b"host", b"other.example")],  # :authority and host differ
    ],
)
def test_malformed_request_is_a_stream_error(certificate, headers) -> None:
    pair = Pair(certificate)
    bad = pair.request(headers)
    assert pair.take(RequestReceived) == []
    resets = [e for e in pair.client_quic_events if isinstance(e, QuicStreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [(bad, ErrorCode.H3_MESSAGE_ERROR)]
    # The connection goes on.
    good = pair.request(GET)
    [request] = pair.take(RequestReceived)
    assert request.stream_id == good
    assert not pair.server.terminated


def test_content_length_mismatch_is_a_stream_error(certificate) -> None:
    pair = Pair(certificate)
    stream_id = pair.request([(b":method", b"POST"), *GET[1:], (b"content-length", b"10")], b"abc")
    assert pair.take(RequestReceived)
    assert StreamReset(stream_id, ErrorCode.H3_MESSAGE_ERROR, False) in pair.take(StreamReset)
    pair.request(GET)
    assert pair.take(RequestReceived)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b":method", b"CONNECT"), (b":authority", b"example.org:443")], b"501"),
        ([*GET, *((b"x-big-%d" % i, b"v" * 3000) for i in range(30))], b"431"),
    ],
)
def test_requests_answered_without_the_app(certificate, headers, status) -> None:
    pair = Pair(certificate)
    stream_id = pair.request(headers)
    assert pair.take(RequestReceived) == []
    heads, _, ended = response_to(pair, stream_id)
    assert heads == [[(b":status", status)]]
    assert ended


def test_client_reset_reports_stream_reset(certificate) -> None:
    pair = Pair(certificate)
    stream_id = pair.request([(b":method", b"POST"), *GET[1:]], b"abc", end=False)
    assert pair.take(RequestReceived)
    pair.client_quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
    pair.pump()
    [reset] = pair.take(StreamReset)
    assert reset == StreamReset(stream_id, ErrorCode.H3_REQUEST_CANCELLED, True)
    assert pair.server.open_streams == 0


def _client_window(pair: Pair, stream_id: int) -> int:
    return pair.client_quic._streams[stream_id].max_stream_data_remote


@pytest.mark.parametrize("window", [None, 65536])
def test_receive_window_moves_only_with_consumption(certificate, window) -> None:
    """aioquic alone would double the window as data arrives; here it waits for the app."""
    pair = Pair(certificate) if window is None else Pair(certificate, stream_window=window)
    window = window or STREAM_WINDOW
    stream_id = pair.request([(b":method", b"POST"), *GET[1:]], b"", end=False)
    pair.take(RequestReceived)
    for _ in range(4):
        pair.client.send_data(stream_id, b"x" * (window // 2), end_stream=False)
        pair.pump(200)
    received = sum(len(e.data) for e in pair.take(StreamData))
    # The client could send one window's worth (minus frame headers), no more.
    assert window - 100 < received <= window
    assert _client_window(pair, stream_id) <= window + 100
    pair.server.acknowledge(stream_id, received)
    pair.pump(200)
    more = sum(len(e.data) for e in pair.take(StreamData))
    assert more > window // 2
    assert _client_window(pair, stream_id) > window + window // 2


def test_connection_window_is_four_stream_windows(certificate) -> None:
    """Four streams may each fill their window; a fifth gets nothing until one is consumed."""
    window = 32768
    pair = Pair(certificate, stream_window=window)
    assert pair.client_quic._remote_max_data == CONNECTION_WINDOWS * window
    ids = [
        pair.request([(b":method", b"POST"), *GET[1:]], b"", end=False)
        for _ in range(CONNECTION_WINDOWS + 1)
    ]
    pair.take(RequestReceived)
    for stream_id in ids:
        pair.client.send_data(stream_id, b"x" * window, end_stream=False)
        pair.pump(200)
    data = pair.take(StreamData)
    total = sum(len(e.data) for e in data)
    assert total <= CONNECTION_WINDOWS * window
    assert not [e for e in data if e.stream_id == ids[-1]]
    for stream_id in ids[:-1]:
        pair.server.acknowledge(stream_id, window)
    pair.pump(200)
    assert [e for e in pair.take(StreamData) if e.stream_id == ids[-1]]


def test_goaway_refuses_later_streams_then_close(certificate) -> None:
    pair = Pair(certificate)
    first = pair.request(GET, end=False)
    pair.take(RequestReceived)
    pair.server.send_goaway()
    pair.pump()
    later = pair.request(GET)
    assert pair.take(RequestReceived) == []
    resets = [e for e in pair.client_quic_events if isinstance(e, QuicStreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [(later, ErrorCode.H3_REQUEST_REJECTED)]
    # The stream before the GOAWAY is still served.
    pair.server.send_headers(first, 200, [], True)
    pair.pump()
    assert response_to(pair, first)[2]
    pair.server.close()
    pair.pump()
    pair.now += 10
    pair.server_events += pair.server.handle_timer(pair.now)
    assert pair.server.terminated
    assert pair.take(ConnectionTerminated)


def test_connection_end_resets_open_streams(certificate) -> None:
    pair = Pair(certificate)
    stream_id = pair.request(GET, end=False)
    pair.take(RequestReceived)
    pair.client_quic.close(error_code=0)
    pair.pump()
    assert pair.take(StreamReset) == [StreamReset(stream_id, 0, True)]
    assert pair.server.closing
    assert not pair.server.terminated
    # The draining period (RFC 9000 §10.2) ends on the timer.
    pair.now += 10
    pair.server_events += pair.server.handle_timer(pair.now)
    assert pair.take(ConnectionTerminated)
    assert pair.server.terminated


def test_timer_is_a_deadline_in_the_callers_clock(certificate) -> None:
    pair = Pair(certificate)
    timer = pair.server.get_timer()
    assert timer is not None
    assert timer > pair.now
    # Idle: nothing more arrives, and the idle timeout ends the connection.
    pair.now += 120
    pair.server.handle_timer(pair.now)
    assert pair.server.terminated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(st.binary(min_size=0, max_size=1400), min_size=1, max_size=8))
def test_random_datagrams_never_raise(certificate, datagrams) -> None:
    server = H3Protocol(
        server_configuration(certificate), original_destination_connection_id=b"x" * 8
    )
    now = 5.0
    for data in datagrams:
        for event in server.receive_datagram(data, CLIENT_ADDR, now):
            assert not isinstance(event, RequestReceived)
        server.datagrams_to_send(now)
        timer = server.get_timer()
        if timer is not None:
            now = max(now, timer)
            server.handle_timer(now)
