"""Bounded resources over HTTP/1.1: head and body size, concurrency and timeouts."""

from __future__ import annotations

from typing import Any

import httpx
import trio
import trio_websocket
from h1_client import (
    WAIT,
    assert_still_serving,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    ok_app,
    request,
)

Scope = dict[str, Any]


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

    async def test_large_head_trickled_is_431(self, serve: Any) -> None:
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
    async def test_idle_keep_alive_connection_closes_silently(self, serve: Any) -> None:
        async with serve(ok_app, timeout_keep_alive=0.2) as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 200
            start = trio.current_time()
            await client.assert_closed(timeout=2)
            assert 0.1 < trio.current_time() - start < 1.5

    async def test_partial_head_gets_408(self, serve: Any) -> None:
        async with serve(ok_app, timeout_request_header=0.3) as srv:
            async with connect(srv) as client:
                await client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
                response = await client.read_response(timeout=2)
                assert response.status == 408
                assert response.header(b"connection") == b"close"
                await client.assert_closed(timeout=2)
            await assert_still_serving(srv)

    async def test_silent_client_is_closed_without_answer(self, serve: Any) -> None:
        async with serve(ok_app, timeout_request_header=0.3) as srv, connect(srv) as client:
            await client.assert_closed(timeout=2)

    async def test_slow_trickle_does_not_extend_the_header_deadline(self, serve: Any) -> None:
        async with serve(ok_app, timeout_request_header=0.4) as srv, connect(srv) as client:

            async def trickle() -> None:
                for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100:
                    await client.send(bytes([byte]))
                    await trio.sleep(0.02)

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                response = await client.read_response(timeout=2)
                nursery.cancel_scope.cancel()
            assert response.status == 408
            assert trio.current_time() - start < 1.5

    async def test_partial_head_on_a_kept_alive_connection_gets_408(self, serve: Any) -> None:
        async with (
            serve(ok_app, timeout_request_header=0.3, timeout_keep_alive=5) as srv,
            connect(srv) as client,
        ):
            await client.send(request())
            assert (await client.read_response()).status == 200
            await client.send(b"GET /second HTTP/1.1\r\n")
            assert (await client.read_response(timeout=2)).status == 408

    async def test_keep_alive_deadline_does_not_cut_a_running_request(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await trio.sleep(0.4)
            await ok_app(scope, receive, send)

        async with serve(app, timeout_keep_alive=0.1, lifespan="off") as srv:
            async with connect(srv) as client:
                for _ in range(2):
                    await client.send(request())
                    assert (await client.read_response()).body == b"ok"


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
