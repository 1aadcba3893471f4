"""asyncio-flavoured apps under ``loop="asyncio"`` (trio-asyncio), through the real server."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sniffio
import trio
from anyio._backends import _asyncio as anyio_asyncio_backend
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import palfrey

# The only skip: trio-asyncio has no release for 3.14. Elsewhere the dev extra installs it,
# and a broken install must fail here, not be skipped.
if sys.version_info >= (3, 14):
    pytest.skip("trio-asyncio does not support Python 3.14 yet", allow_module_level=True)

TIMEOUT = 10


@pytest.fixture(autouse=True)
def _anyio_sees_trio_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo an import-order artefact of the test process.

    anyio's pytest plugin imports anyio's asyncio backend at start-up, before
    trio-asyncio patches ``asyncio.get_running_loop``/``current_task``, so the
    backend holds the unpatched functions. The CLI imports trio-asyncio
    before the application for exactly this reason.
    """
    monkeypatch.setattr(anyio_asyncio_backend, "get_running_loop", asyncio.get_running_loop)
    monkeypatch.setattr(anyio_asyncio_backend, "current_task", asyncio.current_task)


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Any, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


class TickerApp:
    """Starts an asyncio task at startup that feeds a queue which requests then read."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.events: list[str] = []
        self.queue: asyncio.Queue[int] | None = None
        self.ticker: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        count = 0
        while True:
            await asyncio.sleep(0.001)
            await self.queue.put(count)  # type: ignore[union-attr]
            count += 1

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loops.append(asyncio.get_running_loop())
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        assert sniffio.current_async_library() == "asyncio"
        done = asyncio.Event()
        results: list[int] = []

        async def helper() -> None:
            results.append(await self.queue.get())  # type: ignore[union-attr]
            done.set()

        task = asyncio.create_task(helper())
        await asyncio.wait_for(done.wait(), TIMEOUT)
        await task
        first, second = await asyncio.gather(self.queue.get(), self.queue.get())  # type: ignore[union-attr]
        assert results[0] < first < second
        await respond(send, f"{scope['state']['started']} {results[0]}".encode())

    async def lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                self.queue = asyncio.Queue(maxsize=2)
                self.ticker = asyncio.create_task(self.tick())
                scope["state"]["started"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            else:
                self.ticker.cancel()  # type: ignore[union-attr]
                try:
                    await self.ticker  # type: ignore[misc]
                except asyncio.CancelledError:
                    self.events.append("ticker cancelled")
                await send({"type": "lifespan.shutdown.complete"})
                return


async def test_asyncio_primitives_share_one_loop_with_lifespan(serve: Any) -> None:
    app = TickerApp()
    with trio.fail_after(TIMEOUT):
        async with serve(app, loop="asyncio") as srv:
            async with httpx.AsyncClient() as client:
                responses = [await client.get(srv.url) for _ in range(3)]
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(client.get, srv.url)
            assert sniffio.current_async_library() == "trio"
    assert [response.text.split()[0] for response in responses] == ["yes"] * 3
    assert len(app.loops) == 7
    assert all(loop is app.loops[0] for loop in app.loops)
    assert app.events == ["lifespan.startup", "lifespan.shutdown", "ticker cancelled"]


async def test_streaming_in_both_directions(serve: Any) -> None:
    received: list[bytes] = []
    may_finish: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            received.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        while not may_finish:
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b"second"})

    async def body() -> Any:
        yield b"one"
        while b"one" not in received:
            await trio.sleep(0.001)
        yield b"two"

    with trio.fail_after(TIMEOUT):
        async with serve(app, loop="asyncio", lifespan="off") as srv:
            async with httpx.AsyncClient() as client:
                async with client.stream("POST", srv.url, content=body()) as response:
                    parts = response.aiter_raw()
                    assert await parts.__anext__() == b"first;"
                    may_finish.append(True)
                    assert b"".join([part async for part in parts]) == b"second"
    assert b"".join(received) == b"onetwo"


async def test_exceptions_cross_the_bridge(serve: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise LookupError("asyncio app failed")

    with trio.fail_after(TIMEOUT):
        async with serve(app, loop="asyncio", lifespan="off") as srv:
            async with httpx.AsyncClient() as client:
                early = await client.get(srv.url + "/early")
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(srv.url + "/late")
    assert early.status_code == 500


async def test_disconnect_is_seen_by_the_asyncio_app(serve: Any) -> None:
    seen: list[str] = []
    finished = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"

        async def watch() -> None:
            seen.append((await receive())["type"])

        watcher = asyncio.create_task(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"z" * 4096, "more_body": True})
                await asyncio.sleep(0.001)
        except OSError as exc:
            seen.append(type(exc).__name__)
            await watcher
            finished.set()

    with trio.fail_after(TIMEOUT):
        async with serve(app, loop="asyncio", lifespan="off") as srv:
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", srv.url) as response:
                    await response.aiter_raw().__anext__()
            await finished.wait()
    assert sorted(seen) == ["ClientDisconnected", "http.disconnect"]


async def test_asyncio_libraries_work(serve: Any) -> None:
    """stdlib asyncio streams and httpx's asyncio backend, both from inside the app."""
    peer_messages: list[bytes] = []

    async def peer(stream: trio.SocketStream) -> None:
        data = await stream.receive_some()
        peer_messages.append(data)
        await stream.send_all(data.upper())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/inner":
            await respond(send, b"inner via " + sniffio.current_async_library().encode())
            return
        host, port = scope["server"]
        reader, writer = await asyncio.open_connection(host, int(scope["query_string"]))
        writer.write(b"ping")
        await writer.drain()
        echoed = await reader.read(100)
        writer.close()
        await writer.wait_closed()
        async with httpx.AsyncClient() as client:
            inner = await client.get(f"http://{host}:{port}/inner")
        await respond(send, echoed + b" " + inner.content)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, peer, 0, host="127.0.0.1")
            )
            peer_port = listeners[0].socket.getsockname()[1]
            async with serve(app, loop="asyncio", lifespan="off") as srv:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"{srv.url}/?{peer_port}")
            nursery.cancel_scope.cancel()
    assert response.text == "PING inner via asyncio"
    assert peer_messages == [b"ping"]


async def test_starlette_on_the_asyncio_loop(serve: Any) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        queue: asyncio.Queue[str] = asyncio.Queue()
        await queue.put("from lifespan")
        yield {"queue": queue, "loop": asyncio.get_running_loop()}

    async def index(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.001)
        assert request.state.loop is asyncio.get_running_loop()
        message = await request.state.queue.get()
        await request.state.queue.put(message)
        return PlainTextResponse(f"{message} on {sniffio.current_async_library()}")

    app = Starlette(routes=[Route("/", index)], lifespan=lifespan)
    with trio.fail_after(TIMEOUT):
        async with serve(app, loop="asyncio") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.text == "from lifespan on asyncio"


async def test_palfrey_serve_opens_the_loop_from_config() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0)
            await respond(send, sniffio.current_async_library().encode())

    config = palfrey.Config(app=app, port=0, loop="asyncio", lifespan="off", log_level="warning")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(palfrey.serve, app, config)
            async with httpx.AsyncClient() as client:
                response = await client.get(addresses[0])
            nursery.cancel_scope.cancel()
    assert response.text == "asyncio"


CLI_APP = """
from asyncio import get_running_loop, sleep  # bound at import, like many asyncio libraries


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await sleep(0)
    name = type(get_running_loop()).__name__.encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": name})
"""


async def test_cli_imports_trio_asyncio_before_the_app(tmp_path: Any) -> None:
    """``--loop asyncio`` from the command line, with an app that binds asyncio names early."""
    (tmp_path / "palfrey_cli_asyncio_app.py").write_text(CLI_APP)
    socket_path = tmp_path / "palfrey.sock"
    command = [
        sys.executable,
        "-m",
        "palfrey",
        "palfrey_cli_asyncio_app:app",
        "--app-dir",
        str(tmp_path),
        "--loop",
        "asyncio",
        "--uds",
        str(socket_path),
        "--lifespan",
        "off",
    ]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(trio.run_process, command, check=False, stderr=-1)
            )
            while not socket_path.exists():
                await trio.sleep(0.02)
            transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get("http://palfrey/")
            process.send_signal(signal.SIGINT)
    assert response.text == "TrioEventLoop"
    assert process.returncode == 0
