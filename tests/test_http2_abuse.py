"""HTTP/2 clients that misbehave: floods, malformed requests, frames out of place.

Each attack is made on its own connection with the raw h2 client (frames built
by hand), and each test then checks that the server still answers a fresh
connection; a stream error must leave its connection serving, too.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from conftest import RunningServer, run_server
from h1_client import (
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
)
from h2_client import (
    PREFACE,
    ErrorCodes,
    H2Client,
    continuation_frame,
    get_headers,
    h2_connect,
    parse_frames,
)
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from palfrey.transport.http2 import CONTROL_FRAME_LIMIT, RESET_LIMIT

Scope = dict[str, Any]


class App:
    """Records the paths it served; ``/wait`` waits until the stream goes away."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.started.append(scope["path"])
        if scope["path"] == "/wait":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok " + scope["path"].encode()})


async def assert_h2_serving(srv: RunningServer) -> None:
    """A fresh HTTP/2 connection gets an answer."""
    async with h2_connect(srv) as client:
        result = await client.get("/fresh")
    assert result.status == 200
    assert bytes(result.body) == b"ok /fresh"


def request_frames(client: H2Client, count: int, *, reset: bool) -> bytes:
    """``count`` new GET streams, each reset straight away if ``reset``."""
    frames = bytearray()
    for _ in range(count):
        stream_id = client.next_stream_id()
        frames += client.headers_frame(stream_id, get_headers("/rr"), end=True).serialize()
        if reset:
            frames += RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL).serialize()
    return bytes(frames)


async def settled(client: H2Client) -> None:
    """Wait until the SETTINGS exchange is over, then answer no more control frames: a
    client in the middle of a header block may send nothing else."""
    await client.run_until(lambda: client.server_settings and client.settings_acked)
    client.answer_control = False


# Floods.


async def test_rapid_reset_gets_enhance_your_calm() -> None:
    """CVE-2023-44487: streams opened and reset at once, thousands of them."""
    app = App()
    async with run_server(app) as srv:
        async with h2_connect(srv, raw=True) as client:
            await client.send_raw(request_frames(client, 3000, reset=True))
            await client.until_closed()
            assert client.goaway_codes()[-1] == ErrorCodes.ENHANCE_YOUR_CALM
        # The connection ended soon after the budget ran out, not after every stream.
        assert len(app.started) <= RESET_LIMIT * 2
        await assert_h2_serving(srv)


async def test_refused_streams_count_as_resets() -> None:
    """Streams opened over the concurrency limit only to be refused cost as much."""
    app = App()
    async with run_server(app, h2_max_concurrent_streams=1) as srv:
        async with h2_connect(srv, raw=True) as client:
            waiting = client.request(get_headers("/wait"), end=False)
            await client.run_until(lambda: app.started == ["/wait"])
            await client.send_raw(request_frames(client, 1000, reset=False))
            await client.until_closed()
            assert client.goaway_codes()[-1] == ErrorCodes.ENHANCE_YOUR_CALM
            refused = [s for s in client.streams.values() if s.reset == ErrorCodes.REFUSED_STREAM]
            # The budget is checked after each read, so all the streams of the read that
            # crossed it may be refused before the GOAWAY.
            assert len(refused) > RESET_LIMIT
            assert waiting not in [s.stream_id for s in refused]
        assert app.started == ["/wait"]
        await assert_h2_serving(srv)


async def test_resets_under_the_budget_are_fine() -> None:
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        await client.send_raw(request_frames(client, RESET_LIMIT // 2, reset=True))
        result = await client.get("/after")
        assert bytes(result.body) == b"ok /after"
        assert client.goaways == []


async def test_continuation_flood_is_a_connection_error() -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end the block:
    h2 stops buffering after 64 frames."""
    app = App()
    async with run_server(app) as srv:
        async with h2_connect(srv, raw=True) as client:
            await settled(client)
            stream_id = client.next_stream_id()
            head = client.headers_frame(stream_id, get_headers("/cont"), end_headers=False)
            # Small frames, so that all of them are read: the bound is on their number.
            flood = b"".join(
                continuation_frame(stream_id, b"\x40\x03abc\x03def" * 10) for _ in range(1000)
            )
            await client.send_raw(head.serialize() + flood)
            await client.until_closed()
            assert client.goaways
            assert client.goaway_codes()[-1] != ErrorCodes.NO_ERROR
        assert app.started == []
        await assert_h2_serving(srv)


async def test_unfinished_header_block_times_out(autojump_clock: trio.testing.MockClock) -> None:
    """A header block that never ends does not hold the connection past the head deadline."""
    app = App()
    async with run_server(app, timeout_request_header=5) as srv:
        async with h2_connect(srv, raw=True) as client:
            await settled(client)
            stream_id = client.next_stream_id()
            head = client.headers_frame(stream_id, get_headers("/cont"), end_headers=False)
            await client.send_raw(head.serialize())
            start = trio.current_time()
            await client.until_closed(timeout=30)
            assert trio.current_time() - start == pytest.approx(5, abs=1)
        assert app.started == []
        await assert_h2_serving(srv)


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_control_frame_flood_from_a_client_that_does_not_read(kind: str) -> None:
    """Thousands of PING or SETTINGS frames while not reading, then reading: what the server
    queued is bounded, and the connection is closed with ENHANCE_YOUR_CALM."""
    app = App()
    count = CONTROL_FRAME_LIMIT * 5
    if kind == "ping":
        frame = PingFrame(0, opaque_data=b"flooding").serialize()
        answer = 17  # a PING ACK
    else:
        frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
        answer = 9  # a SETTINGS ACK
    async with run_server(app) as srv:
        async with h2_connect(srv, raw=True) as client:
            client.answer_control = False
            with trio.move_on_after(2):
                await client.send_raw(frame * count)
            await trio.sleep(0.3)  # not reading meanwhile
            await client.until_closed()
            assert client.goaway_codes()[-1] == ErrorCodes.ENHANCE_YOUR_CALM
            acks = [f for f in client.frames if type(f).__name__ == f"{kind.title()}Frame"]
            acks = [f for f in acks if "ACK" in f.flags]
            # The budget is checked after each read (up to 64 KiB), so the answers are
            # bounded by the budget plus one read's worth of frames, not by the flood.
            assert len(acks) <= CONTROL_FRAME_LIMIT + 65536 // len(frame) + 1
            assert len(acks) * answer <= 64 * 1024 + CONTROL_FRAME_LIMIT * answer
        await assert_h2_serving(srv)


async def test_control_frames_under_the_budget_are_fine() -> None:
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        await client.send_raw(PingFrame(0, opaque_data=b"12345678").serialize() * 500)
        result = await client.get("/after")
        assert bytes(result.body) == b"ok /after"
        assert client.goaways == []


# Frames out of place.


async def test_data_after_the_response_is_complete() -> None:
    """The app answered without reading the body; the server ends the stream (RST_STREAM
    NO_ERROR) and DATA the client sends after that is discarded, not a connection error."""
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        stream_id = client.request(get_headers("/early", method="POST"), end=False)
        result = await client.response(stream_id)
        assert bytes(result.body) == b"ok /early"
        await client.run_until(lambda: result.reset is not None, timeout=1)
        assert result.reset == ErrorCodes.NO_ERROR
        for _ in range(10):
            client.queue_frame(DataFrame(stream_id, b"x" * 10000))
        client.queue_frame(DataFrame(stream_id, b"end", flags={"END_STREAM"}))
        after = await client.get("/after")
        assert bytes(after.body) == b"ok /after"
        assert client.goaways == []
        assert not client.closed


async def test_data_on_a_stream_closed_both_ways() -> None:
    """DATA on a stream that ended both ways: RST_STREAM STREAM_CLOSED (RFC 9113 §5.1, a
    stream error here), and the connection goes on."""
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        stream_id = client.request(get_headers("/done"))
        result = await client.response(stream_id)
        assert result.ended
        client.queue_frame(DataFrame(stream_id, b"late", flags={"END_STREAM"}))
        await client.run_until(lambda: result.reset is not None)
        assert result.reset == ErrorCodes.STREAM_CLOSED
        after = await client.get("/after")
        assert bytes(after.body) == b"ok /after"
        assert client.goaways == []


async def test_window_update_overflow_is_a_flow_control_error() -> None:
    app = App()
    async with run_server(app) as srv:
        async with h2_connect(srv, raw=True) as client:
            client.queue_frame(WindowUpdateFrame(0, window_increment=2**31 - 1))
            await client.flush()
            await client.until_closed()
            assert client.goaway_codes()[-1] == ErrorCodes.FLOW_CONTROL_ERROR
        await assert_h2_serving(srv)


# Requests no app sees.


async def test_plain_connect_is_501_and_the_connection_goes_on() -> None:
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        headers = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
        result = await client.response(client.request(headers, end=False))
        assert result.status == 501
        assert bytes((await client.get("/after")).body) == b"ok /after"
        assert app.started == ["/after"]


@pytest.mark.parametrize("protocol", [b"h2c", b"connect-udp", b"WebSocket"])
async def test_extended_connect_other_than_websocket_is_refused(protocol: bytes) -> None:
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        await client.run_until(lambda: client.server_settings)
        headers = get_headers("/tunnel", method="CONNECT", extra=[(b":protocol", protocol)])
        # Pseudo-headers first: move :protocol up.
        headers = [*headers[:4], headers[4]]
        headers.insert(1, headers.pop())
        result = await client.response(client.request(headers, end=False))
        assert result.status == 501
        assert bytes((await client.get("/after")).body) == b"ok /after"
        assert app.started == ["/after"]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([(b"X-Upper", b"1")], id="uppercase-name"),
        pytest.param([(b"connection", b"keep-alive")], id="connection"),
        pytest.param([(b"keep-alive", b"timeout=5")], id="keep-alive"),
        pytest.param([(b"transfer-encoding", b"chunked")], id="transfer-encoding"),
        pytest.param([(b"upgrade", b"websocket")], id="upgrade"),
        pytest.param([(b"proxy-connection", b"keep-alive")], id="proxy-connection"),
        pytest.param([(b"te", b"gzip")], id="te-gzip"),
        pytest.param([(b":unknown", b"x")], id="unknown-pseudo"),
        pytest.param([(b"x-bad", b"a\r\nb")], id="crlf-in-value"),
        pytest.param([(b"x-bad", b" padded")], id="leading-space"),
    ],
)
async def test_malformed_request_is_a_protocol_error(fields: list[tuple[bytes, bytes]]) -> None:
    app = App()
    async with run_server(app) as srv:
        async with h2_connect(srv, raw=True) as client:
            pseudo = fields[0][0].startswith(b":")
            headers = [*fields, *get_headers("/bad")] if pseudo else [*get_headers("/bad"), *fields]
            result = await client.response(client.request(headers))
            if client.goaways:
                assert client.goaway_codes()[-1] == ErrorCodes.PROTOCOL_ERROR
            else:
                assert result.reset == ErrorCodes.PROTOCOL_ERROR
                assert result.headers is None
                # A stream error: the connection goes on.
                assert bytes((await client.get("/after")).body) == b"ok /after"
        assert "/bad" not in app.started
        await assert_h2_serving(srv)


async def test_te_trailers_is_allowed() -> None:
    app = App()
    async with run_server(app) as srv, h2_connect(srv, raw=True) as client:
        result = await client.get("/te", extra=[(b"te", b"trailers")])
        assert bytes(result.body) == b"ok /te"


@pytest.mark.parametrize(
    ("declared", "sent"),
    [(10, b"short"), (3, b"too long"), (0, b"x")],
    ids=["body-shorter", "body-longer", "zero-declared"],
)
async def test_content_length_mismatch_is_a_protocol_error(declared: int, sent: bytes) -> None:
    app = App()
    async with run_server(app) as srv:
        async with h2_connect(srv, raw=True) as client:
            headers = get_headers(
                "/wait", method="POST", extra=[(b"content-length", str(declared).encode())]
            )
            result = await client.response(client.request(headers, sent))
            if client.goaways:
                assert client.goaway_codes()[-1] == ErrorCodes.PROTOCOL_ERROR
            else:
                assert result.reset == ErrorCodes.PROTOCOL_ERROR
                assert bytes((await client.get("/after")).body) == b"ok /after"
        await assert_h2_serving(srv)


# Not HTTP/2 at all.


@pytest.mark.parametrize(
    "preface",
    [
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", id="bad-magic"),
        pytest.param(PREFACE + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00", id="no-settings-first"),
        pytest.param(
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32, id="tls-hello"
        ),
    ],
)
async def test_invalid_preface_in_h2_mode_is_goaway_or_close(preface: bytes) -> None:
    app = App()
    async with run_server(app, http="h2") as srv:
        async with connect(srv) as raw:
            await raw.send(preface)
            data = await raw.read_until_closed()
            assert not data.startswith(b"HTTP/")
            goaways = [f for f in parse_frames(data) if isinstance(f, GoAwayFrame)]
            if goaways:
                assert goaways[-1].error_code == ErrorCodes.PROTOCOL_ERROR
        assert app.started == []
        await assert_h2_serving(srv)


async def test_invalid_preface_in_auto_mode_is_an_http1_error() -> None:
    """In ``auto`` mode, bytes that are not exactly the preface are HTTP/1.1."""
    app = App()
    async with run_server(app) as srv:
        async with connect(srv) as raw:
            await raw.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
            response = await raw.read_response()
            assert response.http_version == b"HTTP/1.1"
            assert 400 <= response.status <= 505
        await assert_h2_serving(srv)


async def test_preface_split_into_single_bytes() -> None:
    """A preface dribbled byte by byte is still recognised in ``auto`` mode."""
    app = App()
    async with run_server(app) as srv, connect(srv) as raw:
        for byte in PREFACE:
            await raw.send(bytes([byte]))
            await trio.sleep(0)
        client = H2Client(raw.stream, raw=True)
        await client.send_raw(SettingsFrame(0).serialize())
        result = await client.get("/dribble")
        assert bytes(result.body) == b"ok /dribble"


async def test_headers_on_stream_zero_and_even_stream() -> None:
    """HEADERS on stream 0, or on a server-initiated (even) id: connection errors."""
    app = App()
    async with run_server(app) as srv:
        for stream_id in (0, 2):
            async with h2_connect(srv, raw=True) as client:
                frame = client.headers_frame(1, get_headers("/bad")).serialize()
                # hyperframe refuses to build a HEADERS frame on stream 0: patch the id.
                frame = frame[:5] + stream_id.to_bytes(4, "big") + frame[9:]
                await client.send_raw(frame)
                await client.until_closed()
                assert client.goaway_codes()[-1] == ErrorCodes.PROTOCOL_ERROR
        assert app.started == []
        await assert_h2_serving(srv)
