"""Streaming both ways over HTTP/1.1: back-pressure, SSE-style responses and disconnects."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    assert_still_serving,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)

Scope = dict[str, Any]
MiB = 1024 * 1024


async def read_body(receive: Any) -> list[bytes]:
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        chunks.append(message["body"])
        if not message.get("more_body"):
            return chunks


def answers_health_checks(app: Any) -> Any:
    """Let :func:`assert_still_serving` through apps that never answer on their own."""

    async def wrapper(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/still-alive":
            await answer(send)
        else:
            await app(scope, receive, send)

    return wrapper


async def answer(send: Any, body: bytes = b"done") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class TestRequestBody:
    async def test_big_upload_arrives_in_bounded_chunks(self, serve: Any) -> None:
        sizes: list[int] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            while True:
                message = await receive()
                sizes.append(len(message["body"]))
                await trio.sleep(0.001)
                if not message["more_body"]:
                    break
            await answer(send, b"%d" % sum(sizes))

        size = 4 * MiB
        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.send, request("POST", body=b"x" * size))
                    response = await client.read_response()
        assert response.body == b"%d" % size
        assert len(sizes) > 4
        assert max(sizes) <= 64 * 1024

    async def test_client_blocks_while_the_app_does_not_read(self, serve: Any) -> None:
        first_chunk = trio.Event()
        release = trio.Event()
        chunks: list[bytes] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            chunks.append((await receive())["body"])
            first_chunk.set()
            await release.wait()
            await answer(send)

        total = 256 * MiB
        sent = 0
        piece = b"x" * (256 * 1024)

        async def upload(client: Any) -> None:
            nonlocal sent
            await client.send(request("POST", headers=[("Content-Length", str(total))]))
            while sent < total:
                await client.send(piece)
                sent += len(piece)

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload, client)
                with trio.fail_after(WAIT):
                    await first_chunk.wait()
                await trio.sleep(0.3)
                stalled_at = sent
                await trio.sleep(0.2)
                assert sent == stalled_at
                nursery.cancel_scope.cancel()
            release.set()
        # Only kernel buffers hold the rest: the server read one chunk and stopped.
        assert sent < 64 * MiB
        assert len(chunks) == 1
        assert len(chunks[0]) <= 64 * 1024

    async def test_client_gone_mid_body_gives_disconnect(self, serve: Any) -> None:
        messages: list[dict[str, Any]] = []
        done = trio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] == "http.disconnect":
                    break
            done.set()

        async with serve(answers_health_checks(app), lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request("POST", headers=[("Content-Length", "100")]) + b"0123")
                with trio.fail_after(WAIT):
                    while not messages:
                        await trio.sleep(0.01)
            with trio.fail_after(WAIT):
                await done.wait()
            await assert_still_serving(srv)
        assert messages[0] == {"type": "http.request", "body": b"0123", "more_body": True}
        assert messages[-1] == {"type": "http.disconnect"}


class TestDisconnect:
    async def test_disconnect_while_waiting_after_the_body(self, serve: Any) -> None:
        waiting = trio.Event()
        done = trio.Event()
        seen: dict[str, Any] = {}

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen["body"] = b"".join(await read_body(receive))
            waiting.set()
            seen["message"] = await receive()
            seen["again"] = await receive()
            await send({"type": "http.response.start", "status": 200})
            try:
                await send({"type": "http.response.body", "body": b"late"})
            except BaseException as exc:
                seen["error"] = exc
                raise
            finally:
                done.set()

        async with serve(answers_health_checks(app), lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request("POST", body=b"payload"))
                with trio.fail_after(WAIT):
                    await waiting.wait()
            with trio.fail_after(WAIT):
                await done.wait()
            await assert_still_serving(srv)
        assert seen["body"] == b"payload"
        assert seen["message"] == {"type": "http.disconnect"}
        assert seen["again"] == {"type": "http.disconnect"}
        assert isinstance(seen["error"], OSError)

    async def test_receive_after_response_is_disconnect(self, serve: Any) -> None:
        seen: list[dict[str, Any]] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await answer(send)
            with trio.fail_after(1):
                seen.append(await receive())

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).body == b"done"
            await client.send(request())
            assert (await client.read_response()).body == b"done"
        assert seen == [{"type": "http.disconnect"}] * 2

    async def test_send_after_client_left_mid_stream_raises_oserror(self, serve: Any) -> None:
        errors: list[BaseException] = []
        done = trio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            try:
                with trio.fail_after(WAIT):
                    while True:
                        body = b"data: tick\n\n" * 1000
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        await trio.sleep(0.005)
            except OSError as exc:
                errors.append(exc)
                raise
            finally:
                done.set()

        async with serve(answers_health_checks(app), lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request())
                await client.read_head()
            with trio.fail_after(WAIT):
                await done.wait()
            await assert_still_serving(srv)
        assert len(errors) == 1

    async def test_disconnect_listener_stops_a_stream(self, serve: Any) -> None:
        """The Starlette pattern: one task streams while another waits for http.disconnect."""
        stopped = trio.Event()
        seen: list[dict[str, Any]] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})

            async def stream() -> None:
                while True:
                    await send({"type": "http.response.body", "body": b"tick", "more_body": True})
                    await trio.sleep(0.01)

            async def listen(cancel: trio.CancelScope) -> None:
                while True:
                    message = await receive()
                    seen.append(message)
                    if message["type"] == "http.disconnect":
                        cancel.cancel()
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream)
                nursery.start_soon(listen, nursery.cancel_scope)
            stopped.set()

        async with serve(answers_health_checks(app), lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request())
                await client.read_head()
            with trio.fail_after(WAIT):
                await stopped.wait()
            await assert_still_serving(srv)
        assert seen[-1] == {"type": "http.disconnect"}

    async def test_disconnect_seen_by_polling_from_a_cancelled_scope(self, serve: Any) -> None:
        """Starlette's ``is_disconnected()``: receive() inside an already-cancelled scope."""
        polls: list[str] = []
        done = trio.Event()

        async def is_disconnected(receive: Any) -> bool:
            message: dict[str, Any] = {}
            with trio.CancelScope() as scope:
                scope.cancel()
                message = await receive()
            return message.get("type") == "http.disconnect"

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await receive()
            with trio.move_on_after(WAIT):
                while not await is_disconnected(receive):
                    polls.append("connected")
                    await trio.sleep(0.01)
                polls.append("disconnected")
            done.set()

        async with serve(answers_health_checks(app), lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request())
                with trio.fail_after(WAIT):
                    while not polls:
                        await trio.sleep(0.01)
            with trio.fail_after(WAIT):
                await done.wait()
            await assert_still_serving(srv)
        assert polls[0] == "connected"
        assert polls[-1] == "disconnected"

    async def test_app_that_handles_a_disconnect_logs_no_error(
        self,
        serve: Any,
        caplog: pytest.LogCaptureFixture,
        autojump_clock: trio.testing.MockClock,
    ) -> None:
        done = trio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            try:
                if scope["path"] == "/poll":
                    # Long polling: give up quietly when the client leaves.
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    return
                await send({"type": "http.response.start", "status": 200})
                try:
                    while True:
                        await send({"type": "http.response.body", "body": b"x", "more_body": True})
                        await trio.sleep(0.01)
                except OSError:
                    return
            finally:
                done.set()

        with caplog.at_level(logging.WARNING, logger="palfrey"):
            async with serve(answers_health_checks(app), lifespan="off") as srv:
                for target, read in (("/poll", False), ("/stream", True)):
                    done = trio.Event()
                    async with connect(srv) as client:
                        await client.send(request(target=target))
                        if read:
                            await client.read_head()
                        else:
                            # The mock clock moves only when every task waits: the app is
                            # polling by then.
                            await trio.sleep(0.05)
                    with trio.fail_after(WAIT):
                        await done.wait()
                await assert_still_serving(srv)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class TestResponseStreaming:
    async def test_client_reads_first_event_while_app_still_runs(self, serve: Any) -> None:
        go = trio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            await go.wait()
            await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        with trio.fail_after(WAIT):
            async with serve(app, lifespan="off") as srv, httpx.AsyncClient() as client:
                async with client.stream("GET", srv.url) as response:
                    chunks = response.aiter_raw()
                    assert await chunks.__anext__() == b"data: 1\n\n"
                    go.set()
                    rest = b"".join([chunk async for chunk in chunks])
        assert rest == b"data: 2\n\n"

    async def test_large_response_body(self, serve: Any) -> None:
        body = bytes(range(256)) * (16 * 1024)

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": body[:1000], "more_body": True})
            await send({"type": "http.response.body", "body": memoryview(body)[1000:]})

        with trio.fail_after(WAIT):
            async with serve(app, lifespan="off") as srv, httpx.AsyncClient() as client:
                response = await client.get(srv.url)
        assert response.content == body
