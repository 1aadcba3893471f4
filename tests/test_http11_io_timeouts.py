"""Deadlines on reading a request body and on writing a response (HTTP/1.1).

``--timeout-request-body``: one read of a request body may wait this long for the
client to send more; then ``408`` if the response has not started, otherwise
the connection is closed. ``--timeout-send``: one write may wait this long for
the client to read; then the connection is closed and the app's ``send()``
raises, so its concurrency slot is released.

The waits run on trio's autojumping mock clock: the server and the clients run in
one trio run, so when every task is parked the clock jumps to the next deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    RawClient,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_small_buffer_stream,
    request,
)

from palfrey.config import Config, load_config

Scope = dict[str, Any]
KiB = 1024
TIMEOUT = 0.5
DOCS = Path(__file__).resolve().parent.parent / "docs"


def body_reader(seen: list[Any], *, start_first: bool = False) -> Any:
    """Reads the whole body, then answers ``200``; records each message it got.

    With ``start_first`` it starts a streamed response before reading.
    Whatever ``receive()`` does when a read times out (a disconnect message or
    an exception), the app lets the server handle it.
    """

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if start_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"started", "more_body": True})
        body = b""
        while True:
            try:
                message = await receive()
            except Exception as exc:
                seen.append(exc)
                raise
            seen.append(message["type"])
            if message["type"] != "http.request":
                return
            body += message["body"]
            if not message.get("more_body"):
                break
        if not start_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read %d" % len(body)})

    return app


def stalled_request() -> bytes:
    """A head promising 100 body bytes, and 10 of them."""
    return request("POST", "/", headers=[("Content-Length", "100")]) + b"x" * 10


async def test_a_stalled_request_body_gets_408(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Any] = []
    async with (
        serve(body_reader(seen), timeout_request_body=TIMEOUT) as srv,
        connect(srv) as client,
    ):
        await client.send(stalled_request())
        started = trio.current_time()
        response = await client.read_response()
        waited = trio.current_time() - started
        assert response.status == 408, seen
        await client.assert_closed()
    assert TIMEOUT <= waited < TIMEOUT + 1
    assert seen[0] == "http.request"  # the 10 bytes that did arrive


async def test_a_stalled_request_body_after_the_response_started_closes(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Any] = []
    app = body_reader(seen, start_first=True)
    async with serve(app, timeout_request_body=TIMEOUT) as srv, connect(srv) as client:
        await client.send(stalled_request())
        started = trio.current_time()
        head = await client.read_head()
        assert head.status == 200
        rest = await client.read_until_closed()
        waited = trio.current_time() - started
    assert TIMEOUT <= waited < TIMEOUT + 1
    assert b"408" not in rest
    assert not rest.endswith(b"0\r\n\r\n"), "the response must not look complete"


async def test_a_slow_but_steady_request_body_is_not_cut_off(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """The deadline is per read: a body that keeps coming may take longer in total."""
    seen: list[Any] = []
    async with (
        serve(body_reader(seen), timeout_request_body=TIMEOUT) as srv,
        connect(srv) as client,
    ):
        await client.send(request("POST", "/", headers=[("Content-Length", "40")]))
        for _ in range(4):
            await trio.sleep(TIMEOUT * 0.6)
            await client.send(b"x" * 10)
        response = await client.read_response()
    assert response.status == 200
    assert response.body == b"read 40"


async def test_a_client_that_stops_reading_is_closed_and_frees_its_slot(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[BaseException] = []
    ended = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] != "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"served"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = {"type": "http.response.body", "body": b"x" * (64 * KiB), "more_body": True}
        try:
            while True:
                await send(chunk)
        except Exception as exc:
            outcome.append(exc)
        finally:
            ended.set()

    options = {"timeout_send": TIMEOUT, "limit_concurrency": 1, "timeout_graceful_shutdown": 1}
    async with serve(app, **options) as srv:
        stream = await open_small_buffer_stream(srv, rcvbuf=16 * KiB)
        stalled = RawClient(stream)
        try:
            await stalled.send(request(target="/stream"))
            started = trio.current_time()
            with trio.fail_after(WAIT):
                await ended.wait()
            waited = trio.current_time() - started
            # The server closed: what the kernel buffered arrives, then EOF (or a reset).
            await stalled.read_until_closed()
        finally:
            await stalled.aclose()
        async with connect(srv) as other:
            await other.send(request(target="/other"))
            response = await other.read_response()
    assert len(outcome) == 1
    assert isinstance(outcome[0], OSError), outcome
    assert TIMEOUT <= waited < TIMEOUT + 1
    assert response.status == 200, "the stalled request still holds the only slot"
    assert response.body == b"served"


OPTIONS = [("timeout_send", "--timeout-send"), ("timeout_request_body", "--timeout-request-body")]


@pytest.mark.parametrize(("name", "flag"), OPTIONS)
def test_the_timeout_options_parse(name: str, flag: str) -> None:
    assert getattr(Config(app="m:a"), name) == 60.0
    assert getattr(load_config(["m:a", flag, "0.5"], {}), name) == 0.5
    env = {"PALFREY_" + name.upper(): "2.5"}
    assert getattr(load_config(["m:a"], env), name) == 2.5


@pytest.mark.parametrize(("name", "flag"), OPTIONS)
def test_the_timeout_options_are_documented(name: str, flag: str) -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert f"### `{flag}`" in reference, f"no section for {flag} in configuration.md"
    # The client-visible result belongs in the HTTP page's table of limits and timeouts.
    http_page = (DOCS / "http.md").read_text(encoding="utf-8")
    assert f"[`{flag}`](configuration.md#{flag})" in http_page, f"{flag} is not in http.md"
