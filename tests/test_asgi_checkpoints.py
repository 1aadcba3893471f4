"""Every ASGI ``receive()`` and ``send()`` of an HTTP request is a trio checkpoint.

A checkpoint both lets other tasks run and can be cancelled, in every state of
the cycle: body already buffered, body complete, response complete, client gone,
and for a body send that writes nothing. An app that loops on ``receive()`` or
``send()`` must never freeze the server, and a ``receive()`` from an
already-cancelled scope (a poll) must neither consume the body nor write.

The apps record what they saw into lists the tests assert on: the server turns
an exception in the app into a 500, which would hide the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)

Scope = dict[str, Any]


class Checks:
    """Runs ``assert_checkpoints`` inside an app and keeps the verdicts for the test."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.done = trio.Event()

    @contextmanager
    def checkpoint(self, label: str) -> Iterator[None]:
        try:
            with trio.testing.assert_checkpoints():
                yield
        except AssertionError:
            self.failed.append(label)
        else:
            self.passed.append(label)

    async def wait(self) -> None:
        with trio.fail_after(WAIT):
            await self.done.wait()


async def respond(send: Any, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_receive_of_an_already_buffered_body_is_a_checkpoint(serve: Any) -> None:
    checks = Checks()
    messages: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            # Head and body arrived in one segment: the body is parsed before the app runs.
            with checks.checkpoint("receive() with the body buffered"):
                messages.append(await receive())
            await respond(send)
        finally:
            checks.done.set()

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request("POST", "/", body=b"buffered body"))
        assert (await client.read_response()).status == 200
        await checks.wait()
    assert messages == [{"type": "http.request", "body": b"buffered body", "more_body": False}]
    assert not checks.failed, f"not a checkpoint: {checks.failed}"


async def test_receive_waiting_for_the_disconnect_is_cancellable_and_a_checkpoint(
    serve: Any,
) -> None:
    checks = Checks()
    outcomes: list[Any] = []
    polled = trio.Event()
    client_closed = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            assert (await receive())["more_body"] is False
            with trio.move_on_after(0.05) as waiting:
                outcomes.append(await receive())
            outcomes.append(waiting.cancelled_caught)
            polled.set()
            with trio.fail_after(WAIT):
                await client_closed.wait()
            with checks.checkpoint("receive() with the client's EOF already there"):
                outcomes.append(await receive())
        finally:
            checks.done.set()

    async with serve(app) as srv:
        async with connect(srv) as client:
            await client.send(request("POST", "/", body=b"all of it"))
            with trio.fail_after(WAIT):
                await polled.wait()
        client_closed.set()
        await checks.wait()
    assert outcomes == [True, {"type": "http.disconnect"}]
    assert not checks.failed, f"not a checkpoint: {checks.failed}"


async def test_receive_after_the_response_is_a_checkpoint(serve: Any) -> None:
    checks = Checks()
    messages: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            await respond(send)
            for n in range(3):
                with checks.checkpoint(f"receive() #{n} after the response"):
                    messages.append(await receive())
        finally:
            checks.done.set()

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        assert (await client.read_response()).status == 200
        await checks.wait()
    assert messages == [{"type": "http.disconnect"}] * 3
    assert not checks.failed, f"not a checkpoint: {checks.failed}"


async def test_receive_after_a_disconnect_is_a_checkpoint(serve: Any) -> None:
    checks = Checks()
    messages: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            messages.append(await receive())  # waits for the client to go
            for n in range(3):
                with checks.checkpoint(f"receive() #{n} after the disconnect"):
                    messages.append(await receive())
        finally:
            checks.done.set()

    async with serve(app) as srv:
        async with connect(srv) as client:
            await client.send(request())
        await checks.wait()
    assert messages == [{"type": "http.disconnect"}] * 4
    assert not checks.failed, f"not a checkpoint: {checks.failed}"


async def test_send_is_a_checkpoint(serve: Any) -> None:
    checks = Checks()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            with checks.checkpoint("send(http.response.start)"):
                await send({"type": "http.response.start", "status": 200, "headers": []})
            for n in range(4):
                with checks.checkpoint(f"send(http.response.body) #{n}"):
                    await send({"type": "http.response.body", "body": b"x", "more_body": True})
            with checks.checkpoint("send(http.response.body) last"):
                await send({"type": "http.response.body", "body": b"x"})
        finally:
            checks.done.set()

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        assert (await client.read_response()).body == b"xxxxx"
        await checks.wait()
    assert len(checks.passed) + len(checks.failed) == 6
    assert not checks.failed, f"not a checkpoint: {checks.failed}"


@pytest.mark.parametrize(
    ("method", "chunk"),
    [("HEAD", b"row\n"), ("GET", b"")],
    ids=["head-response", "empty-chunk"],
)
async def test_a_body_send_that_writes_nothing_is_a_checkpoint(
    serve: Any, method: str, chunk: bytes
) -> None:
    """A body message that puts no byte on the wire (any body of a ``HEAD`` response, an
    empty chunk of a streamed one) still yields and can be cancelled."""
    checks = Checks()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            for n in range(4):
                with checks.checkpoint(f"send(http.response.body) #{n} writing nothing"):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            with checks.checkpoint("send(http.response.body) last"):
                await send({"type": "http.response.body", "body": b""})
        finally:
            checks.done.set()

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request(method))
        response = await client.read_response(head_request=method == "HEAD")
        assert response.status == 200
        if method == "GET":
            assert response.body == b"first"
        await checks.wait()
    assert len(checks.passed) + len(checks.failed) == 5
    assert not checks.failed, f"not a checkpoint: {checks.failed}"


#: Longest the spinning app runs before it gives up (it must be cancelled long before).
SPIN_LIMIT = 2.0


async def test_an_app_polling_receive_after_its_response_does_not_freeze_the_server(
    serve: Any,
) -> None:
    """``while True: with move_on_after(0.01): await receive()`` after the response.

    A neighbour on another connection is served while it loops, and a graceful
    shutdown cancels it promptly.
    """
    outcome: list[str] = []
    iterations = 0
    cancelled_at: list[float] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal iterations
        if scope["type"] != "http":
            return
        await receive()
        await respond(send, scope["path"].encode())
        if scope["path"] != "/spin":
            return
        started = trio.current_time()
        try:
            while True:
                iterations += 1
                # Checked without yielding, so the test ends even if receive() never yields.
                if trio.current_time() - started > SPIN_LIMIT:
                    outcome.append("never cancelled")
                    return
                with trio.move_on_after(0.01):
                    await receive()
        except trio.Cancelled:
            outcome.append("cancelled")
            cancelled_at.append(trio.current_time())
            raise

    async with serve(app, timeout_graceful_shutdown=0.2) as srv:
        async with connect(srv) as spinner:
            await spinner.send(request(target="/spin"))
            assert (await spinner.read_response()).body == b"/spin"
            started = trio.current_time()
            async with connect(srv) as neighbour:
                await neighbour.send(request(target="/neighbour"))
                assert (await neighbour.read_response()).body == b"/neighbour"
            served_after = trio.current_time() - started
            shutdown_at = trio.current_time()
            srv.shutdown()
    assert outcome == ["cancelled"], f"after {iterations} iterations"
    assert served_after < SPIN_LIMIT / 2, f"the neighbour waited {served_after:.2f} s"
    assert cancelled_at[0] - shutdown_at < 1.0


async def test_an_app_streaming_a_head_response_does_not_starve_a_neighbour(serve: Any) -> None:
    """An app streaming rows from memory in answer to ``HEAD`` writes nothing, ever.

    Its sends yield all the same, so a request on another connection is served
    while it loops (here, the neighbour's answer is what ends the loop).
    """
    streaming = trio.Event()
    neighbour_served = trio.Event()
    outcome: list[str] = []
    rows = 0

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal rows
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] == "/neighbour":
            await respond(send, b"/neighbour")
            neighbour_served.set()
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        streaming.set()
        started = trio.current_time()
        # Checked without yielding, so the test ends even if send() never yields.
        while not neighbour_served.is_set():
            if trio.current_time() - started > SPIN_LIMIT:
                outcome.append("the neighbour starved")
                break
            rows += 1
            await send({"type": "http.response.body", "body": b"row\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serve(app) as srv, connect(srv) as streamer:
        await streamer.send(request("HEAD", "/rows"))
        with trio.fail_after(WAIT):
            await streaming.wait()
        started = trio.current_time()
        async with connect(srv) as neighbour:
            await neighbour.send(request(target="/neighbour"))
            assert (await neighbour.read_response()).body == b"/neighbour"
        served_after = trio.current_time() - started
        assert (await streamer.read_response(head_request=True)).status == 200
    assert outcome == [], f"after {rows} rows"
    assert served_after < SPIN_LIMIT / 2, f"the neighbour waited {served_after:.2f} s"


async def test_a_poll_before_the_body_still_gets_100_continue_and_the_response(
    serve: Any,
) -> None:
    """``receive()`` from an already-cancelled scope before the body is read.

    Starlette's ``Request.is_disconnected()`` polls this way. The poll is
    cancelled, and it neither consumes body nor writes: the ``100 Continue``
    the client waits for comes once the app reads the body, and so does the
    response.
    """
    polls: list[str] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            with trio.CancelScope() as poll:
                poll.cancel()
                polls.append((await receive())["type"])
            polls.append("cancelled" if poll.cancelled_caught else "returned")
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await respond(send, b"got " + body)
        finally:
            done.set()

    async with serve(app) as srv, connect(srv) as client:
        await client.send(
            request("POST", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
        )
        interim = await client.read_head()
        assert interim.head == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"hello")
        response = await client.read_response()
        with trio.fail_after(WAIT):
            await done.wait()
    assert polls == ["cancelled"]
    assert (response.status, response.body) == (200, b"got hello")


async def test_each_disconnect_message_is_a_new_dict(serve: Any) -> None:
    """Mutating one ``http.disconnect`` message does not change the next one received."""
    messages: list[dict[str, Any]] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await receive()
            await respond(send)
            first = await receive()
            try:
                first["mutated by the app"] = True
                messages.append(dict(await receive()))
            finally:
                # Undo, in case the server shares one dict between requests.
                first.pop("mutated by the app", None)
        finally:
            done.set()

    async with serve(app) as srv, connect(srv) as client:
        await client.send(request())
        assert (await client.read_response()).status == 200
        with trio.fail_after(WAIT):
            await done.wait()
    assert messages == [{"type": "http.disconnect"}]
