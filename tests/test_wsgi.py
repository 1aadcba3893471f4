"""WSGI (PEP 3333) applications served end to end: environ, streaming, errors, close()."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

import palfrey
from palfrey.asgi.interfaces import wrap_app
from palfrey.asgi.wsgi import WSGIInput

TIMEOUT = 10


def wait_threading(event: threading.Event) -> Any:
    """Wait for a worker-thread event from trio without blocking the trio thread."""
    return trio.to_thread.run_sync(event.wait, TIMEOUT)


# --- environ -------------------------------------------------------------------------------


async def test_environ_is_complete(serve: Any) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi", root_path="/root") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    srv.url + "/caf%C3%A9/a%2Fb?x=1&y=%20",
                    content=b"body",
                    headers=[
                        ("Content-Type", "text/plain"),
                        ("X-Dup", "a"),
                        ("X-Dup", "b"),
                        ("Cookie", "a=1"),
                        ("Cookie", "b=2"),
                        ("X_Spoofed", "1"),
                    ],
                )
    assert response.status_code == 200
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["SCRIPT_NAME"] == "/root"
    # PEP 3333: the URL-decoded bytes, carried in a str as latin-1.
    assert seen["PATH_INFO"] == "/café/a/b".encode().decode("latin-1")
    assert seen["QUERY_STRING"] == "x=1&y=%20"
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert seen["CONTENT_LENGTH"] == "4"
    assert "HTTP_CONTENT_TYPE" not in seen
    assert seen["HTTP_X_DUP"] == "a,b"
    assert seen["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SPOOFED" not in seen
    assert seen["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert seen["SERVER_NAME"] == "127.0.0.1"
    assert seen["SERVER_PORT"] == str(srv.port)
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["REMOTE_PORT"].isdigit()
    assert seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.errors"] is sys.stderr
    assert seen["wsgi.multithread"] is True
    assert seen["wsgi.run_once"] is False
    assert all(isinstance(value, str) for key, value in seen.items() if key.isupper())


async def test_runs_in_a_worker_thread(serve: Any) -> None:
    threads: list[threading.Thread] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        threads.append(threading.current_thread())
        start_response("204 No Content", [])
        return []

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 204
    assert threads[0] is not threading.main_thread()


# --- request body --------------------------------------------------------------------------


def test_wsgi_input_reads() -> None:
    chunks = iter([(b"line one\nline", True), (b" two\n", True), (b"", True), (b"rest", False)])
    body = WSGIInput(lambda: next(chunks))
    assert body.readline() == b"line one\n"
    assert body.readline(3) == b"lin"
    assert body.read(4) == b"e tw"
    assert list(body) == [b"o\n", b"rest"]
    assert body.read() == b""
    assert body.readline() == b""


def test_wsgi_input_read_all_and_readlines() -> None:
    chunks = iter([(b"a\nb", True), (b"\nc", False)])
    body = WSGIInput(lambda: next(chunks))
    assert body.readlines() == [b"a\n", b"b\n", b"c"]
    chunks = iter([(b"abc", True), (b"def", False)])
    body = WSGIInput(lambda: next(chunks))
    assert body.read(-1) == b"abcdef"


async def test_request_body_streams_to_the_app(serve: Any) -> None:
    """The app reads the first chunk while the client is still holding back the rest."""
    first_read = threading.Event()
    received: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        received.append(stream.read(5))
        first_read.set()
        received.append(stream.read())
        start_response("200 OK", [])
        return [b"".join(received)]

    async def body() -> Any:
        yield b"hello"
        assert await wait_threading(first_read)
        yield b" world"

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.post(srv.url, content=body())
    assert response.text == "hello world"
    assert received == [b"hello", b" world"]


async def test_large_body_in_chunks(serve: Any) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        digest = hashlib.sha256()
        total = 0
        stream = environ["wsgi.input"]
        while chunk := stream.read(65536):
            digest.update(chunk)
            total += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{total} {digest.hexdigest()}".encode()]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.post(srv.url, content=payload)
    assert response.text == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"


# --- response ------------------------------------------------------------------------------


class Recorded:
    """A response iterable that records whether ``close()`` was called."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.closed.set()


async def test_response_streams_as_produced(serve: Any) -> None:
    """The second chunk is only produced after the client has received the first."""
    client_got_first = threading.Event()
    iterables: list[Recorded] = []

    def app(environ: dict[str, Any], start_response: Any) -> Recorded:
        def chunks() -> Iterator[bytes]:
            yield b"first;"
            assert client_got_first.wait(TIMEOUT)
            yield b"second"

        start_response("200 OK", [("Content-Type", "text/plain")])
        iterables.append(Recorded(chunks()))
        return iterables[0]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", srv.url) as response:
                    parts = response.aiter_raw()
                    assert await parts.__anext__() == b"first;"
                    client_got_first.set()
                    rest = b"".join([chunk async for chunk in parts])
    assert rest == b"second"
    assert response.headers["transfer-encoding"] == "chunked"
    assert iterables[0].closed.is_set()


async def test_headers_wait_for_the_first_non_empty_chunk(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        yield b""
        # Still allowed to change its mind: nothing was sent yet.
        start_response("201 Created", [("X-Late", "yes")])
        yield b""
        yield b"done"

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 201
    assert response.headers["x-late"] == "yes"
    assert response.text == "done"


async def test_single_chunk_gets_content_length_and_write_works(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/write":
            write = start_response("200 OK", [])
            write(b"written,")
            return [b"returned"]
        start_response("200 OK", [])
        return [b"single"]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                single = await client.get(srv.url + "/")
                written = await client.get(srv.url + "/write")
    assert single.headers["content-length"] == "6"
    assert single.text == "single"
    assert written.text == "written,returned"


async def test_close_called_on_success_error_and_disconnect(serve: Any) -> None:
    iterables: dict[str, Recorded] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Recorded:
        path = environ["PATH_INFO"]

        def chunks() -> Iterator[bytes]:
            yield b"x" * 1024
            if path == "/error":
                raise RuntimeError("boom in iteration")
            if path == "/forever":
                while True:
                    time.sleep(0.005)
                    yield b"y" * 65536

        start_response("200 OK", [])
        iterables[path] = Recorded(chunks())
        return iterables[path]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                ok = await client.get(srv.url + "/ok")
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(srv.url + "/error")
                async with client.stream("GET", srv.url + "/forever") as response:
                    await response.aiter_raw().__anext__()
            assert await wait_threading(iterables["/forever"].closed)
    assert ok.content == b"x" * 1024
    assert iterables["/ok"].closed.is_set()
    assert iterables["/error"].closed.is_set()


# --- errors --------------------------------------------------------------------------------


async def test_exception_before_start_response_is_500(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ValueError("broken app")

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_exc_info_replaces_an_unsent_response(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Original", "1")])
        try:
            raise KeyError("lookup failed")
        except KeyError:
            start_response("503 Service Unavailable", [("X-Error", "1")], sys.exc_info())
        return [b"sorry"]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 503
    assert response.headers["x-error"] == "1"
    assert "x-original" not in response.headers
    assert response.text == "sorry"


async def test_exc_info_after_headers_sent_reraises(serve: Any) -> None:
    raised: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise KeyError("late failure")
        except KeyError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except KeyError as exc:
                raised.append(exc)
                raise

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(srv.url)
    assert len(raised) == 1
    assert raised[0].args == ("late failure",)


async def test_start_response_twice_without_exc_info_is_an_error(serve: Any) -> None:
    errors: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        try:
            start_response("201 Created", [])
        except RuntimeError as exc:
            errors.append(exc)
            raise
        return [b"unreachable"]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 500
    assert "exc_info" in str(errors[0])


@pytest.mark.parametrize(
    ("status", "headers"),
    [("200", []), (200, []), ("200 OK", [("X-Bytes", b"v")]), ("200 OK", [("X-Uni", "é€")])],
)
async def test_invalid_status_or_headers_are_500(serve: Any, status: Any, headers: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"never"]

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url)
    assert response.status_code == 500


# --- threads, lifespan, WebSocket ----------------------------------------------------------


async def test_wsgi_threads_limits_concurrency() -> None:
    """``palfrey.serve`` honours ``wsgi_threads``: one thread serves three requests in turn."""
    lock = threading.Lock()
    running = [0, 0]  # current, maximum

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        start_response("200 OK", [])
        return [b"ok"]

    config = palfrey.Config(app=app, port=0, wsgi_threads=1, log_level="warning")
    statuses: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(palfrey.serve, app, config)
            async with httpx.AsyncClient() as client:

                async def fetch() -> None:
                    statuses.append((await client.get(addresses[0])).status_code)

                async with trio.open_nursery() as requests:
                    for _ in range(3):
                        requests.start_soon(fetch)
            nursery.cancel_scope.cancel()
    assert statuses == [200, 200, 200]
    assert running[1] == 1


async def test_lifespan_is_acknowledged(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    caplog.set_level("INFO", logger="palfrey.error")
    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi", lifespan="on") as srv:
            async with httpx.AsyncClient() as client:
                assert (await client.get(srv.url)).status_code == 200
    messages = [record.getMessage() for record in caplog.records]
    assert "Application startup complete." in messages
    assert "Application shutdown complete." in messages


@pytest.mark.parametrize("interface", ["auto", "wsgi"])
async def test_websocket_request_is_refused(serve: Any, interface: str) -> None:
    called: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"plain http"]

    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with trio.fail_after(TIMEOUT):
        async with serve(app, interface=interface) as srv:
            async with httpx.AsyncClient() as client:
                response = await client.get(srv.url + "/ws", headers=headers)
    assert response.status_code == 403
    assert "WSGI application" in response.text
    assert called == []


async def test_websocket_refusal_at_the_asgi_level() -> None:
    """Independent of the transport: close before accept, or a 403 via the denial extension."""
    app, _ = wrap_app(lambda environ, start_response: [], "wsgi")
    for extensions, expected in [
        ({}, ["websocket.close"]),
        (
            {"websocket.http.response": {}},
            ["websocket.http.response.start", "websocket.http.response.body"],
        ),
    ]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/", "headers": [], "extensions": extensions}
        with trio.fail_after(TIMEOUT):
            await app(scope, receive, send)
        assert [message["type"] for message in sent] == expected
    assert sent[0]["status"] == 403
    assert b"WSGI" in sent[1]["body"]


async def test_client_gone_mid_body_fails_the_read(serve: Any) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read(100)
        except OSError as exc:
            errors.append(exc)
            raise
        finally:
            done.set()
        return []

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi") as srv:
            stream = await trio.open_tcp_stream(srv.host, srv.port)
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
            )
            await trio.sleep(0.05)
            await stream.aclose()
            assert await wait_threading(done)
    assert len(errors) == 1


async def test_shutdown_abandons_stuck_threads(serve: Any) -> None:
    """Shutdown stays bounded; an abandoned app's next write fails and close() still runs."""
    release = threading.Event()
    started = threading.Semaphore(0)
    write_errors: list[BaseException] = []
    iterables: list[Recorded] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [])
        started.release()
        if environ["PATH_INFO"] == "/write":
            release.wait(TIMEOUT)
            try:
                write(b"too late")
            except OSError as exc:
                write_errors.append(exc)
                raise

        def chunks() -> Iterator[bytes]:
            release.wait(TIMEOUT)
            yield b"too late"

        iterables.append(Recorded(chunks()))
        return iterables[-1]

    async def request(url: str) -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(url)

    with trio.fail_after(TIMEOUT):
        async with serve(app, interface="wsgi", timeout_graceful_shutdown=0.1) as srv:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(request, srv.url + "/write")
                nursery.start_soon(request, srv.url + "/iter")
                for _ in range(2):
                    assert await trio.to_thread.run_sync(started.acquire, True, TIMEOUT)
                before = trio.current_time()
                srv.shutdown()
        assert trio.current_time() - before < 2
        release.set()
        assert await wait_threading(iterables[0].closed)
        while not write_errors:
            await trio.sleep(0.01)
    assert isinstance(write_errors[0], OSError)
