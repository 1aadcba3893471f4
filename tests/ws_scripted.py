"""A scripted WebSocket transport for tests of the session and of the HTTP/1.1 read scheduling.

:class:`ScriptedTransport` is the glue :class:`~palfrey.transport.websocket.H1WebSocket`
puts around a :class:`~palfrey.transport.ws_reader.MessageReader`, with a
:class:`ScriptedSource` in place of the socket: the test is the peer.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.headers import DefaultHeaders
from palfrey.asgi.websocket import WebSocketSession
from palfrey.protocols.events import WebSocketDataReceived, WebSocketDisconnected, WebSocketEvent
from palfrey.transport.ws_reader import Inbound, MessageReader

SCOPE = {"type": "websocket", "raw_path": b"/", "query_string": b"", "client": None}


class ScriptedSource:
    """An EventSource whose peer is the test: ``feed`` queues what the next reads return."""

    def __init__(self, *events: WebSocketEvent) -> None:
        self.events: deque[WebSocketEvent] = deque(events)
        #: The task that read each event, in order.
        self.readers: list[tuple[trio.lowlevel.Task, WebSocketEvent]] = []
        self.interrupted_reads = 0
        self._arrived = trio.lowlevel.ParkingLot()
        self._interrupted = False
        self._busy = False

    def feed(self, *events: WebSocketEvent) -> None:
        self.events.extend(events)
        self._arrived.unpark_all()

    def read_by(self, task: trio.lowlevel.Task) -> list[WebSocketEvent]:
        return [event for reader, event in self.readers if reader is task]

    async def read(self) -> list[WebSocketEvent]:
        assert not self._busy, "two tasks read at once"
        self._busy = True
        try:
            while not self.events:
                if self._interrupted:
                    self.interrupted_reads += 1
                    return []
                await self._arrived.park()
            event = self.events.popleft()
            self.readers.append((trio.lowlevel.current_task(), event))
            return [event]
        finally:
            self._busy = False
            self._interrupted = False

    def interrupt(self) -> None:
        if self._busy:
            self._interrupted = True
            self._arrived.unpark_all()


class ScriptedTransport:
    """The glue H1WebSocket puts around a MessageReader, with the socket writes recorded."""

    accept_status = 101

    def __init__(self, *events: WebSocketEvent, max_queue: int = 32) -> None:
        self.source = ScriptedSource(*events)
        self.reader = MessageReader(self.source, max_queue)
        self.receive_message = self.reader.receive_message
        self.sent: list[bytes | str] = []
        self.closes: list[int] = []
        self.heads: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        self._answered = trio.Event()
        self._accepted = False

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        await trio.lowlevel.checkpoint()
        self._accepted = True
        self._answered.set()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.heads.append((status, headers))
        if end:
            self._answered.set()

    async def send_body(self, body: bytes, end: bool) -> None:
        await trio.lowlevel.checkpoint()
        if end:
            self._answered.set()

    async def send_message(self, data: bytes | str) -> None:
        await trio.lowlevel.checkpoint()
        if self.reader.inbound is not Inbound.OPEN:
            raise ClientDisconnected("closed")
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.reader.stop(WebSocketDisconnected(code, reason))
        await trio.lowlevel.checkpoint()
        self.closes.append(code)

    def close_soon(self, code: int, reason: str) -> None:
        self.reader.stop(WebSocketDisconnected(code, reason))
        self.closes.append(code)

    def app_finished(self) -> None:
        self._answered.set()
        self.reader.finish()

    async def run(self) -> None:
        await self._answered.wait()
        if self._accepted:
            await self.reader.run()


def session_for(transport: ScriptedTransport) -> WebSocketSession:
    return WebSocketSession(scope=dict(SCOPE), transport=transport, defaults=DefaultHeaders())


async def serve(session: WebSocketSession, app: Any, nursery: trio.Nursery) -> None:
    """What websocket_upgrade does: the app beside, the connection task reading."""
    nursery.start_soon(session.run_app, app)
    transport = session.transport
    assert isinstance(transport, ScriptedTransport)
    await transport.run()


def text(value: str) -> WebSocketDataReceived:
    return WebSocketDataReceived(value)
