"""Bad input from clients and bad behaviour from applications, through real sockets.

After every failure the server must still answer a fresh connection.
"""

from __future__ import annotations

import logging
import random
import struct
from typing import Any

import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    assert_still_serving,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    ok_app,
    request,
)

Scope = dict[str, Any]


async def echo_body(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message["body"]
        if not message["more_body"]:
            break
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


async def expect_error(srv: Any, data: bytes, status: int) -> None:
    """``data`` gets a ``status`` answer that closes the connection."""
    async with connect(srv) as client:
        await client.send(data)
        response = await client.read_response()
        assert response.status == status, response
        assert response.header(b"connection") == b"close"
        assert response.header(b"server") == b"palfrey"
        await client.assert_closed()
    await assert_still_serving(srv)


class TestBadRequests:
    @pytest.mark.parametrize(
        "data",
        [
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET  /  HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
        ],
    )
    async def test_malformed_head_is_400(self, serve: Any, data: bytes) -> None:
        async with serve(ok_app) as srv:
            await expect_error(srv, data, 400)

    async def test_content_length_with_transfer_encoding_is_400(self, serve: Any) -> None:
        data = request("POST", headers=[("Content-Length", "4"), ("Transfer-Encoding", "chunked")])
        async with serve(echo_body) as srv:
            await expect_error(srv, data + b"0\r\n\r\n", 400)

    async def test_bad_chunk_size_is_400(self, serve: Any) -> None:
        data = request("POST", headers=[("Transfer-Encoding", "chunked")]) + b"zz\r\nabc\r\n"
        async with serve(echo_body) as srv:
            await expect_error(srv, data, 400)

    async def test_unknown_transfer_coding_is_501(self, serve: Any) -> None:
        # RFC 9112 §6.1; with chunked not final it would be 400 (§6.3).
        data = request("POST", headers=[("Transfer-Encoding", "gzip, chunked")])
        async with serve(echo_body) as srv:
            await expect_error(srv, data, 501)

    async def test_connect_is_405(self, serve: Any) -> None:
        async with serve(ok_app) as srv:
            await expect_error(srv, request("CONNECT", "example.com:443"), 405)

    async def test_non_ascii_target_is_400(self, serve: Any) -> None:
        async with serve(ok_app) as srv:
            await expect_error(srv, b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400)

    async def test_unsupported_http_version_is_505(self, serve: Any) -> None:
        async with serve(ok_app) as srv:
            await expect_error(srv, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)

    async def test_bad_second_request_after_a_good_one(self, serve: Any) -> None:
        async with serve(ok_app) as srv, connect(srv) as client:
            await client.send(request() + b"BROKEN\r\n\r\n")
            assert (await client.read_response()).status == 200
            assert (await client.read_response()).status == 400
            await client.assert_closed()

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            bytes(range(256)) * 4,
        ],
    )
    async def test_client_closing_early_is_harmless(self, serve: Any, data: bytes) -> None:
        async with serve(echo_body) as srv:
            async with connect(srv) as client:
                await client.send(data)
                await client.stream.send_eof()
                received = await client.read_until_closed()
            assert received == b"" or received.startswith(b"HTTP/1.1 400 ")
            await assert_still_serving(srv)

    async def test_reset_mid_request_is_harmless(
        self, serve: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        async with serve(echo_body) as srv:
            async with connect(srv) as client:
                await client.send(request("POST", headers=[("Content-Length", "1000")]) + b"x")
                # The mock clock moves only when every task waits: the app is reading the body.
                await trio.sleep(0.05)
                # Linger on with a zero timeout: closing sends RST instead of FIN.
                linger = struct.pack("ii", 1, 0)
                client.stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, linger)
            await assert_still_serving(srv)


async def test_mutated_requests_never_crash_the_server(serve: Any) -> None:
    """Seeded random damage to valid requests: every answer is a well-formed response or nothing."""
    rng = random.Random(20240601)
    valid = [
        request("POST", "/a?b=c", headers=[("X-A", "1")], body=b"hello"),
        request("POST", headers=[("Transfer-Encoding", "chunked")]) + b"5\r\nhello\r\n0\r\n\r\n",
        request("GET", "/", headers=[("Expect", "100-continue"), ("Connection", "close")]),
    ]
    async with serve(echo_body) as srv:
        for _ in range(40):
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(data))
                if rng.random() < 0.5:
                    data[position] = rng.randrange(256)
                else:
                    del data[position : position + rng.randint(1, 8)]
            async with connect(srv) as client:
                await client.send(bytes(data))
                await client.stream.send_eof()
                received = await client.read_until_closed()
            assert received == b"" or received.startswith(b"HTTP/1.1 "), received
        await assert_still_serving(srv)


class TestAppErrors:
    async def test_exception_before_start_is_500_and_the_connection_serves_on(
        self, serve: Any
    ) -> None:
        # The 500 is a complete, well-framed response: the connection's framing is
        # intact, so keep-alive goes on as after any response.
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["path"] == "/still-alive":
                return await ok_app(scope, receive, send)
            raise RuntimeError("boom")

        async with serve(app, lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request())
                response = await client.read_response()
                assert response.status == 500
                assert response.body == b"Internal Server Error"
                assert response.header(b"connection") is None
                await client.send(request(target="/still-alive"))
                assert (await client.read_response()).status == 200
            await assert_still_serving(srv)

    @pytest.mark.parametrize(
        "unread",
        [
            request(method="POST", body=b"x" * 300_000),
            request("POST", headers=[("Transfer-Encoding", "chunked")]) + b"5\r\nhello\r\n",
        ],
        ids=["too-large-to-drain", "chunked-without-its-end"],
    )
    async def test_exception_with_an_unread_body_is_500_and_close(
        self, serve: Any, unread: bytes
    ) -> None:
        """A body that will not be drained (too large, or of unknown length and not all
        there) ends the connection after the 500, and the 500 says so (RFC 9112 §9.6)."""

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(unread)
            response = await client.read_response()
            assert response.status == 500
            assert response.header(b"connection") == b"close"
            await client.assert_closed()

    @pytest.mark.parametrize("pipelined", [False, True], ids=["sent-after-the-500", "pipelined"])
    async def test_exception_with_a_small_unread_body_is_500_and_the_connection_serves_on(
        self, serve: Any, pipelined: bool
    ) -> None:
        """A chunked body the app never read, already all there: the server discards it
        and keep-alive goes on, for a request sent later or one queued behind the body."""

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["path"] == "/still-alive":
                return await ok_app(scope, receive, send)
            raise RuntimeError("boom")

        failing = request("POST", headers=[("Transfer-Encoding", "chunked")])
        failing += b"5\r\nhello\r\n0\r\n\r\n"
        following = request(target="/still-alive")
        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(failing + following if pipelined else failing)
            response = await client.read_response()
            assert response.status == 500
            assert response.header(b"connection") is None
            if not pipelined:
                await client.send(following)
            assert (await client.read_response()).body == b"ok"

    async def test_exception_after_start_message_is_500(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 201})
            raise RuntimeError("boom")

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 500

    async def test_exception_after_body_started_closes(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["path"] == "/still-alive":
                return await ok_app(scope, receive, send)
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("boom")

        async with serve(app, lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request())
                data = await client.read_until_closed()
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            # The chunked body is cut short: no terminating zero-size chunk.
            assert data.endswith(b"7\r\npartial\r\n")
            await assert_still_serving(srv)

    async def test_returning_without_response_is_500(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            return None

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 500

    async def test_returning_mid_body_closes(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            data = await client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert not data.endswith(b"0\r\n\r\n")

    async def test_crash_is_logged_once(self, serve: Any, caplog: pytest.LogCaptureFixture) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            raise ValueError("distinctive failure")

        with caplog.at_level(logging.ERROR, logger="palfrey"):
            async with serve(app, lifespan="off") as srv, connect(srv) as client:
                await client.send(request())
                await client.read_response()
        records = [r for r in caplog.records if "distinctive failure" in str(r.exc_info)]
        assert len(records) == 1

    @pytest.mark.parametrize(
        ("messages", "error"),
        [
            ([{"type": "http.response.body", "body": b"x"}], RuntimeError),
            ([{"type": "http.response.start", "status": "200"}], TypeError),
            ([{"type": "http.response.start", "status": 42}], TypeError),
            ([{"type": "http.response.start", "status": 200, "headers": [("a", "b")]}], TypeError),
            ([{"type": "http.response.start", "status": 200, "headers": [(b"a",)]}], TypeError),
            (
                [{"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb")]}],
                ValueError,
            ),
            (
                [{"type": "http.response.start", "status": 200, "headers": [(b"x y", b"1")]}],
                ValueError,
            ),
            ([{"type": "http.response.start", "status": 200}, {"type": "http.foo"}], RuntimeError),
            (
                [
                    {"type": "http.response.start", "status": 200},
                    {"type": "http.response.body", "body": "text"},
                ],
                TypeError,
            ),
            (
                [
                    {"type": "http.response.start", "status": 200},
                    {"type": "http.response.body", "body": b"", "more_body": 1},
                ],
                TypeError,
            ),
            (
                [
                    {"type": "http.response.start", "status": 200},
                    {"type": "http.response.body", "body": b"ok"},
                    {"type": "http.response.body", "body": b"more"},
                ],
                RuntimeError,
            ),
        ],
    )
    async def test_invalid_messages_raise_from_send(
        self, serve: Any, messages: list[dict[str, Any]], error: type[Exception]
    ) -> None:
        raised: list[BaseException] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            try:
                for message in messages:
                    await send(message)
            except Exception as exc:
                raised.append(exc)
                raise

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            with trio.fail_after(WAIT):
                response = await client.read_response()
        # A 500, or the complete response that came before the misplaced message.
        assert response.status in (200, 500)
        assert len(raised) == 1
        assert type(raised[0]) is error

    async def test_app_can_recover_from_a_rejected_message(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            with pytest.raises(ValueError):
                await send(
                    {"type": "http.response.start", "status": 200, "headers": [(b"x", b"\n")]}
                )
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"recovered"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).body == b"recovered"


class TestContentLengthMismatch:
    @pytest.mark.parametrize(
        "bodies",
        [
            [(b"hello", False)],
            [(b"he", True), (b"llo", False)],
            [(b"a", False)],
            [(b"a", True), (b"", False)],
        ],
        ids=["more-at-once", "more-in-parts", "fewer-at-once", "fewer-in-parts"],
    )
    async def test_mismatch_raises_in_send(
        self, serve: Any, bodies: list[tuple[bytes, bool]]
    ) -> None:
        raised: list[BaseException] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["path"] == "/still-alive":
                return await ok_app(scope, receive, send)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"3")],
                }
            )
            try:
                for body, more in bodies:
                    await send({"type": "http.response.body", "body": body, "more_body": more})
            except Exception as exc:
                raised.append(exc)

        async with serve(app, lifespan="off") as srv:
            async with connect(srv) as client:
                await client.send(request() + request(target="/still-alive"))
                if len(bodies) == 1:
                    # Refused before anything was framed: the app's failure gets a 500,
                    # and the connection, whose framing is intact, serves on.
                    assert (await client.read_response()).status == 500
                    assert (await client.read_response()).status == 200
                else:
                    # Never a complete 3-byte response followed by a second answer.
                    data = await client.read_until_closed()
                    assert data.count(b"HTTP/1.1") <= 1
            assert len(raised) == 1
            assert isinstance(raised[0], RuntimeError)
            await assert_still_serving(srv)

    @pytest.mark.parametrize(
        "headers",
        [[(b"content-length", b"x3")], [(b"content-length", b"3"), (b"content-length", b"4")]],
        ids=["not-a-number", "two-values"],
    )
    async def test_a_bad_content_length_raises_from_start_and_gets_a_500(
        self, serve: Any, headers: list[tuple[bytes, bytes]]
    ) -> None:
        raised: list[BaseException] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            except Exception as exc:
                raised.append(exc)
                raise

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 500
        assert [type(exc) for exc in raised] == [ValueError]

    @pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 304)])
    async def test_head_and_304_declare_a_length_they_do_not_carry(
        self, serve: Any, method: str, status: int
    ) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-length", b"3")],
                }
            )
            await send({"type": "http.response.body", "body": b""})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request(method=method))
            response = await client.read_response(head_request=True)
            assert response.status == status
            assert response.header(b"content-length") == b"3"
            await client.send(request(method=method))
            assert (await client.read_response(head_request=True)).status == status


@pytest.mark.parametrize(
    "start",
    [
        {"status": 200, "headers": [(b"x-padded", b"value ")]},
        {"status": 200, "headers": [(b"x-tab", b"\x0bvalue")]},
        {"status": 150, "headers": []},
    ],
)
async def test_a_head_the_wire_would_refuse_raises_in_send_and_gets_500(
    serve: Any, start: dict[str, Any]
) -> None:
    """Checked when the app sends it, so the client still gets a 500, never zero bytes."""
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", **start})
        except (TypeError, ValueError) as exc:
            raised.append(exc)
            raise

    async with serve(app, lifespan="off") as srv, connect(srv) as client:
        await client.send(request())
        assert (await client.read_response()).status == 500
    assert len(raised) == 1


async def test_concurrent_receive_calls_take_turns(serve: Any) -> None:
    """A disconnect watcher and a body reader may call receive() at once."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                seen.append((await receive())["type"])

            nursery.start_soon(watch)
            nursery.start_soon(watch)
            await trio.sleep(0.05)
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app, lifespan="off") as srv, connect(srv) as client:
        await client.send(request())
        response = await client.read_response()
    assert (response.status, response.body) == (200, b"ok")
    assert sorted(seen) == ["http.disconnect", "http.request"]
