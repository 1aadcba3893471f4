"""Fuzzing through the transport: hypothesis-chosen bytes over real loopback sockets
into a running in-process server, checking the invariants a client relies on.

The sans-I/O handlers have their own fuzz tests (``test_h2_fuzz`` and the parser
tests); these ones go through the whole stack (socket stream, transport loop,
parser, ASGI app), where segmentation, half-closes and error paths meet:

1. one response per request: N pipelined valid requests, cut into TCP segments at
   hypothesis-chosen points, get exactly N responses, in order;
2. never bytes after a close: after a response with ``connection: close`` (asked
   for, or an error response) nothing follows and the connection closes;
3. no exception escapes a connection task (``no_connection_crashes``);
4. a mutated request (byte flips, inserted CR/LF/NUL/space/colon, truncation,
   duplicated header lines) gets well-formed responses and/or one error then
   close, or just a close; a fresh normal request succeeds afterwards.

HTTP/2 gets the same treatment: a valid ``h2`` client exchange split at
hypothesis-chosen points, and the same exchange with bytes flipped after the
preface (the server answers, or sends GOAWAY and closes, and never crashes).

One server serves every example of a test function: starting one per example
would dominate the run time. pytest-trio runs each example of an async
``@given`` test in a fresh ``trio.run``, which cannot share a server, so the
examples run in a worker thread (``trio.to_thread``) and each one hops back into
the test's event loop with ``trio.from_thread.run``.

Long runs: the normal run is bounded at 50 examples per test (a few seconds in
all). For a longer local run set ``PALFREY_FUZZ_EXAMPLES``; 5000 takes about six
minutes::

    PALFREY_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q -p no:cacheprovider \\
        tests/test_transport_fuzz.py
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from conftest import RunningServer, run_server
from h1_client import (
    WAIT,
    RawClient,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_fd_count,
    request,
)
from hyperframe.frame import Frame, GoAwayFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Examples per test; raise it with ``PALFREY_FUZZ_EXAMPLES`` for a long local run.
EXAMPLES = int(os.environ.get("PALFREY_FUZZ_EXAMPLES", "50"))

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with its raw path, after reading the whole body, so a
    response can be matched to the request it answers."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    body = scope.get("raw_path") or scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def in_thread(examples: Callable[[], None]) -> None:
    """Run a hypothesis test body in a worker thread; its examples call back into this loop.

    The bound is generous: every network wait inside an example is itself bounded.
    Afterwards every connection the examples opened must be gone from the server
    too (no file descriptor leaked by any error path); the server closes its side
    a moment after the client, hence the polling.
    """
    before = open_fd_count()
    with trio.fail_after(600):
        await trio.to_thread.run_sync(examples)
    with trio.move_on_after(WAIT):
        while open_fd_count() > before:
            await trio.sleep(0.01)
    assert open_fd_count() <= before


async def send_segmented(stream: trio.abc.Stream, data: bytes, cuts: list[int]) -> None:
    """Send ``data`` cut at ``cuts``, with a pause between pieces so the server reads
    each one separately (the pieces would otherwise coalesce in the kernel)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    for start, end in itertools.pairwise(bounds):
        await stream.send_all(data[start:end])
        await trio.sleep(0.001)


async def half_close(client: RawClient) -> None:
    """Send FIN: the server then knows no more bytes are coming, and must answer what
    it has and close, instead of waiting for the rest of a truncated request."""
    assert isinstance(client.stream, trio.abc.HalfCloseableStream)
    await client.stream.send_eof()


# --- HTTP/1.1 ----------------------------------------------------------------------

segment_cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=10)

#: One valid request: (method, body framing, body).
one_request = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "DELETE"]),
    st.sampled_from(["none", "length", "chunked"]),
    st.binary(max_size=64),
)


def build_request(index: int, method: str, framing: str, body: bytes, close: bool) -> bytes:
    headers: list[tuple[str, str]] = [("X-Fuzz", str(index))]
    if close:
        headers.append(("Connection", "close"))
    if framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        chunked = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        return request(method, f"/r{index}", headers) + chunked
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
        return request(method, f"/r{index}", headers) + body
    return request(method, f"/r{index}", headers)


def parse_responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Split everything a server sent into responses; fail on anything malformed.

    An incomplete response at the end is malformed too: the server closes only
    after sending the whole of what it started.
    """
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"unterminated head: {data!r}"
        status_line, *lines = head.split(b"\r\n")
        version, status, _reason = (status_line + b" ").split(b" ", 2)
        assert version == b"HTTP/1.1", status_line
        assert len(status) == 3 and status.isdigit(), status_line
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and name and name == name.strip(), line
            assert name.lower() not in headers, f"duplicate {name!r} in {head!r}"
            headers[name.lower()] = value.strip()
        assert b"transfer-encoding" not in headers, head  # echo_app and errors set a length
        length = int(headers.get(b"content-length", b"0"))
        assert len(rest) >= length, f"truncated body after {head!r}"
        responses.append((int(status), headers, rest[:length]))
        data = rest[length:]
    return responses


async def check_fresh_request(server: RunningServer) -> None:
    """A new connection with a normal request is answered normally."""
    async with connect(server) as client:
        await client.send(request("GET", "/fresh"))
        response = await client.read_response()
    assert (response.status, response.body) == (200, b"/fresh")


async def pipelined_exchange(
    server: RunningServer,
    requests: list[tuple[str, str, bytes]],
    close_at: int | None,
    cuts: list[int],
) -> None:
    payload = b"".join(
        build_request(i, method, framing, body, close=i == close_at)
        for i, (method, framing, body) in enumerate(requests)
    )
    expected = len(requests) if close_at is None else close_at + 1
    async with connect(server) as client:
        await send_segmented(client.stream, payload, cuts)
        if close_at is None:
            await half_close(client)
        received = await client.read_until_closed()
    responses = parse_responses(received)
    # Exactly one response per request, in order; nothing after the close.
    assert [(status, body) for status, _, body in responses] == [
        (200, f"/r{i}".encode()) for i in range(expected)
    ], received
    if close_at is not None:
        assert responses[-1][1].get(b"connection") == b"close", responses[-1]


async def test_pipelined_requests_any_segmentation(serve: Any) -> None:
    """Invariants 1-3: pipelined valid requests, the last one possibly with
    ``connection: close``, cut anywhere.

    Requests pipelined *after* a ``connection: close`` are left to
    :func:`test_requests_pipelined_after_close`.
    """
    async with serve(echo_app) as server:

        @fuzz_settings
        @given(st.lists(one_request, min_size=1, max_size=6), st.booleans(), segment_cuts)
        def examples(requests: list[tuple[str, str, bytes]], close: bool, cuts: list[int]) -> None:
            close_at = len(requests) - 1 if close else None
            trio.from_thread.run(pipelined_exchange, server, requests, close_at, cuts)

        await in_thread(examples)
        await check_fresh_request(server)


async def test_requests_pipelined_after_close(serve: Any) -> None:
    """Found by the pipelining fuzz test: the close request must be answered, the
    requests after it must not be, and nothing follows the answer."""
    async with serve(echo_app) as server:
        await pipelined_exchange(server, [("GET", "none", b"")] * 3, 0, [])


#: Bytes that break HTTP/1.1 framing when they land in the wrong place.
special_byte = st.sampled_from([*b"\r\n\x00 :\t", 0x7F, 0x80, 0xFF])

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), special_byte),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("duplicate-line"), st.integers(0, 1 << 16), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, value in mutations:
        if not buffer:
            break
        position = where % len(buffer)
        if kind == "flip":
            buffer[position] ^= value
        elif kind == "insert":
            buffer.insert(position, value)
        elif kind == "truncate":
            del buffer[position:]
        else:
            # Duplicate the header line (or request line) that holds ``position``.
            start = buffer.rfind(b"\n", 0, position) + 1
            end = buffer.find(b"\n", position)
            if end != -1:
                buffer[end + 1 : end + 1] = buffer[start : end + 1]
    return bytes(buffer)


async def mutated_exchange(server: RunningServer, payload: bytes, cuts: list[int]) -> None:
    async with connect(server) as client:
        try:
            await send_segmented(client.stream, payload, cuts)
            await half_close(client)
        except trio.BrokenResourceError:
            pass  # The server already answered and closed: what it sent is checked below.
        received = await client.read_until_closed()
    responses = parse_responses(received)
    for position, (status, headers, body) in enumerate(responses):
        last = position == len(responses) - 1
        if status == 200:
            # An answer to a request that really was in the bytes, not an invented one.
            assert body.startswith(b"/") and body in payload, body
        else:
            # Anything else is the server's rejection: a 4xx (or 5xx) that ends the connection.
            assert 400 <= status < 600, status
            assert last, f"bytes after a {status}: {received!r}"
        if headers.get(b"connection") == b"close":
            assert last, f"bytes after connection: close: {received!r}"
    # At most one answer per request line the bytes could hold, plus one rejection.
    assert len(responses) <= payload.count(b"HTTP/1.") + 1, received
    await check_fresh_request(server)


async def test_mutated_requests(serve: Any) -> None:
    """Invariants 2-4 for one or two requests mutated by hypothesis, then half-closed."""
    async with serve(echo_app) as server:

        @fuzz_settings
        @given(
            st.lists(one_request, min_size=1, max_size=2),
            st.lists(mutation, min_size=1, max_size=4),
            segment_cuts,
        )
        def examples(
            requests: list[tuple[str, str, bytes]],
            mutations: list[tuple[str, int, int]],
            cuts: list[int],
        ) -> None:
            valid = b"".join(
                build_request(i, method, framing, body, close=False)
                for i, (method, framing, body) in enumerate(requests)
            )
            payload = mutate(valid, mutations)
            trio.from_thread.run(mutated_exchange, server, payload, cuts)

        await in_thread(examples)


# --- HTTP/2 ------------------------------------------------------------------------


def h2_client_bytes(requests: list[tuple[str, bytes]]) -> tuple[h2.connection.H2Connection, bytes]:
    """A fresh client connection and everything it sends for ``requests`` (method, body)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    for index, (method, body) in enumerate(requests):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            stream_id,
            [
                (b":method", method.encode()),
                (b":scheme", b"http"),
                (b":authority", b"testserver"),
                (b":path", f"/s{index}".encode()),
            ],
            end_stream=not body,
        )
        if body:
            conn.send_data(stream_id, body, end_stream=True)
    return conn, conn.data_to_send()


async def h2_exchange(
    server: RunningServer, requests: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    conn, payload = h2_client_bytes(requests)
    statuses: dict[int, int] = {}
    bodies: dict[int, bytearray] = {}
    ended: set[int] = set()
    async with connect(server) as client:
        await send_segmented(client.stream, payload, cuts)
        with trio.fail_after(WAIT):
            while len(ended) < len(requests):
                data = await client.stream.receive_some(65536)
                assert data, f"closed with streams {ended} of {len(requests)} answered"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        raise AssertionError(f"GOAWAY for a valid exchange: {event}")
                await client.send(conn.data_to_send())
        conn.close_connection()
        await client.send(conn.data_to_send())
    stream_ids = sorted(ended)
    assert [(statuses[s], bytes(bodies.get(s, b""))) for s in stream_ids] == [
        (200, f"/s{i}".encode()) for i in range(len(requests))
    ]


h2_request = st.tuples(st.sampled_from(["GET", "POST", "PUT"]), st.binary(max_size=200))


@pytest.mark.parametrize("http", ["h2", "auto"])
async def test_h2_exchange_any_segmentation(http: str) -> None:
    """Invariants 1 and 3 for HTTP/2 (prior knowledge, and detected by ``auto``): every
    stream answered, whatever the segmentation."""
    async with run_server(echo_app, http=http) as server:

        @fuzz_settings
        @given(st.lists(h2_request, min_size=1, max_size=5), segment_cuts)
        def examples(requests: list[tuple[str, bytes]], cuts: list[int]) -> None:
            trio.from_thread.run(h2_exchange, server, requests, cuts)

        await in_thread(examples)


def parse_server_frames(data: bytes) -> list[Frame]:
    """The server's frames; fails if it sent anything that does not parse as frames."""
    frames = []
    view = memoryview(data)
    while view:
        assert len(view) >= 9, f"truncated frame header: {bytes(view)!r}"
        frame, length = Frame.parse_frame_header(view[:9])
        assert len(view) >= 9 + length, "truncated frame"
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


async def h2_mutated_exchange(server: RunningServer, payload: bytes, cuts: list[int]) -> None:
    async with connect(server) as client:
        try:
            await send_segmented(client.stream, payload, cuts)
            await half_close(client)
        except trio.BrokenResourceError:
            pass
        received = await client.read_until_closed()
    frames = parse_server_frames(received)
    for position, frame in enumerate(frames):
        if isinstance(frame, GoAwayFrame) and frame.error_code != 0:
            # A connection error is the server's last word.
            assert position == len(frames) - 1, f"frames after {frame}: {frames[position:]}"
    # A fresh, valid exchange is still served.
    await h2_exchange(server, [("GET", b"")], [])


@pytest.mark.parametrize("http", ["h2", "auto"])
async def test_h2_mutated_frames(http: str) -> None:
    """Invariants 3-4 for HTTP/2: frames after the preface with flipped bytes get
    answers or a GOAWAY and a close; the server's output stays well-formed frames."""
    async with run_server(echo_app, http=http) as server:

        @fuzz_settings
        @given(
            st.lists(h2_request, min_size=1, max_size=3),
            st.lists(
                st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1, max_size=4
            ),
            st.one_of(st.none(), st.integers(0, 1 << 16)),
            segment_cuts,
        )
        def examples(
            requests: list[tuple[str, bytes]],
            flips: list[tuple[int, int]],
            truncate: int | None,
            cuts: list[int],
        ) -> None:
            _, valid = h2_client_bytes(requests)
            frames = bytearray(valid[len(PREFACE) :])
            for where, value in flips:
                frames[where % len(frames)] ^= value
            if truncate is not None:
                del frames[truncate % len(frames) :]
            trio.from_thread.run(h2_mutated_exchange, server, PREFACE + bytes(frames), cuts)

        await in_thread(examples)
