"""Who reads a WebSocket: the app task inline, or the connection task while the app is away.

:class:`MessageReader` (the HTTP/1.1 transport's read scheduling) runs here
under a real :class:`WebSocketSession`, on a scripted source whose peer is the
test, so each test can see which task asked for every event, how far reading
ran ahead of the app, and which reads were interrupted.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from ws_client import WAIT
from ws_scripted import ScriptedTransport, serve, session_for, text

from palfrey.asgi.errors import ClientDisconnected
from palfrey.protocols.events import WebSocketDisconnected
from palfrey.transport.ws_reader import READ_AHEAD_DELAY, Inbound


async def test_an_app_waiting_in_receive_reads_inline() -> None:
    transport = ScriptedTransport(*(text(f"m{i}") for i in range(50)))
    transport.source.feed(WebSocketDisconnected(1000, ""))
    app_tasks: list[trio.lowlevel.Task] = []

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app_tasks.append(trio.lowlevel.current_task())
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await serve(session_for(transport), echo, nursery)
    assert transport.sent == [f"m{i}" for i in range(50)]
    # Every message, and the disconnect, was read by the app task itself: no hand-off.
    source = transport.source
    assert len(source.read_by(app_tasks[0])) == len(source.readers) == 51


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
            nursery.start_soon(serve, session_for(transport), pusher, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 3)
            transport.source.feed(WebSocketDisconnected(4000, "gone"))
        # The reads ended on the disconnect although the app never called receive().
    assert [event for _, event in transport.source.readers] == [WebSocketDisconnected(4000, "gone")]
    assert outcome == [
        "sending stopped",
        {"type": "websocket.disconnect", "code": 4000, "reason": "gone"},
    ]


async def test_read_ahead_stops_at_max_queue_and_resumes_inline() -> None:
    transport = ScriptedTransport(*(text(str(i)) for i in range(20)), max_queue=4)
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

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, session_for(transport), slow, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 4)
            # The app is away: the connection task read ahead, and only up to the limit.
            assert len(transport.source.readers) == 4
            release.set()
            while len(got) < 20:
                await trio.sleep(0.01)
            transport.source.feed(WebSocketDisconnected(1000, ""))
    assert got == [str(i) for i in range(20)]
    assert transport.reader.queue_high_water == 4
    # Once the queue ran dry the app read the rest itself.
    assert len(transport.source.read_by(app_tasks[0])) >= 10


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
            nursery.start_soon(serve, session, waiting, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert transport.source._busy  # the app task is reading
            session.shutdown()
            await trio.testing.wait_all_tasks_blocked()
            # The app learnt at once, without the peer's answer; the close went out.
            assert seen == [{"type": "websocket.disconnect", "code": 1012, "reason": ""}]
            assert transport.source.interrupted_reads == 1
            assert transport.closes == [1012]
            # The connection task reads on to finish the closing handshake.
            transport.source.feed(text("late"), WebSocketDisconnected(1012, ""))
    assert [event for task, event in transport.source.readers if task is not app_tasks[0]] == [
        text("late"),
        WebSocketDisconnected(1012, ""),
    ]


async def test_shutdown_delivers_what_was_queued_first() -> None:
    transport = ScriptedTransport(text("a"), text("b"))
    seen: list[Any] = []
    release = trio.Event()

    async def late(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        seen.extend([await receive() for _ in range(3)])

    session = session_for(transport)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, session, late, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 3)
            session.shutdown()
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            transport.source.feed(WebSocketDisconnected(1012, ""))
    assert seen == [
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.receive", "text": "b"},
        {"type": "websocket.disconnect", "code": 1012, "reason": ""},
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
            nursery.start_soon(serve, session_for(transport), late, nursery)
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
            nursery.start_soon(serve, session_for(transport), two_readers, nursery)
            for i in range(10):
                await trio.testing.wait_all_tasks_blocked()
                transport.source.feed(text(str(i)))
            await trio.testing.wait_all_tasks_blocked()
            transport.source.feed(WebSocketDisconnected(1000, ""))
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
            nursery.start_soon(serve, session_for(transport), impatient, nursery)
            while not seen:
                await trio.sleep(0.01)
            transport.source.feed(text("kept"), WebSocketDisconnected(1000, ""))
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
            read_before_accept.extend(transport.source.readers)
            await send({"type": "websocket.accept"})

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, session_for(transport), eager, nursery)
            while not seen:
                await trio.sleep(0.01)
            transport.source.feed(WebSocketDisconnected(1000, ""))
    assert read_before_accept == []  # nothing is read before the handshake is answered
    assert seen == [{"type": "websocket.receive", "text": "first"}]


async def test_reading_passes_back_to_an_app_that_returns_to_receive(autojump_clock: Any) -> None:
    # Virtual time: the handover depends on who sleeps longer, never on the machine's load.
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
            nursery.start_soon(serve, session_for(transport), returning, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 4)
            transport.source.feed(text("handed over"))
            while not seen:
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            transport.source.feed(text("read inline"), WebSocketDisconnected(1000, ""))
    assert seen == ["handed over", "read inline"]
    (app_task,) = app_tasks
    source = transport.source
    assert source.read_by(app_task) == [text("read inline"), WebSocketDisconnected(1000, "")]


async def test_an_app_that_returns_ends_the_wait_for_room() -> None:
    """A full queue pauses the reads; once the app is gone nothing waits for room any more."""
    transport = ScriptedTransport(*(text(str(i)) for i in range(6)), max_queue=2)
    done = trio.Event()

    async def leaves(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await done.wait()
        raise ClientDisconnected("a send failed")  # as an app whose send broke would

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, session_for(transport), leaves, nursery)
            await trio.sleep(READ_AHEAD_DELAY * 3)
            assert len(transport.source.readers) == 2  # paused: the queue is full
            done.set()
            await trio.testing.wait_all_tasks_blocked()
            # The rest is read and dropped, up to the peer's end.
            assert len(transport.source.readers) == 6
            transport.source.feed(WebSocketDisconnected(1006, ""))
    assert transport.reader.inbound is Inbound.ENDED
