"""The ASGI side of a WebSocket, on a scripted transport: checkpoints, fresh messages, headers.

Every ``receive()`` and ``send()`` must be a trio checkpoint whatever the
state, also when the answer is at hand without I/O; the apps here check each
state with ``trio.testing.assert_checkpoints`` and count the turns a
neighbour task gets while they loop.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from ws_client import WAIT, neighbour_turns
from ws_scripted import ScriptedTransport, serve, session_for, text

from palfrey.asgi.errors import ClientDisconnected
from palfrey.protocols.events import WebSocketDisconnected
from palfrey.transport.ws_reader import READ_AHEAD_DELAY

LOOPS = 100
SEND = {"type": "websocket.send", "text": "x"}


class Checks:
    """Verdicts of ``assert_checkpoints`` taken inside an app (an app's error becomes a close)."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed: list[str] = []

    async def receive(self, label: str, receive: Any) -> Any:
        try:
            with trio.testing.assert_checkpoints():
                message = await receive()
        except AssertionError:
            self.failed.append(label)
            return None
        self.passed.append(label)
        return message

    async def send_refused(self, label: str, send: Any, message: dict[str, Any]) -> None:
        try:
            with trio.testing.assert_checkpoints(), pytest.raises(ClientDisconnected):
                await send(message)
        except AssertionError:
            self.failed.append(label)
        else:
            self.passed.append(label)


async def test_every_receive_and_send_is_a_checkpoint() -> None:
    transport = ScriptedTransport(text("a"), text("b"), text("c"))
    checks = Checks()
    messages: list[Any] = []
    turns: dict[str, int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        messages.append(await checks.receive("connect", receive))
        await send({"type": "websocket.accept"})
        await trio.sleep(READ_AHEAD_DELAY * 3)  # away: the connection task reads ahead
        for label in ("queued", "queued", "queued"):
            messages.append(await checks.receive(label, receive))
        transport.source.feed(WebSocketDisconnected(4000, "bye"))
        messages.append(await checks.receive("end reported", receive))
        messages.append(await checks.receive("after the end", receive))
        await checks.send_refused(
            "send after the end", send, {"type": "websocket.send", "text": "x"}
        )
        await checks.send_refused("close after the end", send, {"type": "websocket.close"})
        turns["receive"] = await neighbour_turns(receive, LOOPS)
        turns["send"] = await neighbour_turns(lambda: _refused(send), LOOPS)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await serve(session_for(transport), app, nursery)
    assert checks.failed == []
    assert messages == [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.receive", "text": "b"},
        {"type": "websocket.receive", "text": "c"},
        {"type": "websocket.disconnect", "code": 4000, "reason": "bye"},
        {"type": "websocket.disconnect", "code": 4000, "reason": "bye"},
    ]
    # A turn for the neighbour per call (give or take the one it started with).
    assert min(turns.values()) >= LOOPS - 1


async def _refused(send: Any) -> None:
    with pytest.raises(ClientDisconnected):
        await send(SEND)


async def test_checkpoints_while_the_server_closes_and_after_the_app_closed() -> None:
    transport = ScriptedTransport(text("queued"))
    checks = Checks()
    messages: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep(READ_AHEAD_DELAY * 3)
        session.shutdown()
        await checks.send_refused(
            "send while closing", send, {"type": "websocket.send", "text": "x"}
        )
        messages.append(await checks.receive("queued while closing", receive))
        messages.append(await checks.receive("end while closing", receive))

    session = session_for(transport)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, session, app, nursery)
            await trio.testing.wait_all_tasks_blocked()
            transport.source.feed(WebSocketDisconnected(1012, ""))
    assert checks.failed == []
    assert messages == [
        {"type": "websocket.receive", "text": "queued"},
        {"type": "websocket.disconnect", "code": 1012, "reason": ""},
    ]

    transport = ScriptedTransport()
    checks = Checks()

    async def closer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001})
        messages.append(await checks.receive("after the app's close", receive))
        await checks.send_refused("close again", send, {"type": "websocket.close"})

    messages.clear()
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, session_for(transport), closer, nursery)
            await trio.testing.wait_all_tasks_blocked()
            transport.source.feed(WebSocketDisconnected(4001, ""))
    assert checks.failed == []
    assert messages == [{"type": "websocket.disconnect", "code": 4001, "reason": ""}]


async def test_the_denial_response_start_is_a_checkpoint() -> None:
    transport = ScriptedTransport()
    verdicts: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        start = {"type": "websocket.http.response.start", "status": 401, "headers": []}
        try:
            with trio.testing.assert_checkpoints():
                await send(start)
        except AssertionError:
            verdicts.append("no checkpoint")
        await send({"type": "websocket.http.response.body", "body": b"no"})

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await serve(session_for(transport), app, nursery)
    assert verdicts == []


async def test_a_poll_gets_what_is_queued_and_the_end_once() -> None:
    """A receive() from an already-cancelled scope answers with what is at hand, never hangs."""
    transport = ScriptedTransport(text("a"), WebSocketDisconnected(1000, ""))
    polled: list[Any] = []

    async def poller(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep(READ_AHEAD_DELAY * 3)  # the connection task read both meanwhile
        for _ in range(3):
            with trio.CancelScope() as poll:
                poll.cancel()
                polled.append(await receive())
            if poll.cancelled_caught:
                polled.append("cancelled")

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await serve(session_for(transport), poller, nursery)
    assert polled == [
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.disconnect", "code": 1000, "reason": ""},
        "cancelled",
    ]


async def test_every_message_is_a_fresh_dict() -> None:
    transport = ScriptedTransport(WebSocketDisconnected(1000, ""))
    messages: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        connect = await receive()
        connect["mutated"] = True
        await send({"type": "websocket.accept"})
        messages.extend([connect, await receive(), await receive()])

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            await serve(session_for(transport), app, nursery)
    second = ScriptedTransport()
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:

            async def fresh(scope: dict[str, Any], receive: Any, send: Any) -> None:
                messages.append(await receive())
                await send({"type": "websocket.close"})

            await serve(session_for(second), fresh, nursery)
    connect, end, again, other_connect = messages
    assert connect == {"type": "websocket.connect", "mutated": True}
    assert other_connect == {"type": "websocket.connect"}
    assert end == again
    assert end is not again


async def test_the_session_leaves_connection_close_to_the_transport() -> None:
    """``connection: close`` is HTTP/1.1's to add; HTTP/2 and HTTP/3 forbid the field."""
    heads: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    for answer in ("deny", "forbid", "fail"):
        transport = ScriptedTransport()

        async def app(scope: dict[str, Any], receive: Any, send: Any, answer: str = answer) -> None:
            await receive()
            if answer == "deny":
                headers = [(b"x-why", b"because")]
                start = {"type": "websocket.http.response.start", "status": 401}
                await send({**start, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": b"no"})
            elif answer == "forbid":
                await send({"type": "websocket.close"})
            else:
                raise RuntimeError("boom")

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                await serve(session_for(transport), app, nursery)
        heads.extend(transport.heads)
    assert [status for status, _ in heads] == [401, 403, 500]
    for _, headers in heads:
        assert [name for name, _ in headers if name == b"connection"] == []
