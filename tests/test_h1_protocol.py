"""H1Protocol without sockets: bytes in, events out, bytes to write back."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    RequestReceived,
)
from palfrey.protocols.h11 import H1Protocol

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
POST = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (
    b"POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)


def body_of(events: list) -> tuple[bytes, bool]:
    """All body bytes in ``events`` and whether the last body event ended the request."""
    chunks = [event for event in events if isinstance(event, BodyReceived)]
    return b"".join(chunk.data for chunk in chunks), bool(chunks) and not chunks[-1].more


def respond(protocol: H1Protocol, body: bytes = b"ok", headers: list | None = None) -> bytes:
    if headers is None:
        headers = [(b"content-length", b"%d" % len(body))]
    return protocol.send_response(200, headers) + protocol.send_body(body)


class TestRequests:
    def test_simple_get(self) -> None:
        events = H1Protocol().receive_data(GET)
        assert events == [
            RequestReceived(b"GET", b"/path?q=1", ((b"host", b"example.com"),), "1.1"),
            BodyReceived(b"", False),
        ]

    def test_headers_lower_cased_in_order_with_duplicates(self) -> None:
        data = (
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nAccept: */*\r\nx-dup: 2\r\n"
            b"Content-Type: Text/Plain\r\n\r\n"
        )
        (request, _) = H1Protocol().receive_data(data)
        assert request.headers == (
            (b"host", b"h"),
            (b"x-dup", b"1"),
            (b"accept", b"*/*"),
            (b"x-dup", b"2"),
            (b"content-type", b"Text/Plain"),
        )

    def test_http_10(self) -> None:
        (request, body) = H1Protocol().receive_data(b"GET / HTTP/1.0\r\n\r\n")
        assert request.http_version == "1.0"
        assert body == BodyReceived(b"", False)

    def test_content_length_body_in_pieces(self) -> None:
        protocol = H1Protocol()
        head = POST.partition(b"\r\n\r\n")[0]
        events = protocol.receive_data(head + b"\r\n\r\nhello")
        assert isinstance(events[0], RequestReceived)
        assert events[1:] == [BodyReceived(b"hello", True)]
        assert not protocol.request_complete
        assert protocol.receive_data(b" world") == [BodyReceived(b" world", False)]
        assert protocol.request_complete

    def test_chunked_body(self) -> None:
        events = H1Protocol().receive_data(CHUNKED)
        assert body_of(events) == (b"hello world", True)

    def test_pipelined_requests_wait_for_the_response(self) -> None:
        protocol = H1Protocol()
        events = protocol.receive_data(GET + POST)
        assert [type(e) for e in events] == [RequestReceived, BodyReceived]
        assert protocol.next_events() == []
        respond(protocol)
        assert protocol.keep_alive
        protocol.start_new_cycle()
        events = protocol.next_events()
        assert events[0].method == b"POST"
        assert body_of(events) == (b"hello world", True)

    def test_eof_when_idle(self) -> None:
        assert H1Protocol().receive_data(b"") == [ConnectionClosed("peer closed the connection")]

    def test_eof_in_the_middle_of_a_request(self) -> None:
        protocol = H1Protocol()
        assert protocol.receive_data(b"GET / HTTP/1.1\r\nHo") == []
        assert protocol.has_pending_input
        (event,) = protocol.receive_data(b"")
        assert isinstance(event, ConnectionClosed)

    def test_eof_in_the_middle_of_a_body(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(POST[:-3])
        (event,) = protocol.receive_data(b"")
        assert isinstance(event, ConnectionClosed)

    def test_data_after_eof(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(b"")
        assert protocol.receive_data(b"GET") == [ConnectionClosed("data after end of file")]

    def test_no_pending_input_between_requests(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(GET)
        respond(protocol)
        protocol.start_new_cycle()
        assert not protocol.has_pending_input


class TestBadInput:
    @pytest.mark.parametrize(
        "data",
        [
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ],
    )
    def test_malformed_head_is_400(self, data: bytes) -> None:
        with pytest.raises(ProtocolError) as info:
            H1Protocol().receive_data(data)
        assert info.value.status_code == 400

    def test_content_length_with_transfer_encoding_is_400(self) -> None:
        # RFC 9112 §6.1: a server MAY reject this request smuggling vector; we do.
        data = (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        with pytest.raises(ProtocolError) as info:
            H1Protocol().receive_data(data)
        assert info.value.status_code == 400

    def test_unknown_transfer_coding_is_501(self) -> None:
        # RFC 9112 §6.1: a transfer coding the server does not understand, under a
        # final chunked; without chunked last the length is unknown: 400 (§6.3).
        with pytest.raises(ProtocolError) as info:
            H1Protocol().receive_data(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            )
        assert info.value.status_code == 501

    def test_bad_chunk_size_is_400(self) -> None:
        protocol = H1Protocol()
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        protocol.receive_data(head)
        with pytest.raises(ProtocolError) as info:
            protocol.receive_data(b"zz\r\nhello\r\n")
        assert info.value.status_code == 400

    @pytest.mark.parametrize("version", [b"0.9", b"2.0", b"9.9"])
    def test_other_major_versions_are_505(self, version: bytes) -> None:
        # RFC 9110 §15.6.6: we only implement major version 1.
        with pytest.raises(ProtocolError) as info:
            H1Protocol().receive_data(b"GET / HTTP/%s\r\nHost: a\r\n\r\n" % version)
        assert info.value.status_code == 505

    def test_higher_minor_version_is_served_as_11(self) -> None:
        # RFC 9112 §2.3: process it as the highest minor version we implement.
        (request, _) = H1Protocol().receive_data(b"GET / HTTP/1.7\r\nHost: a\r\n\r\n")
        assert request.http_version == "1.1"

    def test_connect_is_405(self) -> None:
        with pytest.raises(ProtocolError) as info:
            H1Protocol().receive_data(b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert info.value.status_code == 405

    def test_non_ascii_target_is_400(self) -> None:
        with pytest.raises(ProtocolError) as info:
            H1Protocol().receive_data(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert info.value.status_code == 400

    def test_head_too_large_in_pieces_is_431(self) -> None:
        protocol = H1Protocol(max_incomplete_event_size=2048)
        protocol.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n")
        with pytest.raises(ProtocolError) as info:
            for _ in range(100):
                protocol.receive_data(b"X-Filler: " + b"a" * 100 + b"\r\n")
        assert info.value.status_code == 431

    def test_head_too_large_in_one_piece_is_431(self) -> None:
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        with pytest.raises(ProtocolError) as info:
            H1Protocol(max_incomplete_event_size=2048).receive_data(data)
        assert info.value.status_code == 431

    def test_head_just_under_the_limit_is_accepted(self) -> None:
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 1900 + b"\r\n\r\n"
        events = H1Protocol(max_incomplete_event_size=2048).receive_data(data)
        assert isinstance(events[0], RequestReceived)

    def test_declared_body_over_limit_is_413(self) -> None:
        with pytest.raises(ProtocolError) as info:
            H1Protocol(limit_request_body=10).receive_data(POST.replace(b"11", b"99"))
        assert info.value.status_code == 413

    def test_chunked_body_over_limit_is_413(self) -> None:
        protocol = H1Protocol(limit_request_body=8)
        with pytest.raises(ProtocolError) as info:
            protocol.receive_data(CHUNKED)
        assert info.value.status_code == 413

    def test_body_at_the_limit_is_accepted(self) -> None:
        events = H1Protocol(limit_request_body=11).receive_data(POST)
        assert body_of(events) == (b"hello world", True)


class TestResponses:
    @pytest.mark.parametrize(
        ("status", "line"),
        [
            (200, b"HTTP/1.1 200 OK\r\n"),
            (404, b"HTTP/1.1 404 Not Found\r\n"),
            (418, b"HTTP/1.1 418 I'm a Teapot\r\n"),
            (503, b"HTTP/1.1 503 Service Unavailable\r\n"),
        ],
    )
    def test_status_line_has_reason_phrase(self, status: int, line: bytes) -> None:
        protocol = H1Protocol()
        protocol.receive_data(GET)
        data = protocol.send_response(status, [(b"content-length", b"0")])
        assert data.startswith(line)

    def test_chunked_response_without_content_length(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(GET)
        data = protocol.send_response(200, [])
        assert b"transfer-encoding: chunked" in data.lower()
        data = protocol.send_body(b"hello", more=True) + protocol.send_body(b"")
        assert data == b"5\r\nhello\r\n0\r\n\r\n"
        assert protocol.response_complete
        assert protocol.keep_alive

    def test_head_response_keeps_content_length_without_body(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        data = respond(protocol, b"hello")
        assert data.endswith(b"\r\n\r\n")
        assert b"content-length: 5" in data.lower()
        assert protocol.keep_alive

    def test_too_much_body_is_a_local_error(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(GET)
        protocol.send_response(200, [(b"content-length", b"2")])
        with pytest.raises(LocalProtocolError):
            protocol.send_body(b"hello")
        assert not protocol.keep_alive

    def test_too_little_body_is_a_local_error(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(GET)
        protocol.send_response(200, [(b"content-length", b"10")])
        with pytest.raises(LocalProtocolError):
            protocol.send_body(b"hello")

    def test_connection_close_from_client(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        respond(protocol)
        assert protocol.response_complete
        assert not protocol.keep_alive

    def test_connection_close_from_app(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(GET)
        respond(protocol, b"", [(b"content-length", b"0"), (b"connection", b"close")])
        assert not protocol.keep_alive

    def test_http_10_is_not_kept_alive(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(b"GET / HTTP/1.0\r\n\r\n")
        data = protocol.send_response(200, []) + protocol.send_body(b"x")
        assert b"connection: close" in data.lower()
        assert not protocol.keep_alive

    def test_continue_only_when_expected(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(POST.partition(b"\r\n\r\n")[0] + b"\r\nExpect: 100-continue\r\n\r\n")
        assert protocol.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert protocol.send_continue() == b""
        other = H1Protocol()
        other.receive_data(POST[:-4])
        assert other.send_continue() == b""

    def test_unread_body_prevents_keep_alive_until_read(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(POST[:-5])
        respond(protocol)
        assert protocol.response_complete
        assert not protocol.request_complete
        assert not protocol.keep_alive
        protocol.receive_data(POST[-5:])
        assert protocol.keep_alive

    def test_upgrade_returns_trailing_data(self) -> None:
        protocol = H1Protocol()
        protocol.receive_data(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            b"\x81\x00"
        )
        data, trailing = protocol.upgrade([(b"upgrade", b"websocket")])
        assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert trailing == b"\x81\x00"


# Hypothesis: nothing a peer sends may escape as anything but ProtocolError.

VALID_REQUESTS = [GET, POST, CHUNKED, b"HEAD / HTTP/1.0\r\n\r\n", GET + POST + CHUNKED]

FRAGMENTS = st.sampled_from(
    [
        b"GET ",
        b"POST ",
        b"/",
        b"?a=b",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: x\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"Upgrade: h2c\r\n",
        b"\r\n",
        b"\n",
        b":",
        b"0\r\n",
        b"5\r\nhello\r\n",
        b"ffffffffffffffffffff\r\n",
        b"\x00",
        b"\xff",
        b" ",
        b"\t",
    ]
)


def feed(protocol: H1Protocol, pieces: list[bytes]) -> list:
    """Feed pieces like a transport would, answering each request so parsing continues."""
    events: list = []
    try:
        for piece in pieces:
            new = protocol.receive_data(piece)
            while True:
                events.extend(new)
                for event in new:
                    assert isinstance(event, (RequestReceived, BodyReceived, ConnectionClosed))
                if not (new and isinstance(new[-1], BodyReceived) and not new[-1].more):
                    break
                respond(protocol)
                if not protocol.keep_alive:
                    return events
                protocol.start_new_cycle()
                new = protocol.next_events()
    except ProtocolError as exc:
        assert 400 <= exc.status_code < 600
    return events


def normalise(events: list) -> list:
    """Merge consecutive body chunks, so differently split inputs compare equal."""
    out: list = []
    for event in events:
        if isinstance(event, BodyReceived) and out and isinstance(out[-1], BodyReceived):
            out[-1] = BodyReceived(out[-1].data + event.data, event.more)
        else:
            out.append(event)
    return out


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_arbitrary_bytes_give_events_or_protocol_error(pieces: list[bytes]) -> None:
    feed(H1Protocol(max_incomplete_event_size=1024, limit_request_body=64), [*pieces, b""])


@FUZZ
@given(st.lists(st.lists(FRAGMENTS, max_size=12).map(b"".join), max_size=6))
def test_request_like_bytes_give_events_or_protocol_error(pieces: list[bytes]) -> None:
    feed(H1Protocol(max_incomplete_event_size=1024, limit_request_body=64), [*pieces, b""])


@FUZZ
@given(st.sampled_from(VALID_REQUESTS), st.data())
def test_any_split_of_valid_requests_gives_the_same_events(
    data: bytes, draw: st.DataObject
) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = zip([0, *cuts], [*cuts, len(data)], strict=True)
    # An empty read means end of file to the handler, so a transport never passes one mid-stream.
    pieces = [data[start:end] for start, end in bounds if end > start]
    whole = normalise(feed(H1Protocol(), [data]))
    split = normalise(feed(H1Protocol(), pieces))
    assert split == whole
    assert sum(isinstance(event, RequestReceived) for event in whole) == data.count(b"HTTP/1.")
