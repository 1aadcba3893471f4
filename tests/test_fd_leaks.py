"""No file descriptor outlives the connection that opened it, however the client leaves.

Each test runs one way of abandoning a connection a few times and counts the
descriptors this process has open (server and clients share it) before and after.
A warm-up round first, so that anything opened lazily once is not counted.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from h1_client import (
    WAIT,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_fd_count,
    request,
    reset_on_close,
)
from tls_cert import Certificate
from ws_client import Recorder, frame, upgrade

Scope = dict[str, Any]
KiB = 1024
ROUNDS = 8
#: How long the count may take to come back down once the clients are gone.
SETTLE = 2.0


async def settled_count(ceiling: int) -> int:
    """The open descriptor count once it is down to ``ceiling``, or after ``SETTLE`` seconds."""
    with trio.move_on_after(SETTLE):
        while open_fd_count() > ceiling:
            await trio.sleep(0.01)  # polls the kernel's count; nothing to wait on instead
    return open_fd_count()


async def assert_no_leak(abuse: Callable[[], Awaitable[None]], rounds: int = ROUNDS) -> None:
    before = open_fd_count()
    await abuse()  # warm-up
    baseline = await settled_count(before)
    for _ in range(rounds):
        await abuse()
    after = await settled_count(baseline)
    assert after <= baseline, f"{after - baseline} descriptors leaked over {rounds} rounds"


async def open_tcp(srv: Any) -> trio.SocketStream:
    with trio.fail_after(WAIT):
        return await trio.open_tcp_stream(srv.host, srv.port)


async def drain(stream: trio.abc.Stream) -> None:
    """Read until the server closes (EOF or reset), bounded."""
    with trio.fail_after(WAIT):
        while True:
            try:
                if not await stream.receive_some(65536):
                    return
            except trio.BrokenResourceError:
                return


# TLS handshakes that never complete.


def client_hello(certificate: Certificate) -> bytes:
    """The first flight of a real TLS client."""
    client = certificate.client_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def ok_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    "how", ["close_at_once", "garbage", "reset_mid_handshake", "stall_past_timeout"]
)
async def test_aborted_tls_handshakes(serve: Any, certificate: Certificate, how: str) -> None:
    hello = client_hello(certificate)
    options = {
        "ssl_certfile": certificate.certfile,
        "ssl_keyfile": certificate.keyfile,
        "timeout_tls_handshake": 0.2,
        "lifespan": "off",
    }

    async with serve(ok_app, **options) as srv:

        async def one() -> None:
            stream = await open_tcp(srv)
            try:
                if how == "garbage":
                    await stream.send_all(b"\x16\x03\x01\x00\x05garbage" + b"\0" * 100)
                    await drain(stream)
                elif how == "reset_mid_handshake":
                    await stream.send_all(hello[: len(hello) // 2])
                    reset_on_close(stream)
                elif how == "stall_past_timeout":
                    await stream.send_all(hello[: len(hello) // 2])
                    await drain(stream)  # the server gives up after the handshake timeout
            finally:
                await stream.aclose()

        async def abuse() -> None:
            # Concurrently, so the handshake timeout is waited for once per round.
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one)

        await assert_no_leak(abuse, rounds=2 if how == "stall_past_timeout" else ROUNDS)


# HTTP/1.1 clients that reset the connection mid-request or mid-response.


async def test_reset_in_the_middle_of_a_request_body(serve: Any) -> None:
    seen = Recorder()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.add(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        seen.add("done")

    async with serve(app, lifespan="off") as srv:

        async def abuse() -> None:
            done = len([item for item in seen.items if item == "done"])
            stream = await open_tcp(srv)
            try:
                head = request("POST", "/", headers=[("Content-Length", str(1024 * KiB))])
                await stream.send_all(head + b"x" * 1000)
                with trio.fail_after(WAIT):
                    await seen.wait_for(lambda items: bool(items) and items[-1] == "http.request")
                reset_on_close(stream)
            finally:
                await stream.aclose()
            with trio.fail_after(WAIT):
                await seen.wait_for(lambda items: items.count("done") > done)

        await assert_no_leak(abuse)
    assert "http.disconnect" in seen.items


async def test_reset_in_the_middle_of_a_streamed_response(serve: Any) -> None:
    ended = Recorder()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = {"type": "http.response.body", "body": b"x" * (16 * KiB), "more_body": True}
        try:
            while True:
                await send(chunk)
        except OSError:
            ended.add("send failed")

    async with serve(app, lifespan="off") as srv:

        async def abuse() -> None:
            count = len(ended.items)
            async with connect(srv) as client:
                await client.send(request())
                head = await client.read_head()
                assert head.status == 200
                with trio.fail_after(WAIT):
                    await client.stream.receive_some(1)
                assert isinstance(client.stream, trio.SocketStream)
                reset_on_close(client.stream)
            with trio.fail_after(WAIT):
                await ended.wait_for(lambda items: len(items) > count)

        await assert_no_leak(abuse)


# WebSocket clients that fail.


async def open_websocket(srv: Any) -> trio.SocketStream:
    stream = await open_tcp(srv)
    assert await upgrade(stream, b"/ws") == b""
    return stream


@pytest.mark.parametrize("how", ["invalid_frame", "reset_mid_message", "close_without_frame"])
async def test_websocket_failures(serve: Any, how: str) -> None:
    ended = Recorder()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        ended.add(how)

    async with serve(app, lifespan="off") as srv:

        async def abuse() -> None:
            count = len(ended.items)
            stream = await open_websocket(srv)
            try:
                if how == "invalid_frame":
                    await stream.send_all(frame(0x1, b"reserved bits", rsv=1))
                    await drain(stream)
                elif how == "reset_mid_message":
                    await stream.send_all(frame(0x2, b"m" * 1000)[:100])
                    reset_on_close(stream)
            finally:
                await stream.aclose()
            with trio.fail_after(WAIT):
                await ended.wait_for(lambda items: len(items) > count)

        await assert_no_leak(abuse)
