"""HTTP/1.1 through real sockets: scope contents, keep-alive, framing and response headers."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest
import trio
from h1_client import (
    WAIT,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    ok_app,
    request,
)

from palfrey.transport.socket_stream import SocketStream

Scope = dict[str, Any]


def recording_app(scopes: list[Scope], body: bytes = b"ok", headers: list | None = None) -> Any:
    """An app that keeps every http scope it sees and answers ``body``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


async def echo_path(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the request path, after reading the whole request body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = scope["path"].encode() + b":" + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(payload))],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class TestScope:
    async def test_full_scope(self, serve: Any) -> None:
        scopes: list[Scope] = []
        async with serve(recording_app(scopes)) as srv, connect(srv) as client:
            await client.send(
                b"GET /caf%C3%A9/a%2Fb?x=1&y=%20z HTTP/1.1\r\nHost: example.com\r\n"
                b"X-Dup: one\r\nUser-Agent: raw\r\nx-dup: two\r\n\r\n"
            )
            response = await client.read_response()
            local = client.stream.socket.getsockname()
        assert response.status == 200
        (scope,) = scopes
        assert scope["type"] == "http"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
        assert scope["http_version"] == "1.1"
        assert scope["method"] == "GET"
        assert scope["scheme"] == "http"
        assert scope["path"] == "/café/a/b"
        assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
        assert scope["query_string"] == b"x=1&y=%20z"
        assert scope["root_path"] == ""
        assert scope["headers"] == [
            (b"host", b"example.com"),
            (b"x-dup", b"one"),
            (b"user-agent", b"raw"),
            (b"x-dup", b"two"),
        ]
        assert scope["client"] == (local[0], local[1])
        assert scope["server"] == ("127.0.0.1", srv.port)
        assert isinstance(scope["state"], dict)

    async def test_http_10_scope(self, serve: Any) -> None:
        scopes: list[Scope] = []
        async with serve(recording_app(scopes)) as srv, connect(srv) as client:
            await client.send(b"GET /old HTTP/1.0\r\n\r\n")
            response = await client.read_response()
        assert response.body == b"ok"
        assert scopes[0]["http_version"] == "1.0"

    async def test_methods_and_absolute_form_target(self, serve: Any) -> None:
        scopes: list[Scope] = []
        async with serve(recording_app(scopes)) as srv, connect(srv) as client:
            await client.send(request("OPTIONS", "*"))
            await client.read_response()
            await client.send(request("DELETE", "http://example.com/thing?q=2"))
            await client.read_response()
        assert [(s["method"], s["path"], s["query_string"]) for s in scopes] == [
            ("OPTIONS", "*", b""),
            ("DELETE", "/thing", b"q=2"),
        ]

    async def test_root_path_is_part_of_path(self, serve: Any) -> None:
        scopes: list[Scope] = []
        async with serve(recording_app(scopes), root_path="/api") as srv:
            async with httpx.AsyncClient() as client:
                await client.get(srv.url + "/users/1?x=y")
        (scope,) = scopes
        assert scope["root_path"] == "/api"
        assert scope["path"] == "/api/users/1"
        assert scope["raw_path"] == b"/api/users/1"
        assert scope["query_string"] == b"x=y"

    async def test_state_is_a_shallow_copy_of_lifespan_state(self, serve: Any) -> None:
        scopes: list[Scope] = []
        shared: list[str] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await receive()
                scope["state"]["shared"] = shared
                scope["state"]["name"] = "lifespan"
                await send({"type": "lifespan.startup.complete"})
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
                return
            scopes.append(scope)
            scope["state"]["shared"].append(scope["path"])
            scope["state"]["name"] = "changed by " + scope["path"]
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": scope["state"]["name"].encode()})

        async with serve(app) as srv, httpx.AsyncClient() as client:
            await client.get(srv.url + "/a")
            await client.get(srv.url + "/b")
        assert scopes[1]["state"]["name"] == "changed by /b"
        assert scopes[0]["state"] is not scopes[1]["state"]
        assert shared == ["/a", "/b"]


class TestKeepAlive:
    async def test_requests_reuse_the_connection(self, serve: Any) -> None:
        scopes: list[Scope] = []
        async with serve(recording_app(scopes)) as srv, connect(srv) as client:
            for _ in range(3):
                await client.send(request())
                response = await client.read_response()
                assert response.body == b"ok"
        assert len({scope["client"] for scope in scopes}) == 1

    async def test_connection_close_from_client(self, serve: Any) -> None:
        async with serve(ok_app) as srv, connect(srv) as client:
            await client.send(request(headers=[("Connection", "close")]))
            response = await client.read_response()
            assert response.header(b"connection") == b"close"
            await client.assert_closed()

    async def test_connection_close_from_app(self, serve: Any) -> None:
        app = recording_app([], headers=[(b"connection", b"close")])
        async with serve(app) as srv, connect(srv) as client:
            await client.send(request())
            response = await client.read_response()
            assert response.body == b"ok"
            await client.assert_closed()

    async def test_http_10_closes(self, serve: Any) -> None:
        async with serve(ok_app) as srv, connect(srv) as client:
            await client.send(b"GET / HTTP/1.0\r\n\r\n")
            data = await client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.endswith(b"\r\n\r\nok")

    async def test_half_closed_client_still_gets_its_response(self, serve: Any) -> None:
        async with serve(echo_path) as srv, connect(srv) as client:
            await client.send(request("POST", "/half", body=b"body"))
            await client.stream.send_eof()
            assert (await client.read_response()).body == b"/half:body"
            await client.assert_closed()

    async def test_pipelined_head_then_get(self, serve: Any) -> None:
        app = recording_app([], body=b"hello", headers=[(b"content-length", b"5")])
        async with serve(app) as srv, connect(srv) as client:
            await client.send(request("HEAD") + request("GET"))
            assert (await client.read_response(head_request=True)).body == b""
            assert (await client.read_response()).body == b"hello"

    async def test_pipelined_requests_answered_in_order(self, serve: Any) -> None:
        async with serve(echo_path) as srv, connect(srv) as client:
            await client.send(
                request(target="/1")
                + request("POST", "/2", body=b"two")
                + request(target="/3")
                + request("POST", "/4", headers=[("Transfer-Encoding", "chunked")])
                + b"4\r\nfour\r\n0\r\n\r\n"
            )
            bodies = [(await client.read_response()).body for _ in range(4)]
        assert bodies == [b"/1:", b"/2:two", b"/3:", b"/4:four"]

    async def test_unread_body_is_drained_for_the_next_request(self, serve: Any) -> None:
        async with serve(ok_app) as srv, connect(srv) as client:
            await client.send(request("POST", "/", body=b"x" * 5000) + request(target="/next"))
            assert (await client.read_response()).body == b"ok"
            assert (await client.read_response()).body == b"ok"

    async def test_large_unread_body_closes_after_the_response(self, serve: Any) -> None:
        async with serve(ok_app) as srv, connect(srv) as client:
            size = 8 * 1024 * 1024
            await client.send(request("POST", headers=[("Content-Length", str(size))]))

            async def upload() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    await client.send(b"x" * size)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload)
                response = await client.read_response()
                assert response.body == b"ok"
                await client.read_until_closed()
                nursery.cancel_scope.cancel()

    async def test_head_has_no_body_but_keeps_content_length(self, serve: Any) -> None:
        app = recording_app([], body=b"hello", headers=[(b"content-length", b"5")])
        async with serve(app) as srv, connect(srv) as client:
            await client.send(request("HEAD"))
            response = await client.read_response(head_request=True)
            assert response.header(b"content-length") == b"5"
            await client.send(request("GET"))
            response = await client.read_response()
        assert response.body == b"hello"

    async def test_head_with_streamed_response_sends_no_body(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
            await send({"type": "http.response.body", "body": b"def"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request("HEAD") + request("GET"))
            head = await client.read_response(head_request=True)
            assert head.status == 200
            assert (await client.read_response()).body == b"abcdef"

    async def test_chunked_response_without_content_length(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await send({"type": "http.response.body", "body": b"world", "more_body": True})
            await send({"type": "http.response.body"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            response = await client.read_response()
            assert response.header(b"transfer-encoding") == b"chunked"
            assert response.body == b"hello world"
            await client.send(request())
            assert (await client.read_response()).body == b"hello world"

    async def test_http_10_response_without_length_is_close_delimited(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"b"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(b"GET / HTTP/1.0\r\n\r\n")
            response = await client.read_response()
        assert response.header(b"transfer-encoding") is None
        assert response.body == b"ab"

    async def test_unsupported_upgrade_is_plain_http(self, serve: Any) -> None:
        scopes: list[Scope] = []
        async with serve(recording_app(scopes)) as srv, connect(srv) as client:
            await client.send(request(headers=[("Upgrade", "foo/2"), ("Connection", "upgrade")]))
            response = await client.read_response()
            assert response.status == 200
            await client.send(request(target="/after"))
            assert (await client.read_response()).status == 200
        assert [scope["path"] for scope in scopes] == ["/", "/after"]


class TestExpectContinue:
    async def test_continue_sent_when_app_reads(self, serve: Any) -> None:
        reading = trio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await reading.wait()
            message = await receive()
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": message["body"]})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(
                request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
            )
            await client.assert_silent(0.1)
            reading.set()
            interim = await client.read_head()
            assert interim.head == b"HTTP/1.1 100 Continue\r\n\r\n"
            await client.send(b"hello")
            response = await client.read_response()
        assert response.body == b"hello"

    async def test_no_continue_when_app_answers_without_reading(self, serve: Any) -> None:
        async with serve(ok_app) as srv, connect(srv) as client:
            await client.send(
                request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
            )
            response = await client.read_response()
            assert response.status == 200
            assert b"100 Continue" not in response.head
            assert response.header(b"connection") == b"close"
            # The client never sent the body it offered; the connection cannot be reused.
            await client.assert_closed()

    async def test_a_body_sent_without_waiting_is_drained_and_the_connection_reused(
        self, serve: Any
    ) -> None:
        # The client did not wait for 100 Continue: its body is on its way, so the
        # server drains it rather than closing (as h11 decides).
        async with serve(ok_app) as srv, connect(srv) as client:
            head = request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
            await client.send(head + b"hello")
            response = await client.read_response()
            assert response.status == 200
            assert response.header(b"connection") is None
            await client.send(request(target="/after"))
            assert (await client.read_response()).status == 200


class TestResponseHeaders:
    async def test_server_and_date_by_default(self, serve: Any) -> None:
        async with serve(ok_app) as srv, httpx.AsyncClient() as client:
            response = await client.get(srv.url)
        assert response.headers["server"] == "palfrey"
        assert response.headers["date"].endswith(" GMT")

    async def test_server_and_date_can_be_disabled(self, serve: Any) -> None:
        async with serve(ok_app, server_header=False, date_header=False) as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
        assert "server" not in response.headers
        assert "date" not in response.headers

    async def test_extra_headers(self, serve: Any) -> None:
        async with serve(ok_app, header=["X-A:1", "x-b: two words"]) as srv:
            async with connect(srv) as client:
                await client.send(request())
                response = await client.read_response()
        assert response.header(b"x-a") == b"1"
        assert response.header(b"x-b") == b"two words"

    async def test_app_headers_win_over_defaults(self, serve: Any) -> None:
        app = recording_app([], headers=[(b"Server", b"mine"), (b"X-A", b"app")])
        async with serve(app, header=["x-a:default"]) as srv, connect(srv) as client:
            await client.send(request())
            response = await client.read_response()
        assert response.header_list(b"server") == [b"mine"]
        assert response.header_list(b"x-a") == [b"app"]

    async def test_status_lines_carry_reason_phrases(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            status = int(scope["path"][1:])
            await send({"type": "http.response.start", "status": status})
            await send({"type": "http.response.body"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            lines = []
            for status in (200, 201, 404, 418, 500):
                await client.send(request(target=f"/{status}"))
                response = await client.read_response()
                lines.append(response.head.split(b"\r\n")[0])
        assert lines == [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 201 Created",
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.1 418 I'm a Teapot",
            b"HTTP/1.1 500 Internal Server Error",
        ]

    async def test_no_content_responses(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": int(scope["path"][1:])})
            await send({"type": "http.response.body"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            for status in (204, 304):
                await client.send(request(target=f"/{status}"))
                response = await client.read_response()
                assert response.status == status
                assert response.header(b"transfer-encoding") is None
            await client.send(request(target="/200"))
            assert (await client.read_response()).status == 200


class TestLargeBodies:
    """A large first body message goes out beside its head by one gathering ``sendmsg``."""

    BODY = bytes(range(256)) * 4 * 1024  # 1 MiB, no two neighbouring KiB alike

    @staticmethod
    def large_app(body: bytes, *, length: bool) -> Any:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            headers = [(b"content-length", b"%d" % len(body))] if length else []
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return app

    @pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
    async def test_body_arrives_whole_on_a_kept_alive_connection(
        self, serve: Any, length: bool
    ) -> None:
        async with serve(self.large_app(self.BODY, length=length)) as srv, connect(srv) as client:
            for method in ("GET", "HEAD", "GET"):
                await client.send(request(method))
                response = await client.read_response(head_request=method == "HEAD")
                assert response.status == 200
                assert response.body == (b"" if method == "HEAD" else self.BODY)
                framing = b"content-length" if length else b"transfer-encoding"
                assert response.header(framing) is not None

    @pytest.mark.parametrize(("size", "gathered"), [(16 * 1024, True), (16 * 1024 - 1, False)])
    async def test_only_bodies_from_the_threshold_on_are_gathered(
        self, serve: Any, monkeypatch: pytest.MonkeyPatch, size: int, gathered: bool
    ) -> None:
        calls: list[int] = []
        original = SocketStream.send_all_parts

        async def counting(stream: SocketStream, first: bytes, second: bytes) -> None:
            calls.append(len(second))
            await original(stream, first, second)

        monkeypatch.setattr(SocketStream, "send_all_parts", counting)
        body = b"x" * size
        async with serve(self.large_app(body, length=True)) as srv:
            async with httpx.AsyncClient() as http:
                assert (await http.get(srv.url)).content == body
        assert calls == ([size] if gathered else [])


async def test_many_sequential_connections(serve: Any) -> None:
    with trio.fail_after(WAIT):
        async with serve(ok_app) as srv, httpx.AsyncClient() as client:
            responses = [await client.get(srv.url + f"/{i}") for i in range(20)]
    assert {response.text for response in responses} == {"ok"}


async def test_serves_on_ipv6_loopback(serve: Any) -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["client"][0], scope["server"]))
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})

    async with serve(app, host="::1", lifespan="off") as srv:
        assert srv.url.startswith("http://[::1]:")
        async with httpx.AsyncClient() as client:
            assert (await client.get(srv.url)).status_code == 204
    assert seen == [("::1", ("::1", srv.port))]
