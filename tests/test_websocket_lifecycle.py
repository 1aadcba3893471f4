"""Closing, limits, compression, failures and shutdown, seen by trio-websocket and websockets."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio_websocket
from websockets.exceptions import ConnectionClosed
from ws_client import WAIT, Recorder, in_thread, sync_client, ws_url


def recording_echo(seen: Recorder) -> Any:
    """Echoes messages and records the disconnect."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
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


def close_code_seen_by_websockets(url: str, action: Callable[[Any], None], **options: Any) -> Any:
    """Run ``action`` on a websockets connection; the close frame the server sent."""
    with sync_client(url, **options) as ws:
        try:
            action(ws)
            while True:
                ws.recv(WAIT)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None


async def test_client_close_reaches_the_app(serve: Any) -> None:
    seen = Recorder()
    async with serve(recording_echo(seen), lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.aclose(4001, "ciao")
            assert ws.closed.code == 4001

            def close_it(ws: Any) -> None:
                ws.close(4002, "bye")

            await in_thread(lambda: close_code_seen_by_websockets(ws_url(srv), close_it))
            items = await seen.wait_for(lambda items: len(items) == 2)
    assert items == [
        {"type": "websocket.disconnect", "code": 4001, "reason": "ciao"},
        {"type": "websocket.disconnect", "code": 4002, "reason": "bye"},
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"type": "websocket.close"}, (1000, "")),
        ({"type": "websocket.close", "code": 4003, "reason": "done"}, (4003, "done")),
        ({"type": "websocket.close", "code": 1001, "reason": None}, (1001, "")),
        (None, (1000, "")),
    ],
)
async def test_app_close_reaches_the_client(
    serve: Any, message: dict[str, Any] | None, expected: tuple[int, str]
) -> None:
    seen = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["text"] == "close please"
        if message is None:
            return  # returning after accept closes with 1000
        await send(message)
        seen.add(await receive())
        try:
            await send({"type": "websocket.send", "text": "after close"})
        except OSError as exc:
            seen.add(exc)

    def ask(ws: Any) -> None:
        ws.send("close please")

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.send_message("close please")
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert (info.value.reason.code, info.value.reason.reason or "") == expected
            seen_by_websockets = await in_thread(
                lambda: close_code_seen_by_websockets(ws_url(srv), ask)
            )
            assert seen_by_websockets == expected
            if message is not None:
                items = await seen.wait_for(lambda items: len(items) == 4)
                assert items[0]["type"] == "websocket.disconnect"
                assert items[0]["code"] == expected[0]
                assert isinstance(items[1], OSError)


async def test_crash_after_accept_is_1011_and_the_server_keeps_serving(serve: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message.get("text") == "crash":
            raise RuntimeError("boom")
        await send({"type": "websocket.send", "text": "fine"})

    async with serve(app, lifespan="off") as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.send_message("crash")
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert info.value.reason.code == 1011
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "fine"


@pytest.mark.parametrize("kind", ["text", "bytes"])
async def test_message_too_big_across_fragments_is_1009(serve: Any, kind: str) -> None:
    seen = Recorder()
    fragment: str | bytes = "a" * 400 if kind == "text" else b"a" * 400

    def fragmented(ws: Any) -> None:
        ws.send([fragment] * 2)  # 800 bytes: fits
        assert ws.recv(WAIT) == fragment * 2  # type: ignore[operator]
        ws.send([fragment] * 3)  # 1200 bytes in three frames of 400: too big

    async with serve(recording_echo(seen), lifespan="off", ws_max_size=1000) as srv:
        with trio.fail_after(WAIT):
            result = await in_thread(
                lambda: close_code_seen_by_websockets(ws_url(srv), fragmented, compression=None)
            )
            assert result[0] == 1009
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.send_message(fragment * 3)  # type: ignore[operator]
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert info.value.reason.code == 1009
            items = await seen.wait_for(lambda items: len(items) == 2)
    assert [item["code"] for item in items] == [1009, 1009]


async def test_per_message_deflate(serve: Any) -> None:
    seen = Recorder()
    big = "compress me " * 2000

    def talk(url: str) -> tuple[str | None, str]:
        with sync_client(url) as ws:
            ws.send(big)
            return ws.response.headers.get("sec-websocket-extensions"), ws.recv(WAIT)

    def bomb(ws: Any) -> None:
        ws.send(b"\x00" * 1_000_000)  # a few kilobytes on the wire

    async with serve(recording_echo(seen), lifespan="off", ws_max_size=100_000) as srv:
        with trio.fail_after(WAIT):
            extensions, echoed = await in_thread(lambda: talk(ws_url(srv)))
            assert extensions is not None and extensions.startswith("permessage-deflate")
            assert echoed == big
            code, _ = await in_thread(lambda: close_code_seen_by_websockets(ws_url(srv), bomb))
            assert code == 1009
    async with serve(recording_echo(seen), lifespan="off", ws_per_message_deflate=False) as srv:
        with trio.fail_after(WAIT):
            extensions, echoed = await in_thread(lambda: talk(ws_url(srv)))
            assert extensions is None
            assert echoed == big


async def test_client_ping_with_trio_websocket(serve: Any) -> None:
    seen = Recorder()
    async with serve(recording_echo(seen), lifespan="off", ws_ping_interval=0.02) as srv:
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.ping(b"hello")  # returns once the pong arrived
                await trio.sleep(0.1)  # several server pings, answered by the client
                await ws.send_message("still here")
                assert await ws.get_message() == "still here"


async def test_shutdown_closes_with_1012_and_waits_for_the_app(serve: Any) -> None:
    seen = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                seen.add(message)
                await trio.sleep(0.1)  # cleanup the server must wait for
                seen.add("cleaned up")
                return
            await send({"type": "websocket.send", "text": message["text"]})

    closed: list[Any] = []
    with trio.fail_after(WAIT):
        async with serve(app, lifespan="off") as srv:
            async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                await ws.send_message("ready")
                assert await ws.get_message() == "ready"
                srv.shutdown()
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                closed.append(info.value.reason.code)
    assert closed == [1012]
    assert seen.items == [
        {"type": "websocket.disconnect", "code": 1012, "reason": ""},
        "cleaned up",
    ]


async def test_shutdown_with_websockets_client(serve: Any) -> None:
    seen = Recorder()
    connected = trio.Event()

    def wait_for_close(url: str, token: trio.lowlevel.TrioToken) -> Any:
        def ready(ws: Any) -> None:
            ws.send("ready")
            assert ws.recv(WAIT) == "ready"
            trio.from_thread.run_sync(connected.set, trio_token=token)

        return close_code_seen_by_websockets(url, ready)

    with trio.fail_after(WAIT):
        async with serve(recording_echo(seen), lifespan="off") as srv:
            async with trio.open_nursery() as nursery:
                results: list[Any] = []
                token = trio.lowlevel.current_trio_token()

                async def client() -> None:
                    results.append(await in_thread(lambda: wait_for_close(ws_url(srv), token)))

                nursery.start_soon(client)
                await connected.wait()
                srv.shutdown()
    assert results == [(1012, "")]
    assert seen.items == [{"type": "websocket.disconnect", "code": 1012, "reason": ""}]


async def test_shutdown_during_the_handshake_closes_right_after_accept(serve: Any) -> None:
    seen = Recorder()
    asked = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        asked.set()
        await trio.testing.wait_all_tasks_blocked()  # the server has begun its shutdown
        await send({"type": "websocket.accept"})
        seen.add(await receive())

    with trio.fail_after(WAIT):
        async with serve(app, lifespan="off") as srv:
            async with trio.open_nursery() as nursery:
                codes: list[int] = []

                async def client() -> None:
                    async with trio_websocket.open_websocket_url(ws_url(srv)) as ws:
                        with pytest.raises(trio_websocket.ConnectionClosed) as info:
                            await ws.get_message()
                        codes.append(info.value.reason.code)

                nursery.start_soon(client)
                await asked.wait()
                srv.shutdown()
    assert codes == [1012]
    assert seen.items == [{"type": "websocket.disconnect", "code": 1012, "reason": ""}]


async def test_wss(serve: Any, certificate: Any) -> None:
    certfile, keyfile = certificate.certfile, certificate.keyfile
    seen = Recorder()
    schemes = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            schemes.add(scope["scheme"])
        await recording_echo(seen)(scope, receive, send)

    context = ssl.create_default_context(cafile=certfile)
    options = {"ssl_certfile": certfile, "ssl_keyfile": keyfile, "ws_max_size": 100}
    async with serve(app, lifespan="off", **options) as srv:
        url = srv.url.replace("https://", "wss://")
        with trio.fail_after(WAIT):
            async with trio_websocket.open_websocket_url(url, context) as ws:
                await ws.send_message("secure")
                assert await ws.get_message() == "secure"
            async with trio_websocket.open_websocket_url(url, context) as ws:
                await ws.send_message("x" * 101)
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
            assert info.value.reason.code == 1009
            items = await seen.wait_for(lambda items: len(items) == 2)
    assert schemes.items == ["wss", "wss"]
    assert [item["code"] for item in items] == [1000, 1009]
