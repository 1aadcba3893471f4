"""Concurrent ``receive()`` calls on one request take turns, in the order they came.

The stream under an HTTP cycle has one reader. An app may still call ``receive()``
from several tasks at once (a disconnect watcher beside a body reader), so the
cycle queues the calls: each gets the next message in turn, and a call cancelled
while it waits, or while it reads, passes the turn on without losing a message.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from palfrey.asgi.headers import DefaultHeaders
from palfrey.asgi.http import HTTPCycle
from palfrey.asgi.scope import http_scope


class ChunkStream:
    """An ``HTTPStream`` whose body chunks arrive when the test sends them."""

    supports_trailers = False
    supports_early_hints = False

    def __init__(self) -> None:
        self.reading = False
        self.send_chunk, self._chunks = trio.open_memory_channel[tuple[bytes, bool]](10)

    async def receive_body(self) -> tuple[bytes, bool] | None:
        # Like a socket: one reader at a time, or the call fails.
        if self.reading:
            raise trio.BusyResourceError("two readers at once")
        self.reading = True
        try:
            return await self._chunks.receive()
        finally:
            self.reading = False

    async def wait_disconnected(self) -> None:
        await trio.sleep_forever()


def new_cycle() -> tuple[HTTPCycle, ChunkStream]:
    scope = http_scope(
        method=b"POST",
        target=b"/",
        headers=[],
        http_version="1.1",
        scheme="http",
        client=None,
        server=None,
        root_path="",
        state=None,
    )
    stream = ChunkStream()
    return HTTPCycle(scope, stream, DefaultHeaders()), stream  # type: ignore[arg-type]


async def test_calls_are_answered_in_the_order_they_came() -> None:
    cycle, stream = new_cycle()
    got: list[tuple[int, bytes]] = []

    async def reader(index: int) -> None:
        message = await cycle.receive()
        got.append((index, message["body"]))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(reader, index)
                await trio.testing.wait_all_tasks_blocked()
            for chunk in (b"a", b"b", b"c"):
                stream.send_chunk.send_nowait((chunk, True))
    assert got == [(0, b"a"), (1, b"b"), (2, b"c")]


async def test_a_call_cancelled_while_waiting_leaves_the_queue() -> None:
    cycle, stream = new_cycle()
    got: list[bytes] = []

    async def reader() -> None:
        got.append((await cycle.receive())["body"])

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as waiting:
                waiting.cancel()
                await cycle.receive()  # queued behind the reader, then cancelled
            assert waiting.cancelled_caught
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            stream.send_chunk.send_nowait((b"first", True))
            stream.send_chunk.send_nowait((b"second", False))
    assert got == [b"first", b"second"]


async def test_a_call_cancelled_while_reading_hands_the_turn_on() -> None:
    cycle, stream = new_cycle()
    got: list[Any] = []

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            reading = trio.CancelScope()

            async def first() -> None:
                with reading:
                    await cycle.receive()
                got.append("first cancelled")

            async def second() -> None:
                got.append((await cycle.receive())["body"])

            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            reading.cancel()
            await trio.testing.wait_all_tasks_blocked()
            stream.send_chunk.send_nowait((b"body", True))
    assert got == ["first cancelled", b"body"]
    # The turn is free again: a later call reads at once.
    stream.send_chunk.send_nowait((b"rest", False))
    with trio.fail_after(5):
        assert (await cycle.receive())["body"] == b"rest"


async def test_the_turn_goes_to_the_waiting_call_not_to_a_newcomer() -> None:
    cycle, stream = new_cycle()
    got: list[tuple[str, bytes]] = []

    async def twice() -> None:
        got.append(("twice", (await cycle.receive())["body"]))
        # Called again at once, before the waiting call has run: it queues behind it.
        got.append(("twice", (await cycle.receive())["body"]))

    async def once() -> None:
        got.append(("once", (await cycle.receive())["body"]))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(twice)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(once)
            await trio.testing.wait_all_tasks_blocked()
            for chunk in (b"a", b"b", b"c"):
                stream.send_chunk.send_nowait((chunk, True))
    assert got == [("twice", b"a"), ("once", b"b"), ("twice", b"c")]
