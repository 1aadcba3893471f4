"""WebSockets whose client stops cooperating: floods and leaves, stops reading, reads slowly.

Each must end the WebSocket for the app, close the socket and give back the
``--limit-concurrency`` slot; and no byte may follow a frame cut short by a
failed or cancelled write. The server runs in this process, so the test
counts the file descriptors it and the clients hold.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import httpx
import pytest
import trio
from ws_client import WAIT, Recorder, frame, upgrade

#: A client receive buffer this small (the kernel doubles it) fills within a few frames.
SMALL_BUFFER = 4096


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def fds_back_to(baseline: int) -> int:
    """The descriptor count once it is down to ``baseline``, or after a few seconds."""
    with trio.move_on_after(5):
        while open_fds() > baseline:
            await trio.sleep(0.02)  # the kernel's count has nothing to wait on
    return open_fds()


async def open_raw(srv: Any) -> tuple[trio.SocketStream, bytes]:
    """A WebSocket client on a socket with a tiny receive buffer: the stream after the 101,
    and what followed the 101 in the same reads."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    await sock.connect((srv.host, srv.port))
    stream = trio.SocketStream(sock)
    return stream, await upgrade(stream)


async def get_status(srv: Any) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(srv.url)).status_code


def echo_app(ended: Recorder) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["type"] != "websocket":
            return
        try:
            await receive()
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] == "websocket.receive":
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        finally:
            ended.add("app returned")

    return app


async def flood_until_stalled(stream: trio.SocketStream) -> int:
    """Send frames without reading the echoes until the server stops reading; frames sent."""
    message = frame(0x2, b"f" * 16384)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await stream.send_all(message)
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        stalled_at = -1
        while stalled_at != sent:
            stalled_at = sent
            await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    return sent


@pytest.mark.parametrize("leave", ["close", "reset"])
async def test_flooding_clients_that_leave_free_their_socket_and_slot(
    serve: Any, leave: str
) -> None:
    """The app is stuck sending, the reads paused behind a full queue, when the client goes."""
    ended = Recorder()
    async with serve(echo_app(ended), lifespan="off", limit_concurrency=3, ws_max_queue=4) as srv:
        baseline = open_fds()
        with trio.fail_after(WAIT * 4):
            for number in range(1, 6):
                stream, _ = await open_raw(srv)
                assert await flood_until_stalled(stream) > 4
                if leave == "reset":
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await stream.aclose()
                with trio.move_on_after(WAIT):
                    await ended.wait_for(lambda items, n=number: len(items) >= n)
                assert len(ended.items) == number, "the app never learnt the client left"
                assert await fds_back_to(baseline) <= baseline
            assert await get_status(srv) == 200


@pytest.mark.parametrize("chatty", [False, True], ids=["silent", "chatty"])
async def test_a_client_that_stops_reading_is_given_up_after_timeout_send(
    serve: Any, chatty: bool
) -> None:
    """The app blocks in send(); the send deadline ends the WebSocket, not the ping timeout.

    The silent client sends nothing, and the app, told by ``send()``, asks
    ``receive()`` how it ended. The chatty one has also filled the queue the
    app never reads, so the connection task is paused for room, and the app
    just lets the exception out, as most do.
    """
    seen = Recorder()

    async def pusher(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await echo_app(Recorder())(scope, receive, send)
            return
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"p" * 65536})
        except OSError as exc:
            seen.add(exc)
            if chatty:
                raise
        seen.add(await receive())

    options = {
        "timeout_send": 0.5,
        "limit_concurrency": 1,
        "ws_ping_interval": 60,
        "ws_max_queue": 4,
    }
    async with serve(pusher, lifespan="off", **options) as srv:
        baseline = open_fds()
        with trio.fail_after(WAIT):
            stream, _ = await open_raw(srv)
            if chatty:
                for _ in range(8):
                    await stream.send_all(frame(0x1, b"unread"))
            error = (await seen.wait_for(len))[0]
            assert isinstance(error, OSError)
            # The server closed the socket: what it had written, then the end.
            try:
                while await stream.receive_some(1 << 20):
                    pass
            except trio.BrokenResourceError:
                pass
            await stream.aclose()
            assert await fds_back_to(baseline) <= baseline
            assert await get_status(srv) == 200
            if not chatty:
                disconnect = (await seen.wait_for(lambda items: len(items) == 2))[1]
                assert disconnect == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


async def test_a_cancelled_send_ends_the_websocket_at_the_cut(serve: Any) -> None:
    """A frame cut short by a cancelled write is the last thing ever written on the socket."""
    seen = Recorder()
    size = 8 * 1024 * 1024  # more than the kernel buffers between server and client

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        with trio.move_on_after(0.3) as cut:
            await send({"type": "websocket.send", "bytes": b"x" * size})
        seen.add(cut.cancelled_caught)
        try:
            await send({"type": "websocket.send", "text": "after the cut"})
        except OSError:
            seen.add("refused")
        seen.add(await receive())

    async with serve(app, lifespan="off", ws_ping_interval=0.05) as srv:
        with trio.fail_after(WAIT * 2):
            stream, first = await open_raw(srv)
            await seen.wait_for(len)
            await trio.sleep(0.2)  # pings and the next send are due meanwhile
            received = bytearray(first)
            with trio.move_on_after(3) as waiting:
                while data := await stream.receive_some(1 << 20):
                    received += data
            await stream.aclose()
            # One binary frame's head, then only its payload, cut short, then the end.
            head = struct.pack("!BBQ", 0x82, 127, size)
            assert bytes(received[: len(head)]) == head
            payload = bytes(received[len(head) :])
            assert 0 < len(payload) < size
            assert payload == b"x" * len(payload), "another frame was written inside the cut one"
            assert not waiting.cancelled_caught, "the server kept the socket open"
            items = await seen.wait_for(lambda items: len(items) == 3)
    assert items == [True, "refused", {"type": "websocket.disconnect", "code": 1006, "reason": ""}]


async def test_a_close_cancelled_before_it_was_written_still_closes(serve: Any) -> None:
    """The app's close never went out, and the app returned: the server closes for it."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        with trio.move_on_after(0):
            await send({"type": "websocket.close", "code": 4000})

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            stream, received = await open_raw(srv)
            while len(received) < 4:
                received += await stream.receive_some(4096)
            await stream.send_all(frame(0x8, received[2:4]))  # answer the close
            assert await stream.receive_some(4096) == b""
            await stream.aclose()
    assert received[:4] == bytes([0x88, 2]) + (1000).to_bytes(2, "big")
