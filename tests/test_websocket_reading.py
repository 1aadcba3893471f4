"""Who reads a WebSocket: the app task inline, or the connection task while the app is away.

:class:`WebSocketSession` runs here against a scripted transport, so each test
can see which task asked for every message, how far reading ran ahead of the
app, and what an interrupted read returned.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio
import trio.testing
from ws_client import WAIT

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.headers import DefaultHeaders
from palfrey.asgi.websocket import READ_AHEAD_DELAY, WebSocketSession
from palfrey.protocols.events import (
    WebSocketConnected,
    WebSocketDataReceived,
    WebSocketDisconnected,
    WebSocketEvent,
)

SCOPE = {"type": "websocket", "raw_path": b"/", "query_string": b"", "client": None}


class ScriptedTransport:
    """A WebSocketTransport whose peer is the test: ``feed`` queues what the next reads return."""

    def __init__(self, *events: WebSocketEvent) -> None:
        self.events: deque[WebSocketEvent] = deque([WebSocketConnected(None), *events])
        #: The task that read each event, in order.
        self.readers: list[tuple[trio.lowlevel.Task, WebSocketEvent]] = []
        self.reads_returning_none = 0
        self.sent: list[bytes | str] = []
        self.closes: list[int] = []
        self._arrived = trio.lowlevel.ParkingLot()
        self._interrupted = False
        self._busy = False

    def feed(self, *events: WebSocketEvent) -> None:
        self.events.extend(events)
        self._arrived.unpark_all()

    def read_by(self, task: trio.lowlevel.Task) -> list[WebSocketEvent]:
        return [event for reader, event in self.readers if reader is task]

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        await trio.lowlevel.checkpoint()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        await trio.lowlevel.checkpoint()

    async def send_body(self, body: bytes, end: bool) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_event(self) -> WebSocketEvent | None:
        assert not self._busy, "two tasks read at once"
        self._busy = True
        try:
            while not self.events:
                if self._interrupted:
                    self.reads_returning_none += 1
                    return None
                await self._arrived.park()
            event = self.events.popleft()
            self.readers.append((trio.lowlevel.current_task(), event))
            return event
        finally:
            self._busy = False
            self._interrupted = False

    def interrupt_receive(self) -> None:
        self._interrupted = True
        self._arrived.unpark_all()

    async def send_message(self, data: bytes | str) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        self.closes.append(code)


def session_for(transport: ScriptedTransport, max_queue: int = 32) -> WebSocketSession:
    return WebSocketSession(
        scope=dict(SCOPE), transport=transport, defaults=DefaultHeaders(), max_queue=max_queue
    )


def text(value: str) -> WebSocketDataReceived:
    return WebSocketDataReceived(value)


async def test_an_app_waiting_in_receive_reads_inline() -> None:
    transport = ScriptedTransport(*(text(f"m{i}") for i in range(50)))
    transport.feed(WebSocketDisconnected(1000, ""))
    app_tasks: list[trio.lowlevel.Task] = []

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app_tasks.append(trio.lowlevel.current_task())
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await session_for(transport).serve(echo, nursery)
    assert transport.sent == [f"m{i}" for i in range(50)]
    # Every message, and the disconnect, was read by the app task itself: no hand-off.
    assert len(transport.read_by(app_tasks[0])) == len(transport.readers) == 52


async def test_the_connection_task_reads_while_the_app_only_sends() -> None:
    transport = ScriptedTransport()
    outcome: list[Any] = []

    async def pusher(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                await trio.sleep(READ_AHEAD_DELAY / 5)
        except ClientDisconnected:
            outcome.append("sending stopped")
        outcome.append(await receive())

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(session_for(transport).serve, pusher, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 3)
            transport.feed(WebSocketDisconnected(4000, "gone"))
        # serve() returned on the disconnect although the app never called receive().
    assert [event for _, event in transport.readers][-1] == WebSocketDisconnected(4000, "gone")
    assert outcome == [
        "sending stopped",
        {"type": "websocket.disconnect", "code": 4000, "reason": "gone"},
    ]


async def test_read_ahead_stops_at_max_queue_and_resumes_inline() -> None:
    transport = ScriptedTransport(*(text(str(i)) for i in range(20)))
    got: list[str] = []
    app_tasks: list[trio.lowlevel.Task] = []
    release = trio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app_tasks.append(trio.lowlevel.current_task())
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while len(got) < 20:
            got.append((await receive())["text"])

    session = session_for(transport, max_queue=4)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve, slow, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 4)
            # The app is away: the connection task read ahead, and only up to the limit.
            assert len(transport.readers) == 1 + 4
            release.set()
            while len(got) < 20:
                await trio.sleep(0.01)
            transport.feed(WebSocketDisconnected(1000, ""))
    assert got == [str(i) for i in range(20)]
    assert session.queue_high_water == 4
    # Once the queue ran dry the app read the rest itself.
    assert len(transport.read_by(app_tasks[0])) >= 10


async def test_shutdown_interrupts_an_inline_read() -> None:
    transport = ScriptedTransport()
    seen: list[Any] = []
    app_tasks: list[trio.lowlevel.Task] = []

    async def waiting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app_tasks.append(trio.lowlevel.current_task())
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())

    session = session_for(transport)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve, waiting, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert transport.read_by(app_tasks[0]) == [WebSocketConnected(None)]
            session.shutdown()
            await trio.testing.wait_all_tasks_blocked()
            # The app learnt at once, without the peer's answer; the close went out.
            assert seen == [{"type": "websocket.disconnect", "code": 1012, "reason": ""}]
            assert transport.reads_returning_none == 1
            assert transport.closes == [1012]
            # The connection task reads on to finish the closing handshake.
            transport.feed(text("late"), WebSocketDisconnected(1012, ""))
    assert [event for task, event in transport.readers if task is not app_tasks[0]] == [
        text("late"),
        WebSocketDisconnected(1012, ""),
    ]


async def test_messages_read_ahead_come_before_the_disconnect() -> None:
    transport = ScriptedTransport(text("a"), text("b"), WebSocketDisconnected(4001, "bye"))
    seen: list[Any] = []
    release = trio.Event()

    async def late(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "websocket.disconnect":
                return

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session_for(transport).serve, late, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 3)
            release.set()
    assert seen == [
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.receive", "text": "b"},
        {"type": "websocket.disconnect", "code": 4001, "reason": "bye"},
    ]


async def test_two_app_tasks_receiving_share_the_messages() -> None:
    transport = ScriptedTransport()
    seen: list[str] = []

    async def two_readers(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

        async def reader() -> None:
            while (message := await receive())["type"] == "websocket.receive":
                seen.append(message["text"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(reader)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session_for(transport).serve, two_readers, nursery)
            for i in range(10):
                await trio.testing.wait_all_tasks_blocked()
                transport.feed(text(str(i)))
            await trio.testing.wait_all_tasks_blocked()
            transport.feed(WebSocketDisconnected(1000, ""))
    assert seen == [str(i) for i in range(10)]


async def test_a_cancelled_receive_loses_nothing() -> None:
    transport = ScriptedTransport()
    seen: list[Any] = []

    async def impatient(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        with trio.move_on_after(READ_AHEAD_DELAY / 5) as timeout:
            await receive()
        seen.append(timeout.cancelled_caught)
        seen.append(await receive())

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session_for(transport).serve, impatient, nursery)
            while not seen:
                await trio.sleep(0.01)
            transport.feed(text("kept"), WebSocketDisconnected(1000, ""))
    assert seen == [True, {"type": "websocket.receive", "text": "kept"}]


async def test_receive_before_accept_waits_for_the_accept() -> None:
    transport = ScriptedTransport(text("first"))
    seen: list[Any] = []
    read_before_accept: list[Any] = []

    async def eager(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()

        async def early_receive() -> None:
            seen.append(await receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(early_receive)
            await trio.testing.wait_all_tasks_blocked()
            read_before_accept.extend(transport.readers)
            await send({"type": "websocket.accept"})

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session_for(transport).serve, eager, nursery)
            while not seen:
                await trio.sleep(0.01)
            transport.feed(WebSocketDisconnected(1000, ""))
    assert read_before_accept == []  # nothing is read before the handshake is answered
    assert seen == [{"type": "websocket.receive", "text": "first"}]


async def test_reading_passes_back_to_an_app_that_returns_to_receive() -> None:
    transport = ScriptedTransport()
    seen: list[Any] = []
    app_tasks: list[trio.lowlevel.Task] = []

    async def returning(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app_tasks.append(trio.lowlevel.current_task())
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep(READ_AHEAD_DELAY * 3)  # away: the connection task starts reading
        while (message := await receive())["type"] == "websocket.receive":
            seen.append(message["text"])

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session_for(transport).serve, returning, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 4)
            transport.feed(text("handed over"))
            while not seen:
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            transport.feed(text("read inline"), WebSocketDisconnected(1000, ""))
    assert seen == ["handed over", "read inline"]
    (app_task,) = app_tasks
    assert transport.read_by(app_task) == [text("read inline"), WebSocketDisconnected(1000, "")]
