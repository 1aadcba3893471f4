"""Frameworks served unmodified: Starlette (anyio on trio), Quart-Trio, Flask and Django (WSGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import django
import httpx
import pytest
import sniffio
import trio
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path as url_path
from django.views.decorators.csrf import csrf_exempt
from flask import Flask, Response, stream_with_context
from flask import request as flask_request
from h1_client import connect
from h1_client import request as raw_request
from quart import request as quart_request
from quart import websocket as quart_websocket
from quart_trio import QuartTrio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from trio_websocket import ConnectionClosed, open_websocket_url

from palfrey.asgi.interfaces import detect_interface, wrap_app

TIMEOUT = 10


def ws_url(http_url: str, path: str) -> str:
    return "ws" + http_url.removeprefix("http") + path


# --- Starlette -----------------------------------------------------------------------------


def starlette_app(events: list[str], gate: trio.Event, stream_closed: trio.Event) -> Any:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hello", "hits": [0]}
        events.append("shutdown")

    async def index(request: Request) -> JSONResponse:
        request.state.hits[0] += 1
        return JSONResponse(
            {
                "greeting": request.state.greeting,
                "hits": request.state.hits[0],
                "library": sniffio.current_async_library(),
                "root_path": request.scope["root_path"],
            }
        )

    async def upload(request: Request) -> PlainTextResponse:
        chunks = []
        async for chunk in request.stream():
            if chunk:
                chunks.append(chunk)
                events.append(f"chunk {chunk.decode()}")
        return PlainTextResponse("|".join(chunk.decode() for chunk in chunks))

    async def gated(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first;"
            await gate.wait()
            yield b"second"

        return StreamingResponse(body(), media_type="text/plain")

    class TrackedStream(StreamingResponse):
        """Starlette ends a stream to a departed client by raising ClientDisconnect."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            except ClientDisconnect:
                stream_closed.set()
                raise

    async def endless(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            while True:
                yield b"tick\n"
                await trio.sleep(0.005)

        return TrackedStream(body(), media_type="text/plain")

    async def poll(request: Request) -> PlainTextResponse:
        events.append("polling")
        with trio.move_on_after(3):
            while not await request.is_disconnected():
                await trio.sleep(0.01)
            events.append("poll saw disconnect")
        return PlainTextResponse("gone")

    async def fail(request: Request) -> PlainTextResponse:
        raise RuntimeError("starlette view failed")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        greeting = websocket.state.greeting
        async for message in websocket.iter_text():
            if message == "bye":
                await websocket.close(code=4001)
                return
            await websocket.send_text(f"{greeting} {message}")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/upload", upload, methods=["POST"]),
            Route("/gated", gated),
            Route("/endless", endless),
            Route("/poll", poll),
            Route("/fail", fail),
            WebSocketRoute("/ws", echo),
        ],
        lifespan=lifespan,
    )


@pytest.fixture
def starlette() -> tuple[Any, list[str], trio.Event, trio.Event]:
    events: list[str] = []
    gate = trio.Event()
    stream_closed = trio.Event()
    return starlette_app(events, gate, stream_closed), events, gate, stream_closed


async def test_starlette_lifespan_state_and_trio(serve: Any, starlette: Any) -> None:
    app, events, _, _ = starlette
    assert detect_interface(app) == "asgi3"
    with trio.fail_after(TIMEOUT):
        async with serve(app, root_path="/api") as srv:
            async with httpx.AsyncClient() as client:
                first = await client.get(srv.url + "/")
                second = await client.get(srv.url + "/")
                failed = await client.get(srv.url + "/fail")
            assert events == ["startup"]
    assert first.json() == {"greeting": "hello", "hits": 1, "library": "trio", "root_path": "/api"}
    assert second.json()["hits"] == 2
    assert failed.status_code == 500
    assert events == ["startup", "shutdown"]


async def test_starlette_streams_both_ways(serve: Any, starlette: Any) -> None:
    app, events, gate, _ = starlette

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        while "chunk a" not in events:
            await trio.sleep(0.001)
        yield b"b"

    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv:
            async with httpx.AsyncClient() as client:
                uploaded = await client.post(srv.url + "/upload", content=body())
                async with client.stream("GET", srv.url + "/gated") as response:
                    parts = response.aiter_raw()
                    assert await parts.__anext__() == b"first;"
                    gate.set()
                    rest = b"".join([part async for part in parts])
    assert uploaded.text == "a|b"
    assert rest == b"second"


async def test_starlette_streaming_stops_when_the_client_leaves(serve: Any, starlette: Any) -> None:
    app, _, _, stream_closed = starlette
    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv:
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", srv.url + "/endless") as response:
                    assert (await response.aiter_raw().__anext__()).startswith(b"tick")
            await stream_closed.wait()


async def test_starlette_is_disconnected(serve: Any, starlette: Any) -> None:
    """``request.is_disconnected()`` polls receive() with an already-cancelled scope."""
    app, events, _, _ = starlette
    with trio.fail_after(TIMEOUT):
        async with serve(app, timeout_graceful_shutdown=0.5) as srv:
            async with trio.open_nursery() as nursery:

                async def request() -> None:
                    async with httpx.AsyncClient() as client:
                        await client.get(srv.url + "/poll")

                nursery.start_soon(request)
                # The client leaves once the app polls (a fixed sleep raced a busy machine).
                while "polling" not in events:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            while "poll saw disconnect" not in events:
                await trio.sleep(0.01)


# Starlette's ``Request.is_disconnected()`` calls receive() from an already-cancelled scope
# and drops whatever comes back unless it is ``http.disconnect``. These apps are raw ASGI
# around a Starlette ``Request``; the raw client sends each request in one segment.


async def test_starlette_is_disconnected_before_the_body_is_read_leaves_the_body(
    serve: Any,
) -> None:
    """The body has arrived with the head, but the poll is not handed it (it would be lost)."""
    polled: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        polled.append(await request.is_disconnected())
        body = await request.body()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv, connect(srv) as client:
            await client.send(raw_request("POST", "/", body=b"precious body"))
            response = await client.read_response()
    assert polled == [False]
    assert (response.status, response.body) == (200, b"precious body")


async def test_starlette_is_disconnected_after_receive_reported_the_disconnect(
    serve: Any,
) -> None:
    """Once ``receive()`` has returned ``http.disconnect``, a poll (here from a second
    ``Request``, as another handler would make) reports it too."""
    seen: list[Any] = []
    done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            seen.append((await receive())["type"])  # waits for the client to leave
            seen.append(await Request(scope, receive).is_disconnected())
        finally:
            done.set()

    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv:
            async with connect(srv) as client:
                await client.send(raw_request())
            await done.wait()
    assert seen == ["http.disconnect", True]


async def test_starlette_is_disconnected_after_the_response(serve: Any) -> None:
    """After the response ``receive()`` returns ``http.disconnect`` (ASGI), so a poll, say
    from a background task, reports a disconnect rather than a live client."""
    seen: list[bool] = []
    done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            seen.append(await Request(scope, receive).is_disconnected())
        finally:
            done.set()

    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv, connect(srv) as client:
            await client.send(raw_request())
            assert (await client.read_response()).body == b"ok"
            await done.wait()
    assert seen == [True]


async def test_starlette_websocket(serve: Any, starlette: Any) -> None:
    """Echo with lifespan state, then a close code chosen by the app."""
    app, _, _, _ = starlette
    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv:
            async with open_websocket_url(ws_url(srv.url, "/ws")) as ws:
                await ws.send_message("there")
                assert await ws.get_message() == "hello there"
                await ws.send_message("bye")
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert ws.closed is not None
                assert ws.closed.code == 4001


# --- Quart-Trio ----------------------------------------------------------------------------


def quart_app(events: list[str]) -> Any:
    app = QuartTrio("palfrey_quart_test")

    @app.before_serving
    async def startup() -> None:
        events.append("startup")
        app.config["GREETING"] = "howdy"

    @app.after_serving
    async def shutdown() -> None:
        events.append("shutdown")

    @app.get("/")
    async def index() -> dict[str, Any]:
        await trio.sleep(0)
        return {
            "greeting": app.config["GREETING"],
            "library": sniffio.current_async_library(),
            "q": quart_request.args.get("q"),
        }

    @app.post("/upload")
    async def upload() -> str:
        total = 0
        async for chunk in quart_request.body:
            total += len(chunk)
            events.append(f"chunk {len(chunk)}")
        return str(total)

    @app.get("/stream")
    async def stream() -> Any:
        async def body() -> AsyncIterator[bytes]:
            for i in range(3):
                await trio.sleep(0)
                yield f"part{i};".encode()

        return body(), 200, {"Content-Type": "text/plain"}

    @app.get("/fail")
    async def fail() -> str:
        raise RuntimeError("quart view failed")

    @app.websocket("/ws")
    async def ws() -> None:
        while True:
            message = await quart_websocket.receive()
            await quart_websocket.send(f"{app.config['GREETING']} {message}")

    return app


async def test_quart_trio(serve: Any) -> None:
    events: list[str] = []
    app = quart_app(events)
    assert detect_interface(app) == "asgi3"

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 1000
            await trio.sleep(0)

    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv:
            async with httpx.AsyncClient() as client:
                index = await client.get(srv.url + "/?q=1")
                upload = await client.post(srv.url + "/upload", content=body())
                stream = await client.get(srv.url + "/stream")
                fail = await client.get(srv.url + "/fail")
            assert events[0] == "startup"
    assert index.json() == {"greeting": "howdy", "library": "trio", "q": "1"}
    assert upload.text == "4000"
    assert stream.text == "part0;part1;part2;"
    assert fail.status_code == 500
    assert events[-1] == "shutdown"


async def test_quart_trio_websocket(serve: Any) -> None:
    app = quart_app([])
    with trio.fail_after(TIMEOUT):
        async with serve(app) as srv:
            async with open_websocket_url(ws_url(srv.url, "/ws")) as ws:
                await ws.send_message("partner")
                assert await ws.get_message() == "howdy partner"


# --- Flask and Django (WSGI) --------------------------------------------------------------


async def test_flask_app(serve: Any) -> None:
    app = Flask("palfrey_flask_test")

    @app.get("/hello/<name>")
    def hello(name: str) -> dict[str, Any]:
        return {"name": name, "q": flask_request.args.get("q"), "script": flask_request.script_root}

    @app.post("/echo")
    def echo() -> Response:
        return Response(flask_request.get_data(), content_type="application/octet-stream")

    @app.get("/stream")
    def stream() -> Response:
        def generate() -> Iterator[str]:
            for i in range(3):
                yield f"part{i};"

        return Response(stream_with_context(generate()), content_type="text/plain")

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("flask view failed")

    assert wrap_app(app, "auto")[1] == "wsgi"
    with trio.fail_after(TIMEOUT):
        async with serve(app, root_path="/mount") as srv:
            async with httpx.AsyncClient() as client:
                hello_response = await client.get(srv.url + "/hello/ada?q=1")
                echo_response = await client.post(srv.url + "/echo", content=b"\x00\x01" * 5000)
                stream_response = await client.get(srv.url + "/stream")
                fail_response = await client.get(srv.url + "/fail")
    assert hello_response.json() == {"name": "ada", "q": "1", "script": "/mount"}
    assert echo_response.content == b"\x00\x01" * 5000
    assert stream_response.text == "part0;part1;part2;"
    assert fail_response.status_code == 500


def _django_app() -> Any:
    """A Django WSGI app with its URLconf inline (Django accepts a module object)."""

    def info(request: HttpRequest) -> JsonResponse:
        return JsonResponse(
            {
                "path": request.path,
                "path_info": request.path_info,
                "script_name": request.META["SCRIPT_NAME"],
                "x": request.GET["x"],
                "header": request.headers["X-Test"],
                "url": request.build_absolute_uri(request.path),
            }
        )

    @csrf_exempt
    def echo(request: HttpRequest) -> HttpResponse:
        return HttpResponse(request.body, content_type="application/octet-stream")

    def stream(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(f"{i};" for i in range(3))

    urlconf = ModuleType("palfrey_test_urls")
    urlconf.urlpatterns = [
        url_path("info/", info),
        url_path("echo/", echo),
        url_path("stream/", stream),
    ]  # type: ignore[attr-defined]
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="palfrey-tests",
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    settings.ROOT_URLCONF = urlconf
    return get_wsgi_application()


async def test_django_app(serve: Any) -> None:
    app = _django_app()
    _, interface = wrap_app(app, "auto")
    assert interface == "wsgi"
    with trio.fail_after(TIMEOUT):
        async with serve(app, root_path="/site") as srv:
            async with httpx.AsyncClient() as client:
                info = await client.get(srv.url + "/info/?x=2", headers={"X-Test": "yes"})
                echo = await client.post(srv.url + "/echo/", content=b"django body")
                missing = await client.get(srv.url + "/nope/")
                streamed = await client.get(srv.url + "/stream/")
    assert info.status_code == 200
    assert info.json() == {
        "path": "/site/info/",
        "path_info": "/info/",
        "script_name": "/site",
        "x": "2",
        "header": "yes",
        "url": f"http://127.0.0.1:{srv.port}/site/info/",
    }
    assert echo.content == b"django body"
    assert missing.status_code == 404
    assert streamed.text == "0;1;2;"
