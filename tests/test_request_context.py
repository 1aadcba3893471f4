"""Context variables do not leak from one request to the next on a kept-alive connection.

HTTP/1.1 serves a connection's requests in one task; each request still starts
from the connection's context, as it would in a task of its own. The helper
that does it, ``run_in_context``, must otherwise behave exactly like ``await``.
"""

from __future__ import annotations

import contextvars
from typing import Any

import httpx
import pytest
import trio

import palfrey
from palfrey.transport.request_context import run_in_context

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def context_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request id it found, then sets its own (as middleware would)."""
    if scope["type"] != "http":
        return
    seen = REQUEST_ID.get()
    REQUEST_ID.set(scope["path"])
    body = seen.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_requests_on_one_connection_start_from_the_connection_context() -> None:
    REQUEST_ID.set("set by the embedding program")
    async with trio.open_nursery() as nursery:
        config = palfrey.Config(port=0, lifespan="off", log_level="warning", http="h11")
        urls = await nursery.start(palfrey.serve, context_app, config)
        async with httpx.AsyncClient(base_url=urls[0]) as client:
            seen = [(await client.get(f"/request-{n}")).text for n in range(3)]
        nursery.cancel_scope.cancel()
    # One connection (httpx keeps it alive); no request sees the one before it.
    assert seen == ["set by the embedding program"] * 3


async def test_pipelined_requests_start_from_the_connection_context() -> None:
    async with trio.open_nursery() as nursery:
        config = palfrey.Config(port=0, lifespan="off", log_level="warning")
        urls = await nursery.start(palfrey.serve, context_app, config)
        port = int(urls[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
        await stream.send_all(
            request * 2 + b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                received += chunk
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert received.count(b"200 OK") == 3
    assert received.count(b"\r\n\r\nunset") == 3


async def test_run_in_context_returns_and_raises_like_await() -> None:
    async def answer() -> str:
        await trio.lowlevel.checkpoint()
        REQUEST_ID.set("inside")
        await trio.lowlevel.checkpoint()
        return REQUEST_ID.get()

    async def fail() -> None:
        await trio.lowlevel.checkpoint()
        raise LookupError("from the coroutine")

    context = contextvars.copy_context()
    assert await run_in_context(context, answer()) == "inside"
    assert context[REQUEST_ID] == "inside"
    assert REQUEST_ID.get() == "unset"
    with pytest.raises(LookupError, match="from the coroutine"):
        await run_in_context(contextvars.copy_context(), fail())


async def test_run_in_context_passes_cancellation_in_and_lets_the_coroutine_clean_up() -> None:
    cleaned_up_in: list[str] = []

    async def sleeper() -> None:
        REQUEST_ID.set("sleeper")
        try:
            await trio.sleep_forever()
        finally:
            cleaned_up_in.append(REQUEST_ID.get())

    with trio.move_on_after(0.01) as scope:
        await run_in_context(contextvars.copy_context(), sleeper())
    assert scope.cancelled_caught
    assert cleaned_up_in == ["sleeper"]


async def test_tasks_started_inside_inherit_the_request_context() -> None:
    seen: list[str] = []

    async def child() -> None:
        seen.append(REQUEST_ID.get())

    async def request() -> None:
        REQUEST_ID.set("request")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    await run_in_context(contextvars.copy_context(), request())
    assert seen == ["request"]
    assert REQUEST_ID.get() == "unset"
