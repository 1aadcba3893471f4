"""The abuse suite: clients that try to exhaust the server, through real loopback sockets.

Each case is bounded in count and in time, and ends by checking that a fresh,
normal request is still served. The server runs in this process, so file
descriptors (``/proc/self/fd``) and resident memory (``/proc/self/status``) are
measured for server and clients together; the clients' share is small and fixed.

What other modules already cover is not repeated here: HTTP/2 rapid reset,
SETTINGS/PING and CONTINUATION floods and invalid prefaces (test_http2_abuse),
zero windows (test_http2_flow), HTTP/3 (test_http3_abuse), plaintext HTTP/1.1 to
a TLS port (test_tls), a WebSocket client that never reads (test_websocket_abandoned)
and a few resets each of many kinds (test_fd_leaks).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from typing import Any

import hpack
import pytest
import trio
from conftest import run_server
from h1_client import (
    WAIT,
    RawClient,
    assert_still_serving,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_fd_count,
    open_small_buffer_stream,
    request,
    reset_on_close,
)
from h2_client import PREFACE, ErrorCodes, get_headers, h2_connect
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from tls_cert import Certificate
from ws_client import Recorder, frame, upgrade
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection

Scope = dict[str, Any]
KiB = 1024
MiB = 1024 * KiB


# Measuring.


def rss() -> int:
    """Resident memory of this process (server and clients), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """Samples RSS in the background while the block runs: the peak growth over the start.

    Sampling (rather than ``tracemalloc``) keeps the server at full speed, and a
    buffer the size of the abuse would be resident for far longer than a sample.
    """

    def __init__(self) -> None:
        self.start = rss()
        self.peak = self.start

    @property
    def growth(self) -> int:
        return self.peak - self.start

    async def sample(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.peak = max(self.peak, rss())
            await trio.sleep(0.01)  # a sampling period; there is nothing to wait on


async def settled_fd_count(ceiling: int, settle: float = 3.0) -> int:
    """The open descriptor count once it is down to ``ceiling``, or after ``settle`` seconds."""
    with trio.move_on_after(settle):
        while open_fd_count() > ceiling:
            await trio.sleep(0.02)  # polls the kernel's count; nothing to wait on instead
    return open_fd_count()


async def timed_request(srv: Any, path: str = "/normal") -> float:
    """Latency of one fresh connection's request, which must succeed."""
    start = trio.current_time()
    async with connect(srv) as client:
        await client.send(request(target=path))
        response = await client.read_response()
    assert response.status == 200, response
    return trio.current_time() - start


class Bystander:
    """A normal client making one request after another on fresh connections while an
    attack runs: the latencies it saw say whether the attacker held the event loop."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.latencies: list[float] = []

    async def run(self) -> None:
        while True:
            self.latencies.append(await timed_request(self.srv))
            await trio.sleep(0.02)

    def assert_unaffected(self, bound: float = 0.3) -> None:
        """A request on loopback takes a few milliseconds; ``bound`` is far above that."""
        assert len(self.latencies) >= 2, f"served during the attack: {self.latencies}"
        assert max(self.latencies) < bound, self.latencies


async def drain(stream: trio.abc.Stream, timeout: float = WAIT) -> bytes:
    """Everything until the server closes (EOF or reset), bounded."""
    data = bytearray()
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(256 * KiB)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def send_ignoring_close(stream: trio.abc.Stream, data: bytes) -> bool:
    """Send what the server still takes; False once it has gone."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def ok_app(scope: Scope, receive: Any, send: Any) -> None:
    """``ok`` to every request, after reading the body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


# Slowloris.

SLOW_CLIENTS = 200
HEAD_TIMEOUT = 0.5


async def test_slowloris_is_cut_off_by_the_head_timeout(serve: Any) -> None:
    """Hundreds of connections trickle a head one byte at a time: each is closed by the head
    deadline (with a 408, or silently), normal clients are served meanwhile without
    delay, and every descriptor is given back."""
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 1000  # never finished
    endings: list[bytes] = []
    latencies: list[float] = []

    async with serve(ok_app, lifespan="off", timeout_request_header=HEAD_TIMEOUT) as srv:
        await timed_request(srv)  # warm-up: whatever opens lazily is in the baseline
        baseline = open_fd_count()

        async def slow_client(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            stream = await trio.open_tcp_stream(srv.host, srv.port)
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:

                    async def trickle() -> None:
                        for byte in head:
                            if not await send_ignoring_close(stream, bytes([byte])):
                                return
                            await trio.sleep(0.05)

                    nursery.start_soon(trickle)
                    endings.append(await drain(stream))
                    nursery.cancel_scope.cancel()
            finally:
                await stream.aclose()

        with trio.fail_after(HEAD_TIMEOUT + 10):
            async with trio.open_nursery() as nursery:
                for _ in range(SLOW_CLIENTS):
                    await nursery.start(slow_client)
                all_open = trio.current_time()
                # Normal clients, while the slow ones hold their connections.
                while len(endings) < SLOW_CLIENTS:
                    latencies.append(await timed_request(srv))
                    await trio.sleep(0.05)
            closed_after = trio.current_time() - all_open

        assert len(endings) == SLOW_CLIENTS
        assert all(not e or e.startswith(b"HTTP/1.1 408 ") for e in endings), {
            e[:30] for e in endings
        }
        # Closed by the head deadline, not by the trickle running out (~50 s).
        assert closed_after < HEAD_TIMEOUT + 3
        assert latencies, "no normal request ran during the attack"
        assert max(latencies) < 0.3, latencies
        assert await settled_fd_count(baseline) <= baseline
        await assert_still_serving(srv)


# Slow readers.

HUGE = 500 * MiB
CHUNK = 64 * KiB


def streaming_app(outcome: Recorder) -> Any:
    """``/huge`` streams 500 MiB generated lazily (one chunk object, sent again and again);
    records how many bytes ``send`` took and how it ended."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] != "/huge":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        headers = [(b"content-length", str(HUGE).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = {"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True}
        sent = 0
        try:
            while sent < HUGE:
                await send(chunk)
                sent += CHUNK
        except OSError as exc:
            outcome.add((sent, exc))
        except trio.Cancelled:
            outcome.add((sent, "cancelled"))
            raise
        else:
            outcome.add((sent, None))

    return app


async def test_slow_reader_of_a_huge_response_is_cut_off_by_the_send_timeout(
    serve: Any,
) -> None:
    outcome = Recorder()
    memory = PeakRss()
    async with serve(streaming_app(outcome), lifespan="off", timeout_send=0.5) as srv:
        with trio.fail_after(WAIT * 2):
            async with trio.open_nursery() as nursery:
                await nursery.start(memory.sample)
                stream = await open_small_buffer_stream(srv, rcvbuf=16 * KiB)
                try:
                    await stream.send_all(request(target="/huge"))
                    # Never read: the app blocks in send() until the send deadline.
                    ((sent, error),) = await outcome.wait_for(len)
                    # Normal clients meanwhile and after.
                    assert await timed_request(srv) < 1.0
                finally:
                    reset_on_close(stream)
                    await stream.aclose()
                nursery.cancel_scope.cancel()
        assert isinstance(error, OSError), error
        assert sent < 32 * MiB, "the server buffered what the client did not read"
        assert memory.growth < 64 * MiB, f"RSS grew by {memory.growth / MiB:.0f} MiB"
        await assert_still_serving(srv)


async def test_graceful_shutdown_meets_its_deadline_with_a_slow_reader_attached(
    serve: Any,
) -> None:
    """The send timeout is long, so only the shutdown deadline can end the stuck response."""
    outcome = Recorder()
    grace = 1.0
    options = {"timeout_send": 60, "timeout_graceful_shutdown": grace, "lifespan": "off"}
    stream: trio.SocketStream | None = None
    try:
        with trio.fail_after(WAIT * 2):
            async with serve(streaming_app(outcome), **options) as srv:
                stream = await open_small_buffer_stream(srv, rcvbuf=16 * KiB)
                await stream.send_all(request(target="/huge"))
                head = RawClient(stream)
                assert (await head.read_head()).status == 200
                await trio.sleep(0.3)  # long enough for the app to block in send()
                assert outcome.items == []
                assert await timed_request(srv) < 1.0
                srv.shutdown()
                asked = trio.current_time()
            took = trio.current_time() - asked
    finally:
        if stream is not None:
            await stream.aclose()
    assert grace <= took < grace + 1.5, took
    ((sent, end),) = outcome.items
    assert end == "cancelled" or isinstance(end, OSError), end
    assert sent < 32 * MiB


# Connection churn with resets half-way.

CHURN = 300
CHURN_BATCH = 25


async def test_connection_churn_with_resets_half_way_leaks_nothing(serve: Any) -> None:
    """A few hundred connections reset (RST, not FIN) mid-head, mid-body and mid-response."""
    started = 0
    ended = 0

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal started, ended
        if scope["type"] != "http":
            return
        started += 1
        try:
            if scope["path"] == "/stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                chunk = {"type": "http.response.body", "body": b"s" * (16 * KiB), "more_body": True}
                with contextlib.suppress(OSError):
                    while True:
                        await send(chunk)
            else:
                await ok_app(scope, receive, send)
        finally:
            ended += 1

    async def one(kind: int) -> None:
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        try:
            if kind == 0:  # mid-head
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Half: ")
                await trio.sleep(0.01)
            elif kind == 1:  # mid-body, the app waiting for the rest
                await stream.send_all(
                    request("POST", "/", headers=[("Content-Length", "100000")]) + b"b" * 500
                )
                await trio.sleep(0.01)
            else:  # mid-response, the app streaming
                await stream.send_all(request(target="/stream"))
                assert await stream.receive_some(1)
        finally:
            reset_on_close(stream)
            await stream.aclose()

    async with serve(app, lifespan="off") as srv:
        await timed_request(srv)
        baseline = open_fd_count()
        with trio.fail_after(30):
            for batch in range(CHURN // CHURN_BATCH):
                async with trio.open_nursery() as nursery:
                    for number in range(CHURN_BATCH):
                        nursery.start_soon(one, (batch + number) % 3)
            # Every app call saw its client go and returned.
            while ended < started:
                await trio.sleep(0.01)
        assert started >= CHURN * 2 // 3
        after = await settled_fd_count(baseline)
        assert after <= baseline, f"{after - baseline} descriptors leaked over {CHURN} resets"
        await assert_still_serving(srv)


# Random and mutated bytes.

FUZZ_CASES = 300
FUZZ_BATCH = 30

SEEDS = [
    request(),
    request("POST", "/upload", headers=[("Content-Type", "text/plain")], body=b"hello world"),
    request(
        "POST", "/c", headers=[("Transfer-Encoding", "chunked")], body=b"5\r\nhello\r\n0\r\n\r\n"
    )
    + request(target="/pipelined"),
    request(headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")]),
    request(headers=[("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")]),
    request(headers=[("Expect", "100-continue"), ("Content-Length", "3")]) + b"abc",
    PREFACE + SettingsFrame(0).serialize(),
    PREFACE
    + SettingsFrame(0).serialize()
    + HeadersFrame(1, hpack.Encoder().encode(get_headers("/h2")), flags={"END_HEADERS"}).serialize()
    + DataFrame(1, b"body", flags={"END_STREAM"}).serialize(),
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits: flipped bits, bytes inserted, removed or repeated, a cut."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        edit = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if edit == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif edit == 1:
            out[at:at] = rng.choice([b"\r\n", b"\n", b"\x00", b" ", b":", b"\xff", b"9" * 20])
        elif edit == 2:
            del out[at : at + rng.randint(1, 8)]
        elif edit == 3:
            out[at:at] = out[at : at + rng.randint(1, 40)] * rng.randint(2, 50)
        else:
            del out[at:]
    return bytes(out)


def fuzz_case(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return rng.randbytes(rng.randint(1, 2000))
    return mutate(rng, rng.choice(SEEDS))


async def test_random_and_mutated_bytes(serve: Any) -> None:
    """Seeded, so a failure replays; each connection sends its bytes, half-closes, and must
    be closed by the server within a bound (no unhandled error: the autouse fixture)."""
    rng = random.Random(1414)
    cases = [fuzz_case(rng) for _ in range(FUZZ_CASES)]
    lingering: list[bytes] = []

    async def one(data: bytes) -> None:
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        try:
            if await send_ignoring_close(stream, data):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_eof()
            with trio.move_on_after(HEAD_TIMEOUT + 3) as waited:
                await drain(stream)
            if waited.cancelled_caught:
                lingering.append(data)
        finally:
            await stream.aclose()

    async with serve(ok_app, lifespan="off", timeout_request_header=HEAD_TIMEOUT) as srv:
        await timed_request(srv)
        baseline = open_fd_count()
        with trio.fail_after(40):
            for start in range(0, FUZZ_CASES, FUZZ_BATCH):
                async with trio.open_nursery() as nursery:
                    for data in cases[start : start + FUZZ_BATCH]:
                        nursery.start_soon(one, data)
                assert await timed_request(srv) < 1.0
        assert lingering == []
        assert await settled_fd_count(baseline) <= baseline
        await assert_still_serving(srv)


# TLS and plaintext crossed.


def client_hello(certificate: Certificate) -> bytes:
    """The first flight of a real TLS client."""
    client = certificate.client_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def test_tls_client_hello_on_a_plaintext_port(serve: Any, certificate: Certificate) -> None:
    async with serve(ok_app, lifespan="off") as srv:
        for _ in range(20):
            async with connect(srv) as client:
                await client.send(client_hello(certificate))
                answer = await client.read_until_closed()
            # Not HTTP: at most an error status, then the close.
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:40]
        await assert_still_serving(srv)


@pytest.mark.parametrize("http", ["auto", "h2"])
async def test_plaintext_http2_preface_on_a_tls_port(http: str, certificate: Certificate) -> None:
    """The reverse (plaintext HTTP/1.1 to TLS) is in test_tls; here the HTTP/2 preface."""
    options = {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile}
    async with run_server(ok_app, lifespan="off", http=http, **options) as srv:
        for _ in range(20):
            async with connect(srv) as client:
                await client.send(PREFACE + SettingsFrame(0).serialize())
                answer = await client.read_until_closed()
            assert not answer.startswith(b"HTTP/"), answer[:40]
            assert PREFACE not in answer
        async with h2_connect(srv, tls=certificate.client_context(["h2"])) as h2:
            assert (await h2.get("/fresh")).status == 200


# WebSocket.


class WsClient:
    """A raw WebSocket client: frames go out as given, the server's are parsed by wsproto."""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self.conn = Connection(ConnectionType.CLIENT)
        self.messages: list[bytes] = []
        self.closes: list[int] = []
        self.eof = False
        self._take(rest)

    @classmethod
    async def open(cls, srv: Any, *, rcvbuf: int | None = None) -> WsClient:
        stream = await open_small_buffer_stream(srv, rcvbuf=rcvbuf)
        return cls(stream, await upgrade(stream, b"/ws"))

    def _take(self, data: bytes | None) -> None:
        self.conn.receive_data(data)
        for event in self.conn.events():
            if isinstance(event, BytesMessage):
                self.messages.append(bytes(event.data))
            elif isinstance(event, CloseConnection):
                self.closes.append(event.code)

    async def read_some(self) -> None:
        try:
            data = await self.stream.receive_some(256 * KiB)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.eof = True
        self._take(data or None)

    async def read_until_closed(self) -> None:
        while not self.eof:
            await self.read_some()


def ws_echo_app(ended: Recorder) -> Any:
    """Echoes binary messages; plain HTTP gets ``ok``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await ok_app(scope, receive, send)
            return
        if scope["type"] != "websocket":
            return
        try:
            await receive()
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] == "websocket.receive":
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
            ended.add(message)
        finally:
            ended.add("returned")

    return app


async def assert_ws_echo_works(srv: Any) -> None:
    with trio.fail_after(WAIT):
        client = await WsClient.open(srv)
        try:
            await client.stream.send_all(frame(0x2, b"fresh"))
            while not client.messages:
                await client.read_some()
                assert not client.eof
            assert client.messages == [b"fresh"]
        finally:
            await client.stream.aclose()


async def flood(
    stream: trio.SocketStream, data: bytes, *, limit: int, stalled: float = 0.5
) -> tuple[int, bool]:
    """Send ``data`` up to ``limit`` times until the server stops taking it for ``stalled``
    seconds or closes: how many were sent, and whether the server closed."""
    sent = 0
    closed = False

    async def send_all() -> None:
        nonlocal sent, closed
        while sent < limit:
            if not await send_ignoring_close(stream, data):
                closed = True
                return
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all)
        seen = -1
        while seen != sent and sent < limit and not closed:
            seen = sent
            await trio.sleep(stalled)
        nursery.cancel_scope.cancel()
    return sent, closed


async def test_websocket_ping_flood_without_reading_the_pongs(serve: Any) -> None:
    """Pings whose pongs are never read: the server must not queue pongs without bound; it
    stops reading (the client's writes stall) or gives up after the send timeout."""
    ended = Recorder()
    ping = frame(0x9, b"p" * 125) * 64
    memory = PeakRss()
    options = {"timeout_send": 0.5, "lifespan": "off", "ws_ping_interval": 60}
    async with serve(ws_echo_app(ended), **options) as srv:
        with trio.fail_after(WAIT * 2):
            async with trio.open_nursery() as nursery:
                await nursery.start(memory.sample)
                client = await WsClient.open(srv, rcvbuf=4 * KiB)
                try:
                    # 64 pings of 131 bytes per write; 20_000 writes would be 166 MB of pongs.
                    sent, _ = await flood(client.stream, ping, limit=20_000)
                    assert sent < 20_000, "the server read every ping"
                    assert await timed_request(srv) < 1.0
                    # Given up once its pong writes are stuck for timeout_send.
                    await ended.wait_for(lambda items: "returned" in items)
                    await drain(client.stream)
                finally:
                    await client.stream.aclose()
                nursery.cancel_scope.cancel()
        assert memory.growth < 64 * MiB, f"RSS grew by {memory.growth / MiB:.0f} MiB"
        await assert_ws_echo_works(srv)
        await assert_still_serving(srv)


async def test_websocket_never_ending_fragmented_message_is_1009(serve: Any) -> None:
    """Continuation frames that never end the message: closed with 1009 at ``ws_max_size``,
    having read little more than that."""
    ended = Recorder()
    max_size = 256 * KiB
    fragment = b"f" * (4 * KiB)
    async with serve(ws_echo_app(ended), lifespan="off", ws_max_size=max_size) as srv:
        with trio.fail_after(WAIT * 2):
            client = await WsClient.open(srv)
            try:
                await client.stream.send_all(frame(0x2, fragment, fin=False))
                async with trio.open_nursery() as nursery:

                    async def read() -> None:
                        await client.read_until_closed()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(read)
                    # 100 MiB of fragments at most; the server closes far earlier.
                    sent, closed = await flood(
                        client.stream, frame(0x0, fragment, fin=False), limit=25_600, stalled=2
                    )
                    assert closed or sent < 25_600
                    await trio.sleep_forever()  # until the reader saw the close
            finally:
                await client.stream.aclose()
            await ended.wait_for(lambda items: "returned" in items)
        # The close frame, then the end of the stream (wsproto calls that 1006).
        assert client.closes[0] == 1009, client.closes
        assert ended.items[0]["code"] == 1009, ended.items
        await assert_ws_echo_works(srv)
        await assert_still_serving(srv)


async def test_websocket_tiny_message_flood(serve: Any) -> None:
    """One-byte messages: each is echoed, in order, and other clients are served without
    delay meanwhile."""
    ended = Recorder()
    count = 5_000
    data = b"".join(frame(0x2, bytes([n % 256])) for n in range(count))
    expected = [bytes([n % 256]) for n in range(count)]
    async with serve(ws_echo_app(ended), lifespan="off") as srv:
        bystander = Bystander(srv)
        with trio.fail_after(WAIT * 3):
            client = await WsClient.open(srv)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(bystander.run)
                    nursery.start_soon(client.stream.send_all, data)
                    while len(client.messages) < len(expected):
                        await client.read_some()
                        assert not client.eof
                    nursery.cancel_scope.cancel()
            finally:
                await client.stream.aclose()
        assert client.messages == expected
        bystander.assert_unaffected()
        await assert_ws_echo_works(srv)
        await assert_still_serving(srv)


async def test_websocket_empty_fragment_flood_is_closed(serve: Any) -> None:
    """Fragments without payload grow no message, so ``ws_max_size`` cannot bound them;
    past ``MAX_EMPTY_FRAGMENTS`` in one message the connection closes with 1008, before
    a flood of them can hold the event loop (closed within a second, not after the
    seconds the whole flood would take)."""
    ended = Recorder()
    count = 200_000  # 1.2 MB
    data = frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * count + frame(0x0, b"end")
    async with serve(ws_echo_app(ended), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await WsClient.open(srv)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_ignoring_close, client.stream, data)
                    await client.read_until_closed()
                    nursery.cancel_scope.cancel()
            finally:
                await client.stream.aclose()
        assert client.messages == []
        # The close frame may be lost to the reset the client's unread flood causes.
        assert client.closes[:1] in ([], [1008], [1006]), client.closes
        items = await ended.wait_for(bool)
        assert items[0]["code"] == 1008, items
        await assert_ws_echo_works(srv)
        await assert_still_serving(srv)


# HTTP/2 floods not in test_http2_abuse.


class H2App:
    """``/upload`` reads its body and counts the messages; anything else answers ``ok``."""

    def __init__(self) -> None:
        self.body_messages = 0
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        if scope["path"] == "/upload":
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                self.body_messages += 1
                if not message.get("more_body"):
                    break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok " + scope["path"].encode()})


async def assert_h2_serving(srv: Any) -> None:
    async with h2_connect(srv) as client:
        result = await client.get("/fresh")
    assert result.status == 200
    assert bytes(result.body) == b"ok /fresh"


H2_FLOOD = 100_000


def cheap_frame(kind: str, stream_id: int) -> bytes:
    """One frame that costs the client 9 to 14 bytes and carries nothing."""
    if kind == "empty-data":
        return DataFrame(stream_id, b"").serialize()
    if kind == "priority":
        return PriorityFrame(stream_id, depends_on=0, stream_weight=16).serialize()
    return WindowUpdateFrame(0, window_increment=1).serialize()


async def cheap_frame_flood(srv: Any, kind: str, bystander: Bystander) -> list[int]:
    """Open an upload stream, send ``H2_FLOOD`` cheap frames on it, then check the connection
    either still serves (the upload ends normally) or was closed; its GOAWAY codes."""
    async with trio.open_nursery() as nursery, h2_connect(srv, raw=True) as client:
        nursery.start_soon(bystander.run)
        upload = client.request(get_headers("/upload", method="POST"), end=False)
        await client.flush()
        batch = cheap_frame(kind, upload) * 1000
        _, closed = await flood(client.sock, batch, limit=H2_FLOOD // 1000)
        if not closed and not client.closed:
            # Answered once every frame before it was handled: the whole backlog.
            after = await client.get("/after", timeout=WAIT * 2)
            if after.status is not None:
                assert bytes(after.body) == b"ok /after"
                client.queue_frame(DataFrame(upload, b"end", flags={"END_STREAM"}))
                result = await client.response(upload)
                assert bytes(result.body) == b"ok /upload"
        if client.goaways or client.closed:
            await client.until_closed()
        nursery.cancel_scope.cancel()
        return client.goaway_codes()


H2_KINDS = ["empty-data", "priority", "window-update"]


@pytest.mark.parametrize("kind", H2_KINDS)
async def test_h2_cheap_frame_flood_leaves_the_server_serving(kind: str) -> None:
    """CVE-2019-9518 (empty frames) and its kin: frames that cost the client nothing and are
    not flow controlled. The server survives, other clients are served meanwhile, and
    the app is not woken once per empty frame."""
    app = H2App()
    async with run_server(app, lifespan="off") as srv:
        bystander = Bystander(srv)
        with trio.fail_after(WAIT * 4):
            codes = await cheap_frame_flood(srv, kind, bystander)
        assert all(code == ErrorCodes.ENHANCE_YOUR_CALM for code in codes), codes
        assert app.body_messages < 1000, f"{app.body_messages} empty body messages"
        bystander.assert_unaffected(bound=1.0)
        await assert_h2_serving(srv)


@pytest.mark.parametrize("kind", H2_KINDS)
async def test_h2_cheap_frame_flood_is_calmed(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """As PING and SETTINGS floods are (``CONTROL_FRAME_LIMIT``), a flood of frames that
    carry nothing ends with ENHANCE_YOUR_CALM instead of being processed in full. (The
    client, still sending, may lose the GOAWAY to the reset its unread bytes cause, so
    the server's own account is what is checked.)"""
    app = H2App()
    with caplog.at_level(logging.WARNING, logger="palfrey.error"):
        async with run_server(app, lifespan="off") as srv:
            with trio.fail_after(WAIT * 4):
                codes = await cheap_frame_flood(srv, kind, Bystander(srv))
    assert codes in ([], [ErrorCodes.ENHANCE_YOUR_CALM]), codes
    assert any("too many control or empty frames" in r.getMessage() for r in caplog.records)


async def test_h2_hpack_bomb() -> None:
    """A 4 KB header put in the HPACK table once, then referenced 10 000 times by one-byte
    indexes: a 14 KB header block that decodes to 40 MB. Refused by the header list limit
    (431 or a connection error), without the memory ever being spent."""
    app = H2App()
    memory = PeakRss()
    async with run_server(app, lifespan="off") as srv:
        with trio.fail_after(WAIT * 2):
            async with trio.open_nursery() as nursery:
                await nursery.start(memory.sample)
                async with h2_connect(srv, raw=True) as client:
                    await client.run_until(lambda: client.settings_acked)
                    encoder = hpack.Encoder()
                    block = encoder.encode([*get_headers("/bomb"), (b"x-bomb", b"b" * 4000)])
                    # The newest dynamic entry is index 62: one byte (0x80 | 62) each.
                    block += b"\xbe" * 10_000
                    stream_id = client.next_stream_id()
                    await client.send_raw(
                        HeadersFrame(
                            stream_id, block, flags={"END_HEADERS", "END_STREAM"}
                        ).serialize()
                    )
                    await client.run_until(
                        lambda: client.closed or stream_id in client.streams, timeout=WAIT
                    )
                    if client.closed:
                        assert client.goaway_codes()[-1] != ErrorCodes.NO_ERROR
                    else:
                        result = await client.response(stream_id)
                        assert result.status == 431 or result.reset is not None
                nursery.cancel_scope.cancel()
        assert "/bomb" not in app.paths
        assert memory.growth < 32 * MiB, f"RSS grew by {memory.growth / MiB:.0f} MiB"
        await assert_h2_serving(srv)
