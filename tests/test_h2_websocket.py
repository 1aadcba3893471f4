"""WebSockets over HTTP/2 (RFC 8441), seen by a raw h2 client speaking wsproto on its streams."""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trio
import trio.testing
from conftest import RunningServer, run_server
from hyperframe.frame import Frame, GoAwayFrame
from tls_cert import Certificate
from ws_client import WAIT, Recorder
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import client_extensions_handshake

SettingCodes = h2.settings.SettingCodes
ErrorCodes = h2.errors.ErrorCodes


class H2Client:
    """An HTTP/2 client over a trio socket: one reader task sorts events by stream."""

    def __init__(self, sock: trio.abc.Stream) -> None:
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.queues: dict[int, trio.MemorySendChannel[Any]] = {}
        self.settings_received = trio.Event()
        self.goaways: list[GoAwayFrame] = []
        self._buffer = b""
        self.goaway_received = trio.Event()
        self.closed = trio.Event()
        self._sending = trio.Lock()

    async def start(self, nursery: trio.Nursery) -> None:
        self.conn.initiate_connection()  # the preface: h2c with prior knowledge
        await self.flush()
        nursery.start_soon(self._read)
        await self.settings_received.wait()

    @property
    def server_settings(self) -> h2.settings.Settings:
        return self.conn.remote_settings

    async def flush(self) -> None:
        async with self._sending:
            data = self.conn.data_to_send()
            if data:
                await self.sock.send_all(data)

    async def _read(self) -> None:
        try:
            while True:
                try:
                    data = await self.sock.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    return
                for event in self._receive(data):
                    if isinstance(event, h2.events.RemoteSettingsChanged):
                        self.settings_received.set()
                    stream_id = getattr(event, "stream_id", None)
                    if stream_id in self.queues:
                        self.queues[stream_id].send_nowait(event)
                await self.flush()
        finally:
            self.closed.set()
            for queue in self.queues.values():
                queue.close()

    def _receive(self, data: bytes) -> list[Any]:
        """Feed whole frames to h2, except GOAWAY: h2 would reject every frame after one
        (python-hyper/h2#1199), and the streams below it are still being answered."""
        self._buffer += data
        events: list[Any] = []
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            frame, self._buffer = self._buffer[: 9 + length], self._buffer[9 + length :]
            if frame[3] == GoAwayFrame.type:
                goaway, _ = Frame.parse_frame_header(memoryview(frame[:9]))
                goaway.parse_body(memoryview(frame[9:]))
                self.goaways.append(goaway)
                self.goaway_received.set()
            else:
                events += self.conn.receive_data(frame)
        return events

    async def request(
        self, headers: list[tuple[bytes, bytes]], *, end: bool = True
    ) -> tuple[int, trio.MemoryReceiveChannel[Any]]:
        stream_id = self.conn.get_next_available_stream_id()
        send, receive = trio.open_memory_channel[Any](math.inf)
        self.queues[stream_id] = send
        self.conn.send_headers(stream_id, headers, end_stream=end)
        await self.flush()
        return stream_id, receive

    async def get(self, path: str = "/") -> tuple[int, bytes]:
        stream_id, events = await self.request(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"example.com"),
                (b":path", path.encode()),
            ]
        )
        status, body = 0, b""
        async for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                break
        return status, body

    async def websocket(
        self,
        path: str = "/",
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        version: bytes = b"13",
        deflate: bool = False,
        scheme: bytes = b"http",
    ) -> WSStream:
        """Send an extended CONNECT and wait for its response head."""
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", scheme),
            (b":authority", b"example.com"),
            (b":path", path.encode()),
            (b"sec-websocket-version", version),
            *(headers or []),
        ]
        offered = [PerMessageDeflate()] if deflate else []
        if deflate:
            offer = f"{PerMessageDeflate.name}; {offered[0].offer()}"
            fields.append((b"sec-websocket-extensions", offer.encode()))
        stream_id, events = await self.request(fields, end=False)
        stream = WSStream(self, stream_id, events)
        event = await events.receive()
        assert isinstance(event, h2.events.ResponseReceived), event
        stream.headers = [(name, value) for name, value in event.headers]
        stream.status = int(dict(stream.headers)[b":status"])
        if stream.status == 200:
            accepted = [
                value.decode()
                for name, value in stream.headers
                if name == b"sec-websocket-extensions"
            ]
            stream.ws = Connection(
                ConnectionType.CLIENT, client_extensions_handshake(accepted, offered)
            )
        return stream


class WSStream:
    """One extended CONNECT stream: wsproto's client connection over its DATA."""

    def __init__(
        self, client: H2Client, stream_id: int, events: trio.MemoryReceiveChannel[Any]
    ) -> None:
        self.client = client
        self.stream_id = stream_id
        self.events = events
        self.ws: Connection | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.raw = b""
        self.ended = False
        self.reset: h2.events.StreamReset | None = None
        self._pending: deque[Any] = deque()

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)

    async def send(self, event: Any) -> None:
        assert self.ws is not None
        await self.send_raw(self.ws.send(event))

    async def send_raw(self, data: bytes, end: bool = False) -> None:
        """Send as the server's windows allow (polling them: this is a test)."""
        conn = self.client.conn
        while True:
            size = min(
                len(data),
                conn.local_flow_control_window(self.stream_id),
                conn.max_outbound_frame_size,
            )
            if size or not data:
                last = size == len(data)
                conn.send_data(self.stream_id, data[:size], end_stream=end and last)
                await self.client.flush()
                data = data[size:]
                if last:
                    return
            else:
                await trio.sleep(0.005)

    @property
    def window(self) -> int:
        """What the server's windows let this stream send now."""
        return self.client.conn.local_flow_control_window(self.stream_id)

    async def _pump(self) -> bool:
        """Take one h2 event for the stream; False once it ended or was reset."""
        event = await self.events.receive()
        if isinstance(event, h2.events.DataReceived):
            self.raw += event.data
            self.client.conn.acknowledge_received_data(event.flow_controlled_length, self.stream_id)
            await self.client.flush()
            if self.ws is not None and event.data:
                self.ws.receive_data(event.data)
                self._pending.extend(self.ws.events())
        elif isinstance(event, h2.events.StreamEnded):
            self.ended = True
            return False
        elif isinstance(event, h2.events.StreamReset):
            self.reset = event
            return False
        return True

    async def receive(self) -> Any:
        """The next wsproto event; pings are answered and skipped unless ``pings``."""
        while not self._pending:
            if not await self._pump():
                raise AssertionError(f"stream over: ended={self.ended} reset={self.reset}")
        return self._pending.popleft()

    async def message(self) -> str | bytes:
        """The next whole message (wsproto hands it over in parts as they arrive)."""
        parts = []
        while True:
            event = await self.receive()
            assert isinstance(event, Message), event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts) if isinstance(event.data, str) else b"".join(parts)

    async def body(self) -> bytes:
        """The whole response body of a refused handshake."""
        while await self._pump():
            pass
        return self.raw

    async def until_end(self) -> None:
        """Read until END_STREAM or RST_STREAM, answering what needs an answer."""
        while await self._pump():
            pass


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if the server logged an error (a crash, or the test app failing)."""
    with caplog.at_level(logging.ERROR, logger="palfrey.error"):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [(r.getMessage(), r.exc_info) for r in errors]


@asynccontextmanager
async def h2_client(
    srv: RunningServer, tls: ssl.SSLContext | None = None
) -> AsyncIterator[H2Client]:
    """A connected client for the block (h2c with prior knowledge, or h2 over TLS by ALPN);
    its socket is closed at the end."""
    sock: trio.abc.Stream = await trio.open_tcp_stream(srv.host, srv.port)
    if tls is not None:
        sock = trio.SSLStream(sock, tls, server_hostname="localhost")
        await sock.do_handshake()
        assert sock.selected_alpn_protocol() == "h2"
    async with sock, trio.open_nursery() as nursery:
        client = H2Client(sock)
        await client.start(nursery)
        yield client
        nursery.cancel_scope.cancel()


def app_for(seen: Recorder) -> Any:
    """Echo at ``/``; other paths exercise one behaviour each. Disconnects are recorded."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(
                {"type": "http.response.body", "body": b"plain " + scope["http_version"].encode()}
            )
            return
        if scope["type"] != "websocket":
            return
        seen.add(("scope", scope))
        assert (await receive())["type"] == "websocket.connect"
        path = scope["path"]
        if path == "/deny":
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"entry"})
            return
        subprotocols = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": subprotocols[-1] if subprotocols else None,
                "headers": [(b"x-app", b"yes")],
            }
        )
        if path == "/close":
            await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
            seen.add(await receive())
            return
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                seen.add(message)
                return
            await send(
                {
                    "type": "websocket.send",
                    "bytes": message.get("bytes"),
                    "text": message.get("text"),
                }
            )

    return app


def disconnects(items: list[Any]) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)]


@pytest.fixture(params=["auto", "h2"])
def http(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_echo_text_and_bytes_and_scope(http: str) -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http=http) as srv, h2_client(srv) as client:
            assert client.server_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
            ws = await client.websocket("/?q=1")
            assert ws.status == 200
            assert ws.header(b"x-app") == b"yes"
            # The HTTP/1.1 handshake fields have no place in HTTP/2 (RFC 8441 §5).
            for name in (b"upgrade", b"connection", b"sec-websocket-accept"):
                assert ws.header(name) is None
            assert ws.header(b"sec-websocket-extensions") is None
            await ws.send(TextMessage("héllo"))
            assert await ws.message() == "héllo"
            await ws.send(BytesMessage(b"\x00\xff" * 1000))
            assert await ws.message() == b"\x00\xff" * 1000
            await ws.send(CloseConnection(1000))
            assert isinstance(await ws.receive(), CloseConnection)
            await ws.until_end()
            assert ws.ended and ws.reset is None
            scope = (await seen.wait_for(lambda items: len(items) >= 2))[0][1]
    assert scope["type"] == "websocket"
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/"
    assert scope["query_string"] == b"q=1"
    assert scope["subprotocols"] == []
    assert "method" not in scope
    assert "websocket.http.response" in scope["extensions"]
    assert (b"host", b"example.com") in scope["headers"]


async def test_permessage_deflate() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket(deflate=True)
            assert ws.status == 200
            extensions = ws.header(b"sec-websocket-extensions")
            assert extensions is not None and extensions.startswith(b"permessage-deflate")
            text = "compress me " * 500
            await ws.send(TextMessage(text))
            assert await ws.message() == text
            # The echo came back compressed: RSV1 set, and far smaller than the text.
            assert ws.raw[0] & 0x40
            assert len(ws.raw) < len(text) // 10
            await ws.send(BytesMessage(b"x" * 100_000))
            assert await ws.message() == b"x" * 100_000


async def test_deflate_not_negotiated_when_disabled() -> None:
    with trio.fail_after(WAIT):
        async with (
            run_server(app_for(Recorder()), http="h2", ws_per_message_deflate=False) as srv,
            h2_client(srv) as client,
        ):
            ws = await client.websocket(deflate=True)
            assert ws.header(b"sec-websocket-extensions") is None
            await ws.send(TextMessage("plain"))
            assert await ws.message() == "plain"


async def test_subprotocol_selection() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket(headers=[(b"sec-websocket-protocol", b"chat, superchat")])
            assert ws.header(b"sec-websocket-protocol") == b"superchat"
            scope = (await seen.wait_for(bool))[0][1]
    assert scope["subprotocols"] == ["chat", "superchat"]


async def test_denial_response() -> None:
    with trio.fail_after(WAIT):
        async with run_server(app_for(Recorder()), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket("/deny")
            assert ws.status == 403
            assert ws.header(b"content-type") == b"text/plain"
            assert await ws.body() == b"no entry"
            assert ws.ended
            # The connection serves on.
            assert await client.get() == (200, b"plain 2")


@pytest.mark.parametrize(
    ("version", "status"), [(b"8", 426), (b"", 426)], ids=["version-8", "empty-version"]
)
async def test_bad_handshake_is_refused_without_the_app(version: bytes, status: int) -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket(version=version)
            assert ws.status == status
            assert ws.header(b"sec-websocket-version") == b"13"
            assert ws.header(b"upgrade") is None
            await ws.body()
            assert ws.ended
            assert await client.get() == (200, b"plain 2")
    assert seen.items == []


async def test_app_closes_with_code_and_reason() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket("/close")
            event = await ws.receive()
            assert isinstance(event, CloseConnection)
            assert (event.code, event.reason) == (4001, "bye")
            await ws.send(event.response())
            await ws.until_end()
            assert ws.ended and ws.reset is None
            disconnect = disconnects(await seen.wait_for(lambda items: len(items) >= 2))[0]
    assert disconnect == {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}


async def test_client_closes_with_code_and_reason() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket()
            await ws.send(CloseConnection(4002, "done"))
            event = await ws.receive()
            assert isinstance(event, CloseConnection)
            assert (event.code, event.reason) == (4002, "done")
            await ws.until_end()
            assert ws.ended and ws.reset is None
            disconnect = disconnects(await seen.wait_for(lambda items: len(items) >= 2))[0]
    assert disconnect == {"type": "websocket.disconnect", "code": 4002, "reason": "done"}


async def test_message_over_max_size_is_1009() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with (
            run_server(app_for(seen), http="h2", ws_max_size=1024) as srv,
            h2_client(srv) as client,
        ):
            ws = await client.websocket()
            await ws.send(BytesMessage(b"a" * 1024))
            assert await ws.message() == b"a" * 1024
            await ws.send(BytesMessage(b"a" * 1025))
            event = await ws.receive()
            assert isinstance(event, CloseConnection)
            assert event.code == 1009
            await ws.until_end()
            disconnect = disconnects(await seen.wait_for(lambda items: len(items) >= 2))[0]
    assert disconnect["code"] == 1009


async def test_two_websockets_and_a_get_on_one_connection() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            first = await client.websocket()
            second = await client.websocket()
            assert first.stream_id != second.stream_id
            await first.send(TextMessage("one"))
            await second.send(TextMessage("two"))
            assert await client.get() == (200, b"plain 2")
            assert await second.message() == "two"
            assert await first.message() == "one"
            for index in range(20):
                await first.send(TextMessage(f"a{index}"))
                await second.send(BytesMessage(f"b{index}".encode()))
            for index in range(20):
                assert await first.message() == f"a{index}"
                assert await second.message() == f"b{index}".encode()


async def test_rst_stream_is_1006_and_other_streams_go_on() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            doomed = await client.websocket()
            survivor = await client.websocket()
            client.conn.reset_stream(doomed.stream_id, ErrorCodes.CANCEL)
            await client.flush()
            disconnect = disconnects(
                await seen.wait_for(lambda items: len(disconnects(items)) >= 1)
            )
            assert disconnect == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
            await survivor.send(TextMessage("still here"))
            assert await survivor.message() == "still here"
            assert await client.get() == (200, b"plain 2")


async def test_server_shutdown_closes_1012_and_sends_goaway() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket()
            await ws.send(TextMessage("before"))
            assert await ws.message() == "before"
            srv.shutdown()
            event = await ws.receive()
            assert isinstance(event, CloseConnection)
            assert event.code == 1012
            await ws.send(event.response())
            await ws.until_end()
            assert ws.ended
            await client.goaway_received.wait()
            assert all(goaway.error_code == ErrorCodes.NO_ERROR for goaway in client.goaways)
            disconnect = disconnects(await seen.wait_for(lambda items: len(items) >= 2))[0]
            await client.closed.wait()
    assert disconnect["code"] == 1012


async def test_pings_are_sent_on_the_stream() -> None:
    with trio.fail_after(WAIT):
        async with (
            run_server(app_for(Recorder()), http="h2", ws_ping_interval=0.05) as srv,
            h2_client(srv) as client,
        ):
            ws = await client.websocket()
            event = await ws.receive()
            assert isinstance(event, Ping)
            await ws.send(event.response())
            await ws.send(TextMessage("after the ping"))
            while isinstance(event := await ws.receive(), Ping):
                await ws.send(event.response())
            assert isinstance(event, TextMessage) and event.data == "after the ping"


async def test_unanswered_ping_is_1011_and_reset() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with (
            run_server(app_for(seen), http="h2", ws_ping_interval=0.05, ws_ping_timeout=0.1) as srv,
            h2_client(srv) as client,
        ):
            ws = await client.websocket()
            assert isinstance(await ws.receive(), Ping)  # never answered
            event = await ws.receive()
            assert isinstance(event, CloseConnection) and event.code == 1011
            await ws.until_end()
            assert ws.reset is not None and ws.reset.error_code == ErrorCodes.CANCEL
            disconnect = disconnects(await seen.wait_for(lambda items: len(items) >= 2))[0]
    assert disconnect["code"] == 1011


async def test_ws_none_refuses_extended_connect() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2", ws="none") as srv, h2_client(srv) as client:
            assert not client.server_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL)
            ws = await client.websocket()
            assert ws.status == 501
            await ws.body()
            assert await client.get() == (200, b"plain 2")
    assert seen.items == []


async def test_plain_connect_is_501_and_the_connection_goes_on() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="auto") as srv, h2_client(srv) as client:
            _, events = await client.request(
                [(b":method", b"CONNECT"), (b":authority", b"example.com:443")], end=False
            )
            event = await events.receive()
            assert isinstance(event, h2.events.ResponseReceived)
            assert dict(event.headers)[b":status"] == b"501"
            assert await client.get() == (200, b"plain 2")
    assert seen.items == []


async def test_wss_over_tls_with_alpn(certificate: Certificate) -> None:
    seen = Recorder()
    options = {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile}
    context = certificate.client_context(["h2"])
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), **options) as srv, h2_client(srv, context) as client:
            assert client.server_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
            ws = await client.websocket(scheme=b"https")
            await ws.send(TextMessage("secure"))
            assert await ws.message() == "secure"
            scope = (await seen.wait_for(bool))[0][1]
    assert scope["scheme"] == "wss"
    assert scope["http_version"] == "2"


async def test_large_messages_both_ways_through_flow_control() -> None:
    """Messages several windows long go through the stream's window both ways, whole."""
    payload = bytes(range(256)) * 1200  # 300 KiB, no deflate offered
    with trio.fail_after(WAIT):
        async with run_server(app_for(Recorder()), http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket()
            for _ in range(3):
                await ws.send(BytesMessage(payload))
                assert await ws.message() == payload


async def test_slow_app_shuts_the_window() -> None:
    """The flow-control window is the back-pressure: an app that does not read stops the
    client once ``--ws-max-queue`` messages and one window are buffered, and nothing is lost."""
    release = trio.Event()
    received: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message["bytes"])
            if len(received) == 40:
                await send({"type": "websocket.send", "text": "got them all"})

    chunk = b"m" * 8000
    with trio.fail_after(WAIT):
        async with run_server(app, http="h2", ws_max_queue=2) as srv, h2_client(srv) as client:
            ws = await client.websocket()
            sent = 0
            while sent < 40:
                if ws.window < len(chunk) + 14:
                    # Give the server every chance to open the window again: it must not.
                    await trio.sleep(0.2)
                    if ws.window < len(chunk) + 14:
                        break
                await ws.send(BytesMessage(chunk))
                sent += 1
            assert sent < 40, "the window never shut"
            # At most one window (64 KiB) and the queue (2) plus one message in the reader's hands.
            assert sent * len(chunk) <= 65535 + 3 * len(chunk) + 14 * sent
            release.set()
            for _ in range(sent, 40):
                await ws.send(BytesMessage(chunk))
            assert await ws.message() == "got them all"
    assert received == [chunk] * 40


async def test_request_body_limit_does_not_apply() -> None:
    """``--limit-request-body`` bounds request bodies; a WebSocket's bytes are not one."""
    with trio.fail_after(WAIT):
        async with (
            run_server(app_for(Recorder()), http="h2", limit_request_body=100) as srv,
            h2_client(srv) as client,
        ):
            ws = await client.websocket()
            for index in range(10):
                await ws.send(TextMessage(str(index) * 1000))
                assert await ws.message() == str(index) * 1000


async def test_receive_and_send_are_checkpoints() -> None:
    """Messages that came in one DATA frame, sends, the disconnect and a send after it:
    each call lets other tasks run, over HTTP/2 as over HTTP/1.1."""
    missing: list[str] = []
    finished = Recorder()

    async def checked(label: str, call: Any) -> Any:
        try:
            with trio.testing.assert_checkpoints():
                return await call
        except AssertionError:
            missing.append(label)
        return None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await checked("connect", receive())
        await send({"type": "websocket.accept"})
        for _ in range(5):
            await checked("receive", receive())
        for _ in range(5):
            await checked("send", send({"type": "websocket.send", "text": "x"}))
        finished.add(await checked("disconnect", receive()))
        with contextlib.suppress(Exception):
            await checked("send after", send({"type": "websocket.send", "text": "late"}))
        finished.add("done")

    with trio.fail_after(WAIT):
        async with run_server(app, http="h2") as srv, h2_client(srv) as client:
            ws = await client.websocket()
            assert ws.ws is not None
            await ws.send_raw(b"".join(ws.ws.send(TextMessage(str(n))) for n in range(5)))
            for _ in range(5):
                assert await ws.message() == "x"
            await ws.send(CloseConnection(1000))
            await finished.wait_for(lambda items: "done" in items)
    assert missing == []
    assert finished.items[0] == {"type": "websocket.disconnect", "code": 1000, "reason": ""}


async def test_2xx_denial_is_refused_and_the_stream_reset(caplog: pytest.LogCaptureFixture) -> None:
    """A 2xx would tell an HTTP/2 client the WebSocket is open (RFC 9113 §8.5)."""

    plain = app_for(Recorder())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return await plain(scope, receive, send)
        await receive()
        await send({"type": "websocket.http.response.start", "status": 200})
        await send({"type": "websocket.http.response.body", "body": b"not frames"})

    with trio.fail_after(WAIT):
        async with run_server(app, http="h2") as srv, h2_client(srv) as client:
            _, events = await client.request(
                [
                    (b":method", b"CONNECT"),
                    (b":protocol", b"websocket"),
                    (b":scheme", b"http"),
                    (b":authority", b"example.com"),
                    (b":path", b"/"),
                    (b"sec-websocket-version", b"13"),
                ],
                end=False,
            )
            event = await events.receive()
            assert isinstance(event, h2.events.StreamReset)
            assert event.error_code == ErrorCodes.INTERNAL_ERROR
            assert await client.get() == (200, b"plain 2")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["Exception in ASGI application"]
    assert "deny with 3xx-5xx" in str(errors[0].exc_info[1])
    caplog.clear()


async def test_lost_connection_is_1006_for_every_websocket() -> None:
    seen = Recorder()
    with trio.fail_after(WAIT):
        async with run_server(app_for(seen), http="h2") as srv, h2_client(srv) as client:
            first = await client.websocket()
            second = await client.websocket()
            await first.send(TextMessage("hi"))
            assert await first.message() == "hi"
            await client.sock.aclose()
            found = await seen.wait_for(lambda items: len(disconnects(items)) == 2)
            assert second.status == 200
    assert disconnects(found) == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}] * 2
