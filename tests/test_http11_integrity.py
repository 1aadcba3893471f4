"""HTTP/1.1 connection integrity: interrupted writes and read-ahead, whatever the app does.

* A write that was cancelled part-way leaves the response truncated on the wire:
  the connection must close, never carry another response (desync).
* Read-ahead is bounded per connection even while the app keeps polling
  ``receive()`` for a disconnect (Starlette's ``is_disconnected()``).

Both need the kernel's buffers small and fixed, so the server gets an inherited
listening socket (``Config.fd``) whose buffer sizes its connections inherit.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from h1_client import (
    WAIT,
    RawClient,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_small_buffer_stream,
    request,
    small_buffer_listener,
)

Scope = dict[str, Any]
KiB = 1024
MiB = 1024 * KiB

#: Declared length of the response whose write gets interrupted.
DECLARED = 8 * MiB + 1
#: The body message sent under a short deadline while the client does not read.
INTERRUPTED_CHUNK = 4 * MiB


async def test_a_cancelled_write_closes_the_connection(serve: Any) -> None:
    """No second response may follow a body that a cancelled write left truncated."""
    interrupted = trio.Event()
    seen: list[object] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"second"})
            return
        headers = [(b"content-length", str(DECLARED).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        chunk = {"type": "http.response.body", "body": b"x" * INTERRUPTED_CHUNK, "more_body": True}
        with trio.move_on_after(0.05) as deadline:
            await send(chunk)
        seen.append(deadline.cancelled_caught)
        interrupted.set()
        rest = DECLARED - 1 - INTERRUPTED_CHUNK
        try:
            await send({"type": "http.response.body", "body": b"x" * rest})
        except Exception as exc:  # the write after an interrupted one may fail; either is fine
            seen.append(exc)

    fd = small_buffer_listener(sndbuf=64 * KiB)
    async with serve(app, fd=fd) as srv:
        stream = await open_small_buffer_stream(srv, rcvbuf=16 * KiB)
        client = RawClient(stream)
        try:
            pipelined = request(target="/big") + request(
                target="/second", headers=[("Connection", "close")]
            )
            await client.send(pipelined)
            with trio.fail_after(WAIT):
                await interrupted.wait()
            data = await client.read_until_closed(timeout=WAIT)
        finally:
            await client.aclose()
    assert seen[0] is True, "the write was not blocked: the test did not interrupt it"
    assert data.startswith(b"HTTP/1.1 200 ")
    head_end = data.index(b"\r\n\r\n") + 4
    after_head = data[head_end:]
    body_bytes = len(after_head)
    responses_after_the_body = after_head.count(b"HTTP/1.1 ")
    assert responses_after_the_body == 0, "a response followed the truncated body (desync)"
    assert body_bytes < DECLARED, "the interrupted chunk cannot have been written whole"


#: What the client offers after its first request: a pipelined request whose body
#: the server may buffer but must not read without bound.
JUNK_SIZE = 8 * MiB
#: Server read-ahead (64 KiB) plus both small kernel buffers is far below this.
READ_AHEAD_CEILING = 1 * MiB
#: The client gives up sending once a send has been blocked this long.
STALL = 0.5


@pytest.mark.parametrize("poll", ["move_on_after", "cancelled_scope"])
async def test_read_ahead_is_bounded_while_the_app_polls_receive(serve: Any, poll: str) -> None:
    """An app polling ``receive()`` for a disconnect must not make the server read ahead.

    ``move_on_after``: ``with trio.move_on_after(0.001): await receive()``.
    ``cancelled_scope``: a scope cancelled before the call, as Starlette's
    ``Request.is_disconnected()`` does with anyio.
    """
    client_done = trio.Event()
    polls = 0
    disconnected = False

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal polls, disconnected
        if scope["type"] != "http":
            return
        if scope["path"] == "/poll":
            message = await receive()
            assert message == {"type": "http.request", "body": b"", "more_body": False}
            # Bounded so that an app that never yields cannot hang the test.
            while not client_done.is_set() and polls < 1_000_000:
                polls += 1
                if poll == "move_on_after":
                    with trio.move_on_after(0.001):
                        message = await receive()
                else:
                    with trio.CancelScope() as cancelled:
                        cancelled.cancel()
                        message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    fd = small_buffer_listener(rcvbuf=16 * KiB)
    async with serve(app, fd=fd) as srv:
        stream = await open_small_buffer_stream(srv, sndbuf=16 * KiB)
        try:
            with trio.fail_after(WAIT):
                await stream.send_all(request(target="/poll"))
            junk = memoryview(
                request("POST", "/", headers=[("Content-Length", str(JUNK_SIZE))])
                + b"j" * JUNK_SIZE
            )
            sent = 0
            with trio.fail_after(WAIT + STALL):
                while sent < len(junk):
                    with trio.move_on_after(STALL) as stalled:
                        sent += await stream.socket.send(junk[sent : sent + 64 * KiB])
                    if stalled.cancelled_caught:
                        break
            client_done.set()
            response = await RawClient(stream).read_response()
        finally:
            client_done.set()
            await stream.aclose()
    assert not disconnected
    assert response.status == 200
    assert polls >= 40, f"the app polled only {polls} times: the test proves nothing"
    assert sent < READ_AHEAD_CEILING, f"the server accepted {sent} bytes while the app polled"
