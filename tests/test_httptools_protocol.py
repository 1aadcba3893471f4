"""H1HttpToolsProtocol: fuzzed on its own, and compared byte for byte with H1Protocol.

The server must behave the same whichever parser ``--http`` picks, so most of
these tests drive both handlers through the same conversation (including every
way a transport could split the input) and require identical transcripts:
events, error status codes, response bytes and keep-alive decisions.
"""

from __future__ import annotations

import ast
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("httptools")

from palfrey.protocols import h1_wire
from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    RequestReceived,
)
from palfrey.protocols.h11 import H1Protocol
from palfrey.protocols.httptools import H1HttpToolsProtocol
from palfrey.transport.errors import ServeError
from palfrey.transport.protocol_select import h1_protocol_class

EOF = b""
Response = tuple[int, list[tuple[bytes, bytes]], list[bytes]]
OK: Response = (200, [(b"content-length", b"2")], [b"ok"])


def transcript(
    cls: type,
    pieces: list[bytes],
    response: Response | Callable[[RequestReceived], Response] = OK,
    **options: Any,
) -> list[tuple[Any, ...]]:
    """Drive a handler the way H1Connection does and record everything observable."""
    protocol = cls(**options)
    log: list[tuple[Any, ...]] = []
    request: RequestReceived | None = None

    def handle(events: list) -> bool:
        nonlocal request
        log.append(("events", *events))
        for event in events:
            if isinstance(event, RequestReceived):
                request = event
                log.append(("asks", protocol.upgrade_requested, protocol.awaiting_continue))
            elif isinstance(event, BodyReceived) and not event.more:
                assert request is not None
                status, headers, body = response(request) if callable(response) else response
                try:
                    out = protocol.send_response(status, headers)
                    for index, chunk in enumerate(body):
                        out += protocol.send_body(chunk, more=index < len(body) - 1)
                    if not body:
                        out += protocol.send_body(b"")
                except LocalProtocolError:
                    log.append(("local error", protocol.response_complete, protocol.keep_alive))
                    return False
                log.append(("sent", out, protocol.keep_alive, protocol.request_complete))
                if not protocol.keep_alive:
                    return False
                protocol.start_new_cycle()
                return handle(protocol.next_events())
            elif isinstance(event, ConnectionClosed):
                return False
        return True

    try:
        for piece in pieces:
            if not handle(protocol.receive_data(piece)):
                break
    except ProtocolError as exc:
        # The connection answers and closes: nothing else about the handler matters.
        log.append(("error", exc.status_code))
        return log
    log.append(("state", protocol.has_pending_input, protocol.request_complete))
    return log


def assert_same(pieces: list[bytes], response: Any = OK, **options: Any) -> list:
    expected = transcript(H1Protocol, pieces, response, **options)
    assert transcript(H1HttpToolsProtocol, pieces, response, **options) == expected
    return expected


def split_everywhere(data: bytes, tail: list[bytes]) -> list[list[bytes]]:
    """Every two-piece split of ``data`` (no empty piece: that would mean end of file)."""
    return [[data[:cut], data[cut:], *tail] for cut in range(1, len(data))]


GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)
UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

# (data, what follows it: nothing or end of file, handler options)
CORPUS: dict[str, tuple[bytes, list[bytes], dict[str, Any]]] = {
    "get": (GET, [], {}),
    "get-eof": (GET, [EOF], {}),
    "post": (POST, [], {}),
    "chunked": (CHUNKED, [], {}),
    "chunked-trailers": (
        CHUNKED[: -len(b"\r\n")] + b"X-Sum: 1\r\nX-Other: a b\r\n\r\n",
        [],
        {},
    ),
    "chunked-upper-hex-and-whitespace": (
        CHUNKED.replace(b"6;ext=1\r\n", b"6 \t\r\n").replace(b"\r\n5\r\n", b"\r\n05\r\n"),
        [],
        {},
    ),
    "pipelined": (GET + POST + CHUNKED + GET, [], {}),
    "pipelined-eof": (GET + POST + GET, [EOF], {}),
    "http10": (b"GET / HTTP/1.0\r\n\r\n", [EOF], {}),
    "http10-keep-alive-header": (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", [], {}),
    "http10-then-more": (b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n", [], {}),
    "http17-served-as-11": (b"GET / HTTP/1.7\r\nHost: a\r\n\r\n" + GET, [], {}),
    "head": (b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + GET, [], {}),
    "close": (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", [EOF], {}),
    "close-then-data": (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n" + GET, [], {}),
    "upgrade-declined": (UPGRADE + GET, [], {}),
    "upgrade-header-only": (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n" + GET, [], {}),
    "expect-continue": (
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        [],
        {},
    ),
    "header-whitespace": (b"GET / HTTP/1.1\r\nHost:a\r\nX-A:  b  c \t\r\nX-E:\r\n\r\n", [], {}),
    "obs-text-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\n\r\n", [], {}),
    "absolute-form": (b"GET http://a/b?c=d#e HTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    "asterisk": (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    # Where the version is read off the request line, and where it must not be.
    "version-0.9-then-version-line": (b"GET /\nHTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    "version-1.10": (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", [], {}),
    "version-1.1-bare-lf": (b"GET / HTTP/1.1\nHost: a\n\n", [], {}),
    "version-1.2": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", [], {}),
    "version-1.0": (b"GET / HTTP/1.0\r\n\r\n", [], {}),
    "content-length-zero": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", [], {}),
    "content-length-leading-zero": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 002\r\n\r\nab",
        [],
        {},
    ),
    "transfer-encoding-case": (
        CHUNKED.replace(b"Transfer-Encoding: chunked", b"transfer-encoding: CHUNKED"),
        [],
        {},
    ),
    # Peers that go away.
    "eof-only": (b"G", [EOF], {}),
    "eof-mid-head": (GET[:20], [EOF], {}),
    "eof-mid-body": (POST[:-3], [EOF], {}),
    "eof-mid-chunk": (CHUNKED[:-9], [EOF], {}),
    "eof-then-data": (GET, [EOF, b"more"], {}),
    "eof-pipelined-garbage": (GET + b"NOT HTTP\r\n\r\n", [EOF], {}),
    # Bad input.
    "leading-crlf": (b"\r\n" + GET, [], {}),
    "leading-space": (b" " + GET, [], {}),
    "garbage": (b"\x00\x01\x02 nonsense\r\n\r\n", [], {}),
    "no-version": (b"GET /\r\n\r\n", [], {}),
    "no-version-with-headers": (b"GET /x\r\nHost: a\r\n\r\n", [], {}),
    "double-space": (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    "space-after-target": (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    "lower-case-version": (b"GET / http/1.1\r\nHost: a\r\n\r\n", [], {}),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", [], {}),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [], {}),
    "http10-no-host-ok": (b"GET / HTTP/1.0\r\nUser-Agent: x\r\n\r\n", [], {}),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", [], {}),
    "no-colon": (b"GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", [], {}),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", [], {}),
    "cr-in-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", [], {}),
    "bad-content-length": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", [], {}),
    "negative-content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        [],
        {},
    ),
    "conflicting-content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        [],
        {},
    ),
    "content-length-and-chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        [],
        {},
    ),
    "gzip-transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        [],
        {},
    ),
    "chunked-then-gzip": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        [],
        {},
    ),
    "gzip-then-chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        [],
        {},
    ),
    "bad-chunk-size": (CHUNKED.replace(b"5\r\nhello", b"zz\r\nhello"), [], {}),
    "hex-prefix-chunk-size": (CHUNKED.replace(b"5\r\nhello", b"0x5\r\nhello"), [], {}),
    "huge-chunk-size": (CHUNKED.replace(b"5\r\nhello", b"fffffffffffffffffffff\r\n"), [], {}),
    "bad-chunk-footer": (CHUNKED.replace(b"hello\r\n", b"helloXX"), [], {}),
    "bad-trailer": (CHUNKED[: -len(b"\r\n")] + b"Bad Trailer\r\n\r\n", [], {}),
    "version-2": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", [], {}),
    "version-0": (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", [], {}),
    "connect": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    "non-ascii-target": (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", [], {}),
    # Limits.
    "head-over-limit-in-pieces": (GET + GET.replace(b"Accept", b"X-Big: " + b"a" * 200), [], {}),
    "body-over-limit-declared": (POST, [], {"limit_request_body": 10}),
    "body-over-limit-chunked": (CHUNKED, [], {"limit_request_body": 8}),
    "body-at-limit": (POST + CHUNKED, [], {"limit_request_body": 11}),
    "long-chunk-line": (CHUNKED.replace(b"6;ext=1", b"6;" + b"e" * 200), [], {}),
    "long-trailer": (CHUNKED[: -len(b"\r\n")] + b"X: " + b"t" * 200 + b"\r\n\r\n", [], {}),
}
SMALL_HEAD = {"max_incomplete_event_size": 128}
for _name in ("head-over-limit-in-pieces", "long-chunk-line", "long-trailer"):
    CORPUS[_name][2].update(SMALL_HEAD)


@pytest.mark.parametrize("name", list(CORPUS))
def test_same_transcript_whole(name: str) -> None:
    data, tail, options = CORPUS[name]
    assert_same([data, *tail], **options)


@pytest.mark.parametrize("name", list(CORPUS))
def test_same_transcript_split_anywhere(name: str) -> None:
    data, tail, options = CORPUS[name]
    for pieces in split_everywhere(data, tail):
        assert_same(pieces, **options)


@pytest.mark.parametrize("name", list(CORPUS))
def test_same_transcript_byte_by_byte(name: str) -> None:
    data, tail, options = CORPUS[name]
    assert_same([data[i : i + 1] for i in range(len(data))] + tail, **options)


# Responses: the same bytes, framing and keep-alive decisions for each kind of request.

REQUESTS = {
    "get": GET,
    "get-10": b"GET / HTTP/1.0\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    "head-10": b"HEAD / HTTP/1.0\r\n\r\n",
    "post": POST,
    "close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "upgrade": UPGRADE,
}
RESPONSES: dict[str, Response] = {
    "length": OK,
    "streamed": (200, [(b"content-type", b"text/plain")], [b"a", b"", b"bc"]),
    "empty-streamed": (200, [], []),
    "no-content": (204, [(b"server", b"x")], []),
    "not-modified": (304, [(b"content-length", b"10"), (b"etag", b'"x"')], []),
    "chunked-and-length": (
        200,
        [(b"Content-Length", b"2"), (b"Transfer-Encoding", b"Chunked")],
        [b"ok"],
    ),
    "app-chunked": (200, [(b"transfer-encoding", b"chunked")], [b"ab", b"c"]),
    "app-close": (200, [(b"content-length", b"2"), (b"connection", b"close")], [b"ok"]),
    "app-tokens": (200, [(b"connection", b"keep-alive, Upgrade"), (b"x", b"1")], [b"ok"]),
    "unknown-status": (599, [(b"content-length", b"0")], []),
    "repeated-length": (200, [(b"content-length", b"2"), (b"content-length", b"2")], [b"ok"]),
    "comma-length": (200, [(b"content-length", b"2, 2")], [b"ok"]),
    "mixed-case-name": (200, [(b"X-Custom", b"Value"), (b"content-length", b"0")], []),
    "too-much": (200, [(b"content-length", b"1")], [b"ok"]),
    "too-little": (200, [(b"content-length", b"5")], [b"ok"]),
    "no-content-with-body": (204, [], [b"x"]),
    "conflicting-length": (200, [(b"content-length", b"2"), (b"content-length", b"02")], []),
    "gzip-encoding": (200, [(b"transfer-encoding", b"gzip")], []),
    "bad-value": (200, [(b"x", b"trailing ")], []),
    "bad-name": (200, [(b"bad name", b"x")], []),
    "status-too-low": (199, [], []),
}


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("response_name", list(RESPONSES))
def test_same_response(request_name: str, response_name: str) -> None:
    data = REQUESTS[request_name]
    assert_same([data + GET, EOF], RESPONSES[response_name])


def test_same_continue_and_upgrade() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    for cls in (H1Protocol, H1HttpToolsProtocol):
        protocol = cls()
        protocol.receive_data(data)
        assert protocol.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert protocol.send_continue() == b""
        protocol.receive_data(b"hi")
    upgrades = []
    for cls in (H1Protocol, H1HttpToolsProtocol):
        protocol = cls()
        protocol.receive_data(UPGRADE + b"\x81\x00frames")
        upgrades.append(protocol.upgrade([(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]))
        assert not protocol.keep_alive
    assert upgrades[0] == upgrades[1]
    assert upgrades[1][1] == b"\x81\x00frames"


@pytest.mark.parametrize("cls", [H1Protocol, H1HttpToolsProtocol])
def test_what_a_request_asks_of_the_connection(cls: type) -> None:
    def asks(head: bytes, body: bytes = b"") -> tuple[bool, bool]:
        protocol = cls()
        protocol.receive_data(head + b"\r\n" + body)
        return protocol.upgrade_requested, protocol.awaiting_continue

    length = b"Content-Length: 2\r\n"
    expect = b"POST / HTTP/1.1\r\nHost: a\r\n" + length + b"Expect: 100-continue\r\n"
    assert asks(UPGRADE[:-2]) == (True, False)
    assert asks(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c, websocket\r\n") == (True, False)
    # An Upgrade field that lists nothing proposes nothing.
    assert asks(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: ,\r\n") == (False, False)
    assert asks(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade:\r\n") == (False, False)
    assert asks(expect) == (False, True)
    assert asks(expect.replace(b"100-continue", b"100-Continue, x")) == (False, True)
    # A body byte on its way means the client no longer waits.
    assert asks(expect, b"h") == (False, False)
    # RFC 9110 §10.1.1: an HTTP/1.0 expectation is ignored.
    assert asks(expect.replace(b"HTTP/1.1", b"HTTP/1.0")) == (False, False)
    protocol = cls()
    protocol.receive_data(expect + b"\r\n")
    protocol.send_continue()
    assert not protocol.awaiting_continue


def test_connections_share_parsers_safely() -> None:
    # Parsers are pooled across connections: ones left mid-message must never come back.
    leftovers = [UPGRADE, POST, CHUNKED, b"GET / HTTP/1.0\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n"]
    for data in leftovers:
        with contextlib.suppress(ProtocolError):
            H1HttpToolsProtocol().receive_data(data)
        (request, _) = H1HttpToolsProtocol().receive_data(GET)
        assert request.target == b"/path?q=1"
    waiting = H1HttpToolsProtocol()
    waiting.receive_data(GET[:20])
    H1HttpToolsProtocol().receive_data(POST)
    assert waiting.receive_data(GET[20:])[0] == H1Protocol().receive_data(GET)[0]


def test_upgrade_needs_a_proposal() -> None:
    protocol = H1HttpToolsProtocol()
    protocol.receive_data(GET)
    with pytest.raises(LocalProtocolError):
        protocol.upgrade([])


# The one known, documented difference: llhttp refuses methods it does not know.
# (Obsolete folding, bare LF, control characters and repeated Content-Length,
# once differences too, are refused by both: tests/test_http11_edges.py.)


def test_stricter_than_h11() -> None:
    data = b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n"
    H1Protocol().receive_data(data)
    with pytest.raises(ProtocolError) as info:
        H1HttpToolsProtocol().receive_data(data)
    assert info.value.status_code == 400


# Fuzzing: whatever arrives, only well-formed events or ProtocolError come out.


def check_events(pieces: list[bytes], **options: Any) -> None:
    """Feed ``pieces`` and check the event grammar: one request at a time, then its body."""
    protocol = H1HttpToolsProtocol(**options)
    in_request = False
    try:
        for piece in pieces:
            events = protocol.receive_data(piece)
            while True:
                finished = False
                for index, event in enumerate(events):
                    if isinstance(event, RequestReceived):
                        assert not in_request and not finished
                        assert event.http_version in ("1.0", "1.1")
                        assert event.target.isascii()
                        assert all(name == name.lower() for name, _ in event.headers)
                        in_request = True
                    elif isinstance(event, BodyReceived):
                        assert in_request
                        in_request = event.more
                        finished = not event.more
                    else:
                        assert isinstance(event, ConnectionClosed)
                        assert index == len(events) - 1
                if not finished:
                    break
                protocol.send_response(200, [(b"content-length", b"0")])
                protocol.send_body(b"")
                if not protocol.keep_alive:
                    return
                protocol.start_new_cycle()
                events = protocol.next_events()
    except ProtocolError as exc:
        assert 400 <= exc.status_code < 600


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIECES = st.lists(st.binary(min_size=1, max_size=120), max_size=8)
VALID = [GET, POST, CHUNKED, UPGRADE, b"HEAD / HTTP/1.0\r\n\r\n", GET + POST + CHUNKED]


@FUZZ
@given(PIECES, st.booleans())
def test_arbitrary_bytes(pieces: list[bytes], eof: bool) -> None:
    check_events([*pieces, EOF] if eof else pieces, max_incomplete_event_size=512)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 3), st.binary(max_size=3)), max_size=4),
    st.integers(1, 500),
)
def test_mutated_requests(base: bytes, edits: list[tuple[int, int, bytes]], cut: int) -> None:
    data = bytearray(base)
    for position, removed, inserted in edits:
        at = position % (len(data) + 1)
        data[at : at + removed] = inserted
    check_events([bytes(data[:cut]), bytes(data[cut:]), EOF], limit_request_body=64)


# Differential fuzzing over well-formed requests of every shape.

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
VALUE = st.binary(min_size=0, max_size=12).map(
    lambda raw: bytes(0x21 + byte % 94 if byte % 7 else 0x20 for byte in raw).strip()
)
PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~%/!$&'()*+,;=:@?", max_size=12)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    lines = [b"%s /%s HTTP/%s" % (method, draw(PATH).encode(), version)]
    if version == b"1.1" or draw(st.booleans()):
        lines.append(b"Host: " + draw(TOKEN).encode())
    for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=4)):
        lines.append(b"X-%s:%s%s" % (name.encode(), draw(st.sampled_from([b"", b" "])), value))
    if draw(st.booleans()):
        lines.append(b"Connection: " + draw(st.sampled_from([b"close", b"keep-alive"])))
    body = draw(st.binary(max_size=40))
    # Transfer-Encoding in HTTP/1.0 is a framing error (RFC 9112 §6.1): answered 400.
    framing = draw(st.sampled_from(["none", "length", "chunked"][: 3 if version == b"1.1" else 2]))
    if framing == "none":
        return b"\r\n".join(lines) + b"\r\n\r\n"
    if framing == "length":
        return b"\r\n".join([*lines, b"Content-Length: %d" % len(body)]) + b"\r\n\r\n" + body
    lines.append(b"Transfer-Encoding: chunked")
    chunked = b""
    while body:
        size = draw(st.integers(1, len(body)))
        chunked += b"%x\r\n%s\r\n" % (size, body[:size])
        body = body[size:]
    return b"\r\n".join(lines) + b"\r\n\r\n" + chunked + b"0\r\n\r\n"


@FUZZ
@given(st.lists(requests(), min_size=1, max_size=3), st.data())
def test_same_transcript_for_generated_requests(batch: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(batch)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=6))))
    pieces = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)])]
    expected = assert_same([*pieces, EOF], max_incomplete_event_size=1024)
    # The only error: a request after one that said the connection must close.
    closing = any(b"Connection: close" in head or b"HTTP/1.0" in head for head in batch[:-1])
    assert closing or ("error", 400) not in expected


# Housekeeping.


def test_handler_modules_import_neither_trio_nor_h11() -> None:
    for module in ("httptools.py", "h1_wire.py"):
        source = Path(__file__).parent.parent / "palfrey" / "protocols" / module
        imported = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"trio", "h11", "asyncio", "socket"}


def test_response_line_cache_stays_bounded() -> None:
    protocol = H1HttpToolsProtocol()
    protocol.receive_data(GET)
    headers = [(b"x-%d" % i, b"v") for i in range(3000)]
    protocol.send_response(200, headers)
    assert len(h1_wire._LINE_CACHE) <= h1_wire._LINE_CACHE_SIZE


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("response_name", list(RESPONSES))
def test_same_response_when_remembered(request_name: str, response_name: str) -> None:
    # The first answer renders the fields; the second may come from the remembered sections.
    h1_wire._SECTIONS.clear()
    data = REQUESTS[request_name]
    first = assert_same([data + GET, EOF], RESPONSES[response_name])
    assert assert_same([data + GET, EOF], RESPONSES[response_name]) == first


FIELD_CHOICES = [
    (b"content-length", b"2"),
    (b"content-length", b"02"),
    (b"Content-Length", b"2"),
    (b"content-length", b"2, 2"),
    (b"transfer-encoding", b"chunked"),
    (b"connection", b"close"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"text/plain"),
    (b"X-Mixed", b"Case"),
    (b"date", b"Sat, 05 Dec 2026 02:49:41 GMT"),
    (b"x", b"bad\r\nvalue"),
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.lists(st.sampled_from(FIELD_CHOICES), max_size=5),
    status=st.sampled_from([200, 204, 304, 404, 599]),
    method=st.sampled_from([b"GET", b"HEAD", None]),
    version=st.sampled_from(["1.1", "1.0", None]),
    keep_alive=st.booleans(),
)
def test_remembered_heads_equal_rendered_ones(
    fields: list[tuple[bytes, bytes]],
    status: int,
    method: bytes | None,
    version: str | None,
    keep_alive: bool,
) -> None:
    def rendered() -> Any:
        try:
            return h1_wire.ResponseFields(fields).response_head(status, method, version, keep_alive)
        except LocalProtocolError as exc:
            return str(exc)

    def remembered() -> Any:
        try:
            return h1_wire.render_response_head(status, fields, method, version, keep_alive)
        except LocalProtocolError as exc:
            return str(exc)

    expected = rendered()
    assert remembered() == expected
    assert remembered() == expected


def test_remembered_sections_stay_bounded() -> None:
    for i in range(3 * h1_wire._SECTIONS_SIZE):
        h1_wire.render_response_head(200, [(b"content-length", b"%d" % i)], b"GET", "1.1", True)
    assert len(h1_wire._SECTIONS) <= h1_wire._SECTIONS_SIZE


def test_writable_memoryview_values_are_rendered() -> None:
    fields = [(b"content-length", memoryview(bytearray(b"0")))]
    for _ in range(2):
        protocol = H1HttpToolsProtocol()
        protocol.receive_data(GET)
        head = protocol.send_response(200, fields)
        assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def test_header_pairs_need_not_be_tuples() -> None:
    protocol = H1HttpToolsProtocol()
    protocol.receive_data(GET)
    out = protocol.send_response(200, [[b"content-length", b"0"], [b"x", b"y"]])  # type: ignore[list-item]
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx: y\r\n\r\n"


@pytest.fixture
def fresh_selection() -> Any:
    h1_protocol_class.cache_clear()
    yield
    h1_protocol_class.cache_clear()


@pytest.mark.usefixtures("fresh_selection")
def test_protocol_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert h1_protocol_class("h11") is H1Protocol
    assert h1_protocol_class("httptools") is H1HttpToolsProtocol
    assert h1_protocol_class("auto") is H1HttpToolsProtocol
    h1_protocol_class.cache_clear()
    monkeypatch.setitem(sys.modules, "palfrey.protocols.httptools", None)
    assert h1_protocol_class("auto") is H1Protocol
    with pytest.raises(ServeError, match=r"pip install 'palfrey\[fast\]'"):
        h1_protocol_class("httptools")


async def test_server_serves_with_the_auto_choice(serve: Any) -> None:
    # The serve fixture already runs every server test with "h11" and with "httptools".
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    async with serve(app, http="auto") as srv:
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        async with stream:
            await stream.send_all(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            received = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
