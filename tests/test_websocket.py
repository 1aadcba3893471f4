"""The ASGI websocket contract against a real server, with two independent clients.

trio-websocket runs in the test's own trio loop; the websockets library's
sync client runs in a worker thread (its asyncio client cannot run under trio).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio_websocket
import websockets
from ws_client import WAIT, Recorder, in_thread, sync_client, ws_url


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})


async def test_echo_with_trio_websocket(serve: Any) -> None:
    async with serve(echo_app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                await ws.send_message(b"\x00\xff")
                assert await ws.get_message() == b"\x00\xff"


async def test_echo_with_websockets(serve: Any) -> None:
    def talk(url: str) -> list[Any]:
        with sync_client(url) as ws:
            ws.send("hello")
            ws.send(b"\x00\xff")
            ws.send(["frag", "mented"])  # one text message in three frames
            ws.send([b"a", b"b"])
            return [ws.recv(WAIT) for _ in range(4)]

    async with serve(echo_app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            assert await in_thread(lambda: talk(ws_url(srv))) == [
                "hello",
                b"\x00\xff",
                "fragmented",
                b"ab",
            ]


async def test_scope(serve: Any) -> None:
    seen = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        seen.add(scope)
        await receive()
        await send({"type": "websocket.close"})

    async with serve(app, lifespan="off", root_path="/root") as srv:
        with trio.fail_after(WAIT):
            with pytest.raises(trio_websocket.ConnectionRejected):
                async with trio_websocket.open_websocket_url(
                    ws_url(srv, "/a%20b/c?x=1&y=2"),
                    subprotocols=["chat", "superchat"],
                    extra_headers=[(b"x-test", b"yes")],
                ):
                    pass
            (scope,) = await seen.wait_for(len)
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/root/a b/c"
    assert scope["raw_path"] == b"/root/a%20b/c"
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["root_path"] == "/root"
    assert (b"x-test", b"yes") in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", srv.port)
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["state"] == {}
    # The http.response.* extensions the handshake request was offered are HTTP's only.
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert "method" not in scope


async def test_accept_with_subprotocol_and_headers(serve: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": scope["subprotocols"][1],
                "headers": [(b"x-accepted", b"1")],
            }
        )
        await send({"type": "websocket.send", "text": "hi"})
        await receive()

    def talk(url: str) -> tuple[str | None, str | None, str]:
        with sync_client(url, subprotocols=["one", "two"]) as ws:
            return ws.subprotocol, ws.response.headers.get("x-accepted"), ws.recv(WAIT)

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(
                ws_url(srv), subprotocols=["one", "two"]
            ) as ws:
                assert ws.subprotocol == "two"
                assert (b"x-accepted", b"1") in ws.handshake_headers
                assert await ws.get_message() == "hi"
            assert await in_thread(lambda: talk(ws_url(srv))) == ("two", "1", "hi")


async def test_first_receive_is_connect_and_nothing_before_accept(serve: Any) -> None:
    seen = Recorder()
    release = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        seen.add(await receive())
        await release.wait()
        await send({"type": "websocket.accept"})
        seen.add(await receive())

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:

                async def client() -> None:
                    async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                        seen.add("client connected")
                        await ws.send_message("after accept")

                nursery.start_soon(client)
                await seen.wait_for(len)
                await trio.testing.wait_all_tasks_blocked(0.05)
                assert seen.items == [{"type": "websocket.connect"}]
                release.set()
                items = await seen.wait_for(lambda items: len(items) == 3)
    assert items[1] == "client connected"
    assert items[2] == {"type": "websocket.receive", "text": "after accept"}


async def test_close_before_accept_is_403(serve: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.close", "code": 4000})
        assert (await receive())["type"] == "websocket.disconnect"

    def talk(url: str) -> int:
        with pytest.raises(websockets.InvalidStatus) as info:
            sync_client(url)
        return info.value.response.status_code

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(ws_url(srv)):
                    pass
            assert info.value.status_code == 403
            assert info.value.body == b"Forbidden"
            assert (b"content-length", b"9") in info.value.headers
            assert await in_thread(lambda: talk(ws_url(srv))) == 403


@pytest.mark.parametrize("content_length", [True, False])
async def test_denial_response(serve: Any, content_length: bool) -> None:
    late = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        headers = [(b"x-why", b"teapot")]
        if content_length:
            headers.append((b"content-length", b"15"))
        await send({"type": "websocket.http.response.start", "status": 418, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"short ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"and ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"stout"})
        try:
            await send({"type": "websocket.http.response.body", "body": b"!"})
        except OSError as exc:
            late.add(exc)
        late.add(await receive())

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(ws_url(srv)):
                    pass
            error, disconnect = await late.wait_for(lambda items: len(items) == 2)
    assert info.value.status_code == 418
    assert (b"x-why", b"teapot") in info.value.headers
    assert info.value.body == b"short and stout"
    assert isinstance(error, OSError)
    assert disconnect["type"] == "websocket.disconnect"


def _handshake_headers(**overrides: str | None) -> dict[str, str]:
    headers = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    for key, value in overrides.items():
        name = key.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"sec_websocket_version": "8"}, 426),
        ({"sec_websocket_version": None}, 426),
        ({"sec_websocket_key": "short"}, 400),
        ({"sec_websocket_key": "bm90IGV4YWN0bHkgMTYgYnl0ZXM="}, 400),
        ({"sec_websocket_key": None}, 400),
        ({"connection": "keep-alive"}, 400),
    ],
)
async def test_bad_handshakes(serve: Any, overrides: dict[str, str | None], status: int) -> None:
    async with serve(echo_app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url + "/", headers=_handshake_headers(**overrides))
    assert response.status_code == status
    assert response.headers["content-length"] == str(len(response.content))
    if status == 426:
        assert response.headers["sec-websocket-version"] == "13"


async def test_handshake_succeeds_with_101(serve: Any) -> None:
    async with serve(echo_app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            stream = await trio.open_tcp_stream(srv.host, srv.port)
            lines = ["GET / HTTP/1.1\r\nhost: x\r\n"]
            lines += [f"{k}: {v}\r\n" for k, v in _handshake_headers().items()]
            await stream.send_all(("".join(lines) + "\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
            await stream.aclose()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head


async def test_other_upgrades_are_plain_http(serve: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["type"].encode()})

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient() as client:
                response = await client.get(
                    srv.url, headers={"upgrade": "h2c", "connection": "upgrade"}
                )
    assert response.status_code == 200
    assert response.text == "http"


async def test_ws_none_serves_upgrade_requests_as_plain_http(serve: Any) -> None:
    """``--ws none``: the handshake is an ordinary request (WSGI apps refuse it instead,
    see tests/test_wsgi.py)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise AssertionError(f"unexpected scope {scope['type']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    async with serve(app, lifespan="off", ws="none") as srv:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url, headers=_handshake_headers())
    assert response.status_code == 200
    assert response.text == "plain"


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("send", 500), ("return", 500), ("raise", 500), ("start-then-raise", 500)],
)
async def test_failures_before_accept_are_500(serve: Any, behaviour: str, expected: int) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if behaviour == "send":
            await send({"type": "websocket.send", "text": "too early"})
        elif behaviour == "raise":
            raise RuntimeError("boom")
        elif behaviour == "start-then-raise":
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            raise RuntimeError("boom")

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            for _ in range(2):  # the server survives and answers the next one the same way
                with pytest.raises(trio_websocket.ConnectionRejected) as info:
                    async with trio_websocket.open_websocket_url(ws_url(srv)):
                        pass
                assert info.value.status_code == 500
                assert info.value.body == b"Internal Server Error"


async def test_send_variants(serve: Any) -> None:
    errors = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": None, "text": "text wins"})
        await send({"type": "websocket.send", "bytes": b"bytes win", "text": None})
        await send({"type": "websocket.send", "text": ""})
        for bad in ({}, {"bytes": b"x", "text": "y"}, {"bytes": None, "text": None}):
            try:
                await send({"type": "websocket.send", **bad})
            except (TypeError, ValueError) as exc:
                errors.add(exc)
        await send({"type": "websocket.send", "text": "still open"})
        await receive()

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                received = [await ws.get_message() for _ in range(4)]
    assert received == ["text wins", b"bytes win", "", "still open"]
    assert len(errors.items) == 3


async def test_many_messages_in_order(serve: Any) -> None:
    count = 1000

    def talk(url: str) -> list[Any]:
        with sync_client(url) as ws:
            for i in range(count):
                ws.send(str(i) if i % 2 else str(i).encode())
            return [ws.recv(WAIT) for _ in range(count)]

    async with serve(echo_app, lifespan="off") as srv:
        with trio.fail_after(WAIT * 3):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                async with trio.open_nursery() as nursery:

                    async def sender() -> None:
                        for i in range(count):
                            await ws.send_message(str(i))

                    nursery.start_soon(sender)
                    received = [await ws.get_message() for _ in range(count)]
            assert received == [str(i) for i in range(count)]
            received = await in_thread(lambda: talk(ws_url(srv)))
    assert received == [str(i) if i % 2 else str(i).encode() for i in range(count)]


@pytest.mark.parametrize(
    "accept",
    [
        {"headers": [(b"x-bad", b"split\r\nx-evil: 1")]},
        {"headers": [(b"x-padded", b" value")]},
        {"subprotocol": "chat\r\nx-evil: 1"},
        {"subprotocol": "two words"},
    ],
)
async def test_accept_with_an_unsendable_head_is_500_not_101(
    serve: Any, accept: dict[str, Any]
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", **accept})

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url, headers=_handshake_headers())
    assert response.status_code == 500
    assert b"x-evil" not in response.content


@pytest.mark.parametrize("answer", ["deny", "forbid", "fail"])
async def test_a_refused_handshake_says_connection_close_once(serve: Any, answer: str) -> None:
    """The connection always closes after a refusal; HTTP/1.1's transport says so, once."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if answer == "deny":
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"no"})
        elif answer == "forbid":
            await send({"type": "websocket.close"})
        else:
            raise RuntimeError("boom")

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            stream = await trio.open_tcp_stream(srv.host, srv.port)
            lines = ["GET / HTTP/1.1\r\nhost: x\r\n"]
            lines += [f"{k}: {v}\r\n" for k, v in _handshake_headers().items()]
            await stream.send_all(("".join(lines) + "\r\n").encode())
            response = b""
            while data := await stream.receive_some(4096):
                response += data
            await stream.aclose()
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert head.split(b"\r\n")[0].split()[1] in (b"401", b"403", b"500")
    assert head.count(b"\r\nconnection: ") == 1
    assert b"\r\nconnection: close" in head
