"""Bounded resources over HTTP/1.1: head and body size, concurrency and timeouts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trio_websocket
from h1_client import (
    WAIT,
    assert_still_serving,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    ok_app,
    request,
)

from palfrey.transport.timeouts import sweep_interval

Scope = dict[str, Any]

KEEP_ALIVE = 5.0
REQUEST_HEADER = 10.0
TIMEOUTS = {"timeout_keep_alive": KEEP_ALIVE, "timeout_request_header": REQUEST_HEADER}
#: The timeout sweep looks this often, so a keep-alive or head timeout fires up to this late.
SWEEP = sweep_interval(KEEP_ALIVE, REQUEST_HEADER)


def assert_fired_on_time(waited: float, timeout: float) -> None:
    """``waited`` (virtual seconds) reached ``timeout`` and exceeds it by one sweep at most."""
    # 1e-6 absorbs float rounding in virtual timestamps, nothing else.
    assert timeout - 1e-6 <= waited <= timeout + SWEEP + 1e-6, (waited, timeout)


async def read_all(scope: Scope, receive: Any, send: Any) -> None:
    """Reads the whole body, then answers with its size (or gives up on disconnect)."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message["body"])
        if not message["more_body"]:
            break
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"%d" % size})


async def expect_status(srv: Any, data: bytes, status: int) -> None:
    async with connect(srv) as client:
        await client.send(data)
        response = await client.read_response()
        assert response.status == status
        assert response.header(b"connection") == b"close"
        await client.assert_closed()


class TestHeadSize:
    async def test_large_head_in_one_piece_is_431(self, serve: Any) -> None:
        head = request(headers=[("X-Big", "a" * 3000)])
        async with serve(ok_app, h11_max_incomplete_event_size=2048) as srv:
            await expect_status(srv, head, 431)
            await assert_still_serving(srv)

    async def test_large_head_trickled_is_431(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        # On the mock clock each pause ends only once the server has read what came
        # before, so the head reaches it in a hundred separate pieces.
        async with serve(ok_app, h11_max_incomplete_event_size=2048) as srv:
            async with connect(srv) as client:
                await client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
                with trio.move_on_after(WAIT):
                    for _ in range(100):
                        await client.send(b"X-Filler: " + b"a" * 100 + b"\r\n")
                        await trio.sleep(0.001)
                response = await client.read_response()
            assert response.status == 431
            await assert_still_serving(srv)

    async def test_head_within_the_limit_is_served(self, serve: Any) -> None:
        async with serve(ok_app, h11_max_incomplete_event_size=2048) as srv:
            async with connect(srv) as client:
                await client.send(request(headers=[("X-Big", "a" * 1500)]))
                assert (await client.read_response()).status == 200


class TestBodySize:
    async def test_declared_length_over_limit_is_413_before_the_app_runs(self, serve: Any) -> None:
        calls: list[Scope] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            calls.append(scope)
            await read_all(scope, receive, send)

        async with serve(app, limit_request_body=100, lifespan="off") as srv:
            await expect_status(srv, request("POST", body=b"x" * 101), 413)
            assert calls == []
            async with connect(srv) as client:
                await client.send(request("POST", body=b"x" * 100))
                assert (await client.read_response()).body == b"100"

    async def test_chunked_body_over_limit_is_413(self, serve: Any) -> None:
        chunk = b"40\r\n" + b"x" * 64 + b"\r\n"
        data = request("POST", headers=[("Transfer-Encoding", "chunked")]) + chunk * 3
        async with serve(read_all, limit_request_body=150) as srv:
            await expect_status(srv, data + b"0\r\n\r\n", 413)
            await assert_still_serving(srv)
            async with connect(srv) as client:
                await client.send(data[: -len(chunk)] + b"0\r\n\r\n")
                assert (await client.read_response()).body == b"128"


class TestConcurrency:
    async def test_request_over_the_limit_gets_503_at_once(self, serve: Any) -> None:
        entered = trio.Event()
        release = trio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["path"] == "/slow":
                entered.set()
                await release.wait()
            await ok_app(scope, receive, send)

        async with serve(app, limit_concurrency=1, lifespan="off") as srv:
            async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
                slow: list[httpx.Response] = []

                async def first() -> None:
                    slow.append(await http.get(srv.url + "/slow"))

                nursery.start_soon(first)
                with trio.fail_after(WAIT):
                    await entered.wait()
                with trio.fail_after(1):
                    await expect_status(srv, request(), 503)
                release.set()
            assert slow[0].status_code == 200
            await assert_still_serving(srv)


class TestTimeouts:
    """Keep-alive and request-head timeouts at realistic values, on the autojumping mock clock.

    The server and the client run in one trio run, so whenever every task waits the
    clock jumps to the next deadline: the waits cost no real time, and ``trio.current_time()``
    says when, in virtual time, the server acted.
    """

    async def test_idle_keep_alive_connection_closes_silently(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with serve(ok_app, **TIMEOUTS) as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 200
            idle_since = trio.current_time()
            await client.assert_closed(timeout=KEEP_ALIVE + WAIT)
            assert_fired_on_time(trio.current_time() - idle_since, KEEP_ALIVE)

    async def test_partial_head_gets_408(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with serve(ok_app, **TIMEOUTS) as srv:
            connected = trio.current_time()
            async with connect(srv) as client:
                await client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
                response = await client.read_response(timeout=REQUEST_HEADER + WAIT)
                assert_fired_on_time(trio.current_time() - connected, REQUEST_HEADER)
                assert response.status == 408
                assert response.header(b"connection") == b"close"
                await client.assert_closed()
            await assert_still_serving(srv)

    async def test_silent_client_is_closed_without_answer(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with serve(ok_app, **TIMEOUTS) as srv:
            connected = trio.current_time()
            async with connect(srv) as client:
                await client.assert_closed(timeout=REQUEST_HEADER + WAIT)
                # A fresh connection gets the head timeout, not the shorter keep-alive one.
                assert_fired_on_time(trio.current_time() - connected, REQUEST_HEADER)

    async def test_slow_trickle_does_not_extend_the_header_deadline(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100
        pause = 0.2  # one byte every 0.2 s: the whole head would take ~27 s
        async with serve(ok_app, **TIMEOUTS) as srv:
            connected = trio.current_time()
            async with connect(srv) as client:

                async def trickle() -> None:
                    for byte in head:
                        await client.send(bytes([byte]))
                        await trio.sleep(pause)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trickle)
                    response = await client.read_response(timeout=REQUEST_HEADER + WAIT)
                    nursery.cancel_scope.cancel()
                assert response.status == 408
                assert_fired_on_time(trio.current_time() - connected, REQUEST_HEADER)

    async def test_partial_head_on_a_kept_alive_connection_gets_408(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with serve(ok_app, **TIMEOUTS) as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 200
            idle_since = trio.current_time()
            await client.send(b"GET /second HTTP/1.1\r\n")
            assert (await client.read_response(timeout=REQUEST_HEADER + WAIT)).status == 408
            # Once the head has begun the keep-alive timeout no longer applies: the
            # 408 comes at the head timeout, counted from the start of the wait.
            assert_fired_on_time(trio.current_time() - idle_since, REQUEST_HEADER)

    async def test_keep_alive_deadline_does_not_cut_a_running_request(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        busy = REQUEST_HEADER + KEEP_ALIVE  # longer than either timeout

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await trio.sleep(busy)
            await ok_app(scope, receive, send)

        async with serve(app, lifespan="off", **TIMEOUTS) as srv:
            async with connect(srv) as client:
                for _ in range(2):
                    sent = trio.current_time()
                    await client.send(request())
                    response = await client.read_response(timeout=busy + WAIT)
                    assert response.body == b"ok"
                    assert trio.current_time() - sent == pytest.approx(busy)


async def test_an_open_websocket_counts_towards_limit_concurrency(serve: Any) -> None:
    """Like Uvicorn: a WebSocket occupies a slot for its lifetime; over the limit is 503."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (await receive())["type"] != "websocket.disconnect":
                pass
            return
        await ok_app(scope, receive, send)

    async with serve(app, limit_concurrency=1, lifespan="off") as srv:
        async with trio_websocket.open_websocket_url(srv.url.replace("http", "ws")):
            await expect_status(srv, request(), 503)
        with trio.fail_after(WAIT):
            while True:
                async with httpx.AsyncClient() as http:
                    if (await http.get(srv.url)).status_code == 200:
                        break
                await trio.sleep(0.01)
