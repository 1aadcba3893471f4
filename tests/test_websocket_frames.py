"""WebSocket behaviour only a hand-driven client can provoke: bad frames, silence, floods.

The client speaks over a raw trio socket; frames are built by hand (or by a
client-side wsproto connection) and the server's frames are parsed by wsproto.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from ws_client import WAIT, Recorder, frame, upgrade
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

import palfrey.transport.websocket as websocket_transport
from palfrey.transport.http11 import RECEIVE_SIZE
from palfrey.transport.websocket import H1WebSocket


class RawWebSocket:
    """A client that sends exactly the bytes a test gives and parses what comes back."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = Connection(ConnectionType.CLIENT)
        self.pending: list[Event] = []
        self.eof = False

    @classmethod
    async def open(cls, srv: Any, extra: bytes = b"") -> RawWebSocket:
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        rest = await upgrade(stream, b"/raw", extra)
        client = cls(stream)
        client.conn.receive_data(rest)
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_event(self, event: Event) -> None:
        await self.send(self.conn.send(event))

    async def next_event(self) -> Event | None:
        """The server's next frame, or None once the server closed the TCP connection."""
        while not self.pending:
            self.pending.extend(self.conn.events())
            if self.pending:
                break
            if self.eof:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof = True
            else:
                self.conn.receive_data(data)
        return self.pending.pop(0)

    async def until_closed(self) -> list[Event]:
        """Every frame until the server closes the TCP connection."""
        events = []
        while (event := await self.next_event()) is not None:
            events.append(event)
        return events

    async def aclose(self) -> None:
        await self.stream.aclose()


def recording_app(seen: Recorder, release: trio.Event | None = None) -> Any:
    """Accepts, then (once released) records every message until the disconnect."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        if release is not None:
            await release.wait()
        while True:
            message = await receive()
            seen.add(message)
            if message["type"] == "websocket.disconnect":
                try:
                    await send({"type": "websocket.send", "text": "too late"})
                except OSError as exc:
                    seen.add(exc)
                return

    return app


def closes(events: list[Event]) -> list[tuple[int, str]]:
    return [(e.code, e.reason or "") for e in events if isinstance(e, CloseConnection)]


async def test_frames_sent_with_the_handshake_arrive_after_accept(serve: Any) -> None:
    seen = Recorder()
    async with serve(recording_app(seen), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv, extra=frame(0x1, b"eager"))
            items = await seen.wait_for(len)
            assert items[0] == {"type": "websocket.receive", "text": "eager"}
            await client.aclose()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(frame(0x1, b"caf\xc3"), 1007, id="invalid-utf8"),
        pytest.param(frame(0x1, b"ok", fin=False) + frame(0x0, b"\xff"), 1007, id="utf8-fragments"),
        pytest.param(frame(0x1, b"plain", mask=False), 1002, id="unmasked"),
        pytest.param(frame(0x5, b"x"), 1002, id="bad-opcode"),
        pytest.param(frame(0x1, b"x", rsv=0b100), 1002, id="rsv1-without-deflate"),
        pytest.param(frame(0x1, b"x", rsv=0b001), 1002, id="rsv3"),
        pytest.param(frame(0x9, b"p" * 126), 1002, id="oversized-ping"),
    ],
)
async def test_bad_frames_close_the_connection(serve: Any, data: bytes, code: int) -> None:
    seen = Recorder()
    async with serve(recording_app(seen), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await client.send_event(TextMessage("fine"))
            await client.send(data)
            events = await client.until_closed()
            assert [code] == [c for c, _ in closes(events)]
            items = await seen.wait_for(lambda items: len(items) == 3)
            await client.aclose()
            # The server keeps serving.
            other = await RawWebSocket.open(srv)
            await other.aclose()
    assert items[0] == {"type": "websocket.receive", "text": "fine"}
    assert items[1]["type"] == "websocket.disconnect"
    assert items[1]["code"] == code
    assert isinstance(items[2], OSError)


async def test_client_close_without_code_is_1005(serve: Any) -> None:
    seen = Recorder()
    async with serve(recording_app(seen), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await client.send(frame(0x8, b""))
            (echo,) = await client.until_closed()
            items = await seen.wait_for(len)
    assert isinstance(echo, CloseConnection)
    assert items[0] == {"type": "websocket.disconnect", "code": 1005, "reason": ""}


async def test_messages_before_the_close_are_delivered(serve: Any) -> None:
    seen = Recorder()
    release = trio.Event()
    async with serve(recording_app(seen, release), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            data = b"".join(client.conn.send(TextMessage(f"m{i}")) for i in range(3))
            await client.send(data + client.conn.send(CloseConnection(4000, "bye")))
            assert closes(await client.until_closed()) == [(4000, "bye")]
            release.set()
            items = await seen.wait_for(lambda items: len(items) == 5)
    assert items[:4] == [
        {"type": "websocket.receive", "text": "m0"},
        {"type": "websocket.receive", "text": "m1"},
        {"type": "websocket.receive", "text": "m2"},
        {"type": "websocket.disconnect", "code": 4000, "reason": "bye"},
    ]
    assert isinstance(items[4], OSError)


async def test_abrupt_tcp_loss_is_1006(serve: Any) -> None:
    seen = Recorder()
    async with serve(recording_app(seen), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await client.aclose()
            items = await seen.wait_for(len)
    assert items[0] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


async def test_client_pings_get_pongs(serve: Any) -> None:
    seen = Recorder()
    async with serve(recording_app(seen), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await client.send_event(Ping(b"are you there"))
            assert await client.next_event() == Pong(b"are you there")
            await client.aclose()


async def test_silent_client_is_closed_with_1011(serve: Any) -> None:
    seen = Recorder()
    options = {"ws_ping_interval": 0.05, "ws_ping_timeout": 0.1}
    async with serve(recording_app(seen), lifespan="off", **options) as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            events = await client.until_closed()  # never answers the pings
            items = await seen.wait_for(len)
    assert isinstance(events[0], Ping)
    assert closes(events) == [(1011, "keepalive ping timeout")]
    assert items[0]["type"] == "websocket.disconnect"
    assert items[0]["code"] == 1011


async def test_answered_pings_keep_the_connection_open(serve: Any) -> None:
    seen = Recorder()
    options = {"ws_ping_interval": 0.02, "ws_ping_timeout": 0.5}
    async with serve(recording_app(seen), lifespan="off", **options) as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            for _ in range(5):
                ping = await client.next_event()
                assert isinstance(ping, Ping)
                await client.send_event(ping.response())
            await client.send_event(TextMessage("alive"))
            items = await seen.wait_for(len)
            await client.aclose()
    assert items[0] == {"type": "websocket.receive", "text": "alive"}


async def test_flooding_client_is_pushed_back(serve: Any, monkeypatch: Any) -> None:
    """A slow app stops the reads: the queue stays near ws_max_queue and the client blocks."""
    websockets: list[H1WebSocket] = []

    def recording_websocket(*args: Any, **kwargs: Any) -> H1WebSocket:
        websockets.append(H1WebSocket(*args, **kwargs))
        return websockets[-1]

    monkeypatch.setattr(websocket_transport, "H1WebSocket", recording_websocket)
    seen = Recorder()
    release = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        for _ in range(64):
            seen.add((await receive())["type"])
        await send({"type": "websocket.close"})

    message = frame(0x2, b"x" * 16384)
    planned = 100_000  # 1.6 GB: far more than any socket buffer
    sent = 0

    async def flood(client: RawWebSocket) -> None:
        nonlocal sent
        for _ in range(planned):
            await client.send(message)
            sent += 1

    async with serve(app, lifespan="off", ws_max_queue=4) as srv:
        with trio.fail_after(WAIT * 3):
            client = await RawWebSocket.open(srv)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, client)
                stalled_at = -1
                while stalled_at != sent:  # wait until the client's writes block
                    stalled_at = sent
                    await trio.sleep(0.2)
                (websocket,) = websockets
                # Reading stops once 4 wait; the last read may have held a few more.
                bound = 4 + RECEIVE_SIZE // len(message) + 1
                assert 4 <= websocket.reader.queue_high_water <= bound
                assert sent * len(message) < 128 * 1024 * 1024
                release.set()
                await seen.wait_for(lambda items: len(items) == 64)
                assert websocket.reader.queue_high_water <= bound
                while sent == stalled_at:  # the app made room, so reading resumed
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            await client.aclose()
    assert sent < planned
    assert seen.items == ["websocket.receive"] * 64


async def test_a_close_is_answered_while_the_app_only_sends(serve: Any) -> None:
    """Nobody calls receive(): the connection task still reads, pongs and echoes the close."""
    seen = Recorder()

    async def pusher(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                await trio.sleep(0.01)
        except OSError as exc:
            seen.add(exc)

    async with serve(pusher, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await client.send_event(Ping(b"still there?"))
            while (event := await client.next_event()) != Pong(b"still there?"):
                assert event == TextMessage("tick")
            await client.send_event(CloseConnection(4000, "enough"))
            events = await client.until_closed()
            items = await seen.wait_for(len)
    assert closes(events) == [(4000, "enough")]
    assert isinstance(items[0], OSError)


async def test_a_cancelled_receive_loses_no_bytes(serve: Any) -> None:
    """Timeouts around receive() interrupt the app's own reads, even mid-frame, harmlessly."""
    seen = Recorder()

    async def impatient(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        seen.add("accepted")
        timeouts = 0
        while True:
            with trio.move_on_after(0.02):
                message = await receive()
                break
            timeouts += 1
        seen.add(timeouts)
        seen.add(message)
        seen.add(await receive())

    async with serve(impatient, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await seen.wait_for(len)
            message = client.conn.send(TextMessage("split across reads"))
            await client.send(message[:5])
            await trio.sleep(0.1)
            await client.send(message[5:] + client.conn.send(BytesMessage(b"next")))
            items = await seen.wait_for(lambda items: len(items) == 4)
            await client.aclose()
    assert items[1] >= 3
    assert items[2:] == [
        {"type": "websocket.receive", "text": "split across reads"},
        {"type": "websocket.receive", "bytes": b"next"},
    ]


async def test_an_app_polling_receive_still_gets_messages_and_pongs(serve: Any) -> None:
    """A receive() cancelled before it reads (a zero-timeout poll) does not count as reading."""
    seen = Recorder()

    async def poller(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            with trio.move_on_after(0):
                message = await receive()
                seen.add(message)
                if message["type"] == "websocket.disconnect":
                    return
            await send({"type": "websocket.send", "text": "tick"})
            await trio.sleep(0.01)  # back well within the read-ahead delay

    async with serve(poller, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            client = await RawWebSocket.open(srv)
            await client.send_event(TextMessage("hello"))
            await client.send_event(Ping(b"anyone?"))
            while (event := await client.next_event()) != Pong(b"anyone?"):
                assert event == TextMessage("tick")
            items = await seen.wait_for(len)
            await client.aclose()
    assert items[0] == {"type": "websocket.receive", "text": "hello"}


async def test_timeouts_around_receive_lose_no_pongs(serve: Any) -> None:
    """A pong produced in the app's task is written even if the app's timeout fires meanwhile."""

    async def impatient(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})

        async def busy() -> None:
            while True:
                time.sleep(0.001)  # another task holding the loop for a moment
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            while True:
                with trio.move_on_after(0.003):
                    if (await receive())["type"] == "websocket.disconnect":
                        nursery.cancel_scope.cancel()
                        return

    async with serve(impatient, lifespan="off") as srv:
        client = await RawWebSocket.open(srv)
        lost = 0
        for number in range(50):
            payload = number.to_bytes(4, "big")
            await client.send_event(Ping(payload))
            with trio.move_on_after(1) as waiting:
                while await client.next_event() != Pong(payload):
                    pass
            lost += waiting.cancelled_caught
        await client.aclose()
    assert lost == 0
