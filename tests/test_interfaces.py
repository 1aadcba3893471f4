"""Interface detection (``--interface auto``), forcing, and ASGI 2 / ASGI 3 end to end."""

from __future__ import annotations

import functools
import sys
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
from flask import Flask
from quart_trio import QuartTrio
from starlette.applications import Starlette

from palfrey.asgi import asyncio_bridge
from palfrey.asgi.interfaces import AppInterfaceError, ASGI2Adapter, detect_interface, wrap_app
from palfrey.asgi.wsgi import WSGIAdapter
from palfrey.config.schema import Config
from palfrey.server.runner import EXIT_ERROR, run_config

TIMEOUT = 10


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["asgi"]["version"].encode()})


class ASGI3Object:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi3_function(scope, receive, send)


def asgi3_sync_wrapper(scope: Any, receive: Any, send: Any) -> Any:
    """A plain function returning the awaitable (what some decorators produce)."""
    return asgi3_function(scope, receive, send)


class ASGI2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await asgi3_function(self.scope, receive, send)


def asgi2_function(scope: Any) -> Any:
    async def instance(receive: Any, send: Any) -> None:
        await asgi3_function(scope, receive, send)

    return instance


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"wsgi"]


class WSGIObject:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return wsgi_function(environ, start_response)


class WSGIClass:
    """PEP 3333's class-as-application form: the instance is the response iterable."""

    def __init__(self, environ: Any, start_response: Any) -> None:
        start_response("200 OK", [])

    def __iter__(self) -> Any:
        yield b"wsgi class"


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (asgi3_function, "asgi3"),
        (ASGI3Object(), "asgi3"),
        (functools.partial(asgi3_function), "asgi3"),
        (asgi3_sync_wrapper, "asgi3"),
        (ASGI2Class, "asgi2"),
        (asgi2_function, "asgi2"),
        (wsgi_function, "wsgi"),
        (WSGIObject(), "wsgi"),
        (WSGIClass, "wsgi"),
    ],
)
def test_detection(app: Any, expected: str) -> None:
    assert detect_interface(app) == expected


def test_detection_of_real_frameworks() -> None:
    assert detect_interface(Flask("detect")) == "wsgi"
    assert detect_interface(Starlette()) == "asgi3"
    assert detect_interface(QuartTrio("detect")) == "asgi3"


@pytest.mark.parametrize(
    ("app", "fragment"),
    [
        ("hello", "must be callable"),
        (42, "must be callable"),
        (lambda *args: None, "fits asgi2 and wsgi and asgi3"),
        (lambda: None, "fits no interface"),
        (lambda a, b, c, d: None, "fits no interface"),
    ],
)
def test_detection_errors(app: Any, fragment: str) -> None:
    with pytest.raises(AppInterfaceError, match=fragment):
        detect_interface(app, "main:app")


def test_error_names_the_attribute_and_what_was_found() -> None:
    with pytest.raises(AppInterfaceError) as info:
        wrap_app("not an app", "auto", name="main:app")
    message = str(info.value)
    assert "application 'main:app' must be callable, but it is str 'not an app'" in message
    assert "async def app(scope, receive, send)" in message


def test_coroutine_with_the_wrong_signature() -> None:
    async def app(scope: Any) -> None:
        pass

    with pytest.raises(AppInterfaceError, match="coroutine function with signature"):
        detect_interface(app)


def test_uninspectable_callable_asks_for_interface() -> None:
    with pytest.raises(AppInterfaceError, match="--interface"):
        detect_interface(print)


def test_forcing_an_interface() -> None:
    assert isinstance(wrap_app(asgi2_function, "asgi2")[0], ASGI2Adapter)
    assert wrap_app(asgi3_function, "asgi3") == (asgi3_function, "asgi3")
    wsgi, interface = wrap_app(lambda *args: [], "wsgi", wsgi_threads=3)
    assert interface == "wsgi"
    assert isinstance(wsgi, WSGIAdapter)
    assert wsgi.limiter.total_tokens == 3
    with pytest.raises(AppInterfaceError, match="must be callable"):
        wrap_app(None, "wsgi")
    with pytest.raises(AppInterfaceError, match="unsupported interface"):
        wrap_app(asgi3_function, "asgi4")


def test_loop_option_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AppInterfaceError, match="WSGI application runs in worker threads"):
        wrap_app(wsgi_function, "auto", loop="asyncio")
    with pytest.raises(AppInterfaceError, match="unsupported loop"):
        wrap_app(asgi3_function, "auto", loop="uvloop")
    monkeypatch.setattr(asyncio_bridge, "sys", SimpleNamespace(version_info=(3, 14, 0)))
    with pytest.raises(AppInterfaceError, match=r"does not support Python 3\.14 yet"):
        wrap_app(asgi3_function, "auto", loop="asyncio")


def test_missing_trio_asyncio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio_asyncio", None)
    with pytest.raises(AppInterfaceError, match=r"pip install 'palfrey\[asyncio\]'"):
        wrap_app(asgi3_function, "asgi3", loop="asyncio")


def test_runner_reports_a_non_app_attribute(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "palfrey_not_an_app.py").write_text("app = 'just a string'\n")
    config = Config(app="palfrey_not_an_app:app", app_dir=str(tmp_path))
    try:
        assert run_config(config) == EXIT_ERROR
    finally:
        sys.modules.pop("palfrey_not_an_app", None)
    error = capsys.readouterr().err
    assert error.startswith(
        "palfrey: error: application 'palfrey_not_an_app:app' must be callable,"
        " but it is str 'just a string'"
    )
    assert error.count("\n") == 1


@pytest.mark.parametrize(
    ("app", "version"),
    [(asgi3_function, "3.0"), (ASGI3Object(), "3.0"), (ASGI2Class, "2.0"), (asgi2_function, "2.0")],
)
async def test_asgi_versions_end_to_end(serve: Any, app: Any, version: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(app, lifespan="off") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 200
    assert response.text == version


async def test_asgi2_lifespan_and_body_streaming(serve: Any) -> None:
    events: list[str] = []

    class App:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            if self.scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    events.append(f"{message['type']} {self.scope['asgi']['version']}")
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            chunks = []
            while True:
                message = await receive()
                chunks.append(message["body"])
                if not message["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def body() -> Any:
        for part in (b"a", b"b", b"c"):
            yield part

    with trio.fail_after(TIMEOUT):
        async with serve(App) as srv:
            async with httpx.AsyncClient() as client:
                response = await client.post(srv.url, content=body())
    assert response.text == "abc"
    assert events == ["lifespan.startup 2.0", "lifespan.shutdown 2.0"]


async def test_exceptions_in_asgi2_app_are_500(serve: Any) -> None:
    def app(scope: Any) -> Any:
        if scope["type"] == "http":
            raise RuntimeError("ASGI 2 constructor failed")

        async def instance(receive: Any, send: Any) -> None:
            raise RuntimeError("no lifespan")

        return instance

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="asgi2") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 500
