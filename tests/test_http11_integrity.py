"""HTTP/1.1 connection integrity: interrupted writes and read-ahead, whatever the app does.

* A write that was cancelled part-way leaves the response truncated on the wire:
  the connection must close, never carry another response (desync). A send
  cancelled before any byte moved interrupts nothing: the connection goes on.
* Read-ahead is bounded per connection even while the app keeps polling
  ``receive()`` for a disconnect (Starlette's ``is_disconnected()``).

The black-box tests need the kernel's buffers small and fixed, so the server
gets an inherited listening socket (``Config.fd``) whose buffer sizes its
connections inherit. The exact read-ahead bound is measured inside the parsers.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from h1_client import (
    WAIT,
    RawClient,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_small_buffer_stream,
    request,
    small_buffer_listener,
)

from palfrey.protocols.events import ProtocolEvent
from palfrey.protocols.h11 import H1Protocol
from palfrey.protocols.httptools import H1HttpToolsProtocol
from palfrey.transport.http11 import READ_AHEAD_LIMIT

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


@pytest.mark.parametrize("then", ["fails", "sends-again"])
async def test_a_send_cancelled_before_any_byte_moved_interrupts_nothing(
    serve: Any, then: str
) -> None:
    """A body send whose scope was cancelled before the call (a watchdog sibling
    cancelled it) writes nothing, so the connection is intact: the app's failure
    still gets a 500, or its next send goes out, and the connection serves on."""
    cancelled: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] == "/next":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"next"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with trio.CancelScope() as watchdog:
            watchdog.cancel()
            await send({"type": "http.response.body", "body": b"late"})
        cancelled.append(watchdog.cancelled_caught)
        if then == "fails":
            raise RuntimeError("gave up")
        await send({"type": "http.response.body", "body": b"on time"})

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        first = await client.read_response()
        await client.send(request(target="/next"))
        second = await client.read_response()
    assert cancelled == [True]
    if then == "fails":
        assert (first.status, first.body) == (500, b"Internal Server Error")
    else:
        assert (first.status, first.body) == (200, b"on time")
    assert first.header(b"connection") is None
    assert (second.status, second.body) == (200, b"next")


#: What the client offers after its first request: a pipelined request whose body
#: the server may buffer but must not read without bound.
JUNK_SIZE = 8 * MiB
#: Kernel buffer size asked for on both ends of the connection; Linux doubles it.
SMALL_BUFFER = 16 * KiB
#: The server's read-ahead plus both kernel buffers (2 x 32 KiB), and as much again
#: to spare for the kernel's accounting.
READ_AHEAD_CEILING = READ_AHEAD_LIMIT + 8 * SMALL_BUFFER
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

    fd = small_buffer_listener(rcvbuf=SMALL_BUFFER)
    async with serve(app, fd=fd) as srv:
        stream = await open_small_buffer_stream(srv, sndbuf=SMALL_BUFFER)
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


class ReadAheadProbe:
    """The most unparsed input a parser held after taking in a read, on any connection."""

    def __init__(self) -> None:
        self.largest = 0
        self._waiters: list[tuple[int, trio.Event]] = []

    def record(self, pending: int) -> None:
        self.largest = max(self.largest, pending)
        for size, reached in self._waiters:
            if self.largest >= size:
                reached.set()

    async def wait_for(self, size: int) -> bool:
        """Wait until some connection has held ``size`` unparsed bytes; False if none
        did within ``WAIT``."""
        reached = trio.Event()
        self._waiters.append((size, reached))
        if self.largest >= size:
            reached.set()
        with trio.move_on_after(WAIT):
            await reached.wait()
        return reached.is_set()


@pytest.fixture
def read_ahead(monkeypatch: pytest.MonkeyPatch) -> ReadAheadProbe:
    """Records ``pending_input_size`` after every ``receive_data``, for both parsers."""
    probe = ReadAheadProbe()
    for parser in (H1Protocol, H1HttpToolsProtocol):
        original = parser.receive_data

        def receive_data(self: Any, data: bytes, _original: Any = original) -> list[ProtocolEvent]:
            events: list[ProtocolEvent] = _original(self, data)
            probe.record(self.pending_input_size)
            return events

        monkeypatch.setattr(parser, "receive_data", receive_data)
    return probe


#: The body of the request pipelined behind the one whose app waits for a disconnect.
PIPELINED_BODY = 1 * MiB
#: How much of that request arrives first, on its own: the server's next read then
#: finds part of its read-ahead allowance used.
FIRST_PIECE = 10 * KiB


async def test_read_ahead_stops_at_the_limit_while_the_app_waits_for_a_disconnect(
    serve: Any, read_ahead: ReadAheadProbe
) -> None:
    """While the app waits in ``receive()`` to see the client leave, the server reads
    the pipelined request behind it, but holds at most ``READ_AHEAD_LIMIT`` unparsed
    bytes: with some already held, a read asks only for the room left."""
    watching = trio.Event()
    watch = trio.CancelScope(deadline=trio.current_time() + 2 * WAIT)
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/watch":
            await receive()
            with watch:
                watching.set()
                seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(target="/watch"))
        with trio.fail_after(WAIT):
            await watching.wait()
        pipelined = request("POST", "/", body=b"y" * PIPELINED_BODY)
        await client.send(pipelined[:FIRST_PIECE])
        took_in_first_piece = await read_ahead.wait_for(FIRST_PIECE)
        async with trio.open_nursery() as nursery:
            # The server never reads all of it: sent beside the test, cancelled at the end.
            nursery.start_soon(client.send, pipelined[FIRST_PIECE:])
            reached_the_limit = await read_ahead.wait_for(READ_AHEAD_LIMIT)
            await trio.sleep(0.05)  # room for a read past the limit, were there one
            watch.cancel()
            response = await client.read_response()
            nursery.cancel_scope.cancel()
    assert seen == [], "the wait for a disconnect ended with a message"
    assert response.status == 200
    assert took_in_first_piece, "the server did not read ahead while the app waited"
    assert reached_the_limit, "the server never read ahead to its limit"
    assert read_ahead.largest <= READ_AHEAD_LIMIT, (
        f"{read_ahead.largest} bytes held unparsed, limit {READ_AHEAD_LIMIT}"
    )
