"""Who reads an HTTP/1.1 WebSocket, and how far ahead of the application.

Over HTTP/1.1 the only back-pressure is TCP's: bytes left in the socket fill
the kernel's buffers and stall the client's writes. So messages are read
ahead only while fewer than ``max_queue`` wait for the app, and the app reads
inline only when none wait, so a slow app stops the socket reads and TCP
pushes back on the client (the advice wsproto gives for its sans-I/O
connection). An HTTP/2 stream (RFC 8441) has a flow-control window instead and
needs none of this; the ASGI session above never sees the difference.

Reading takes one of two paths. When the app asks for a message with nothing
queued and nobody reading, the app task reads the socket itself: no hand-off
between tasks, so an echo costs one task switch per message instead of two.
When no app task has finished such a read, or taken a queued message, for
:data:`READ_AHEAD_DELAY` (the app is busy, only sends, or polls under a
timeout that expires first), the connection task reads for it instead, so
pings are answered and a peer's close or lost connection is noticed; it hands
reading back as soon as it has given a message to an app that was waiting for
it. Only one task reads at a time.

The end of the WebSocket is a state, not a queued message: it never waits
for room in the queue and always comes after the messages received before it.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Protocol

import attrs
import trio

from palfrey.protocols.events import WebSocketDataReceived, WebSocketDisconnected, WebSocketEvent
from palfrey.protocols.ws import ABNORMAL_CLOSURE

#: How long the app may stay away from ``receive()`` before the connection task reads for it.
#: An app that echoes comes back within microseconds and keeps reading inline; one that
#: only sends, or is busy, still has pings answered and a peer's close noticed this soon.
READ_AHEAD_DELAY = 0.05


class EventSource(Protocol):
    """The socket side: one read at a time, from whichever task the reader lets read."""

    async def read(self) -> list[WebSocketEvent]:
        """Read the socket once (or act on a timer that fell due); the events it produced.

        Often none (part of a frame, a ping answered); a :class:`WebSocketDisconnected`
        is the last event ever returned.
        """
        ...

    def interrupt(self) -> None:
        """Make a ``read`` in progress return soon; unread bytes stay in the socket."""
        ...


class Inbound(enum.Enum):
    """What becomes of the messages read."""

    #: They wait for the app; read-ahead stops while ``max_queue`` of them do.
    OPEN = "open"
    #: The app will take only what is queued, then the end: we closed, the app
    #: finished or the connection broke. Reading goes on, without waiting for
    #: room, and drops what arrives, until the peer's close or the loss ends it.
    CLOSING = "closing"
    #: The peer's close, a protocol failure or the loss was read: nothing more will be.
    ENDED = "ended"


class Reader(enum.Enum):
    """Who is inside ``source.read()`` right now."""

    NOBODY = "nobody"
    APP = "app"
    CONNECTION = "connection"


_FINISHED = WebSocketDisconnected(ABNORMAL_CLOSURE, "")
# The members read on every message, as module globals: looking a member up on its
# Enum class costs several times as much, a few times per message.
_NOBODY = Reader.NOBODY
_APP = Reader.APP
_OPEN = Inbound.OPEN


@attrs.define(slots=True, eq=False)
class MessageReader:
    """The bounded queue between one WebSocket's socket and its app, and who fills it."""

    source: EventSource
    max_queue: int = 32
    inbound: Inbound = _OPEN
    #: Most messages that waited for the app at once (back-pressure is observable in tests).
    #: One read can overshoot ``max_queue`` by the messages it held.
    queue_high_water: int = 0
    _queue: deque[WebSocketDataReceived] = attrs.Factory(deque)
    #: What the app gets once the queue is empty, from ``CLOSING`` on.
    _end: WebSocketDisconnected | None = None
    _reader: Reader = _NOBODY
    #: App tasks waiting for the task that reads to deliver a message.
    _app_waiting: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    #: The connection task, while it pauses.
    _paused: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    #: The pause's scope; an inline read that ends arms its deadline.
    _pause_scope: trio.CancelScope | None = None
    #: When an app task last finished reading the socket itself or took a queued message.
    _app_read_at: float = 0.0

    async def receive_message(self) -> WebSocketDataReceived | WebSocketDisconnected:
        """The next message for the app, or the end once every message before it was taken.

        A checkpoint in every case: a message or the end that is at hand
        without reading is taken after one, so that a cancellation loses
        nothing and an app looping here lets other tasks run. One kind of
        caller is answered instead of cancelled: a poll, made from a scope
        cancelled before the call (``move_on_after(0)``), gets what is at
        hand after a yield, as the HTTP bridge answers Starlette's disconnect
        polls. Each such answer takes a message, and the session asks for the
        end only once, so a polling loop still ends at a cancellation.
        """
        queue = self._queue
        while True:
            if queue or self._end is not None:
                if trio.current_effective_deadline() == -math.inf:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                else:
                    await trio.lowlevel.checkpoint()
                if queue:
                    # An app taking queued messages is not away: the queue runs dry,
                    # and then it reads inline again.
                    self._app_read_at = trio.current_time()
                    return self._pop()
                if self._end is not None:
                    return self._end
                continue
            if self._reader is _NOBODY:
                message = await self._read_inline()
                if message is not None:
                    return message
            else:
                await self._app_waiting.park()

    def received(self, events: list[WebSocketEvent]) -> None:
        """Take in events the source produced (also outside a read: the handshake's trailing
        bytes); ``WebSocketConnected`` is the session's business and is skipped."""
        queue = self._queue
        for event in events:
            if type(event) is WebSocketDataReceived:
                if self.inbound is _OPEN:
                    queue.append(event)
            elif type(event) is WebSocketDisconnected:
                self._ended(event)
        self.queue_high_water = max(self.queue_high_water, len(queue))

    def stop(self, end: WebSocketDisconnected) -> None:
        """Deliver what is queued, then ``end`` at once; read on only to finish the connection."""
        if self.inbound is not _OPEN:
            return
        self.inbound = Inbound.CLOSING
        self._end = end
        if self._reader is _APP:
            self.source.interrupt()
        self._wake_all()

    def finish(self) -> None:
        """The app returned: nobody will take a message again, so none is kept."""
        self._queue.clear()
        self.stop(_FINISHED)

    async def run(self) -> None:
        """The connection task: read for the app while it is away, until the WebSocket ends.

        Once nothing more goes to the app (``CLOSING``) this task reads
        whatever the app does and never waits for room, so the closing
        handshake completes and a lost connection is noticed.
        """
        queue = self._queue
        source = self.source
        self._app_read_at = trio.current_time()
        while self.inbound is not Inbound.ENDED:
            if self._reader is not _NOBODY or (
                self.inbound is _OPEN
                and (
                    len(queue) >= self.max_queue
                    or trio.current_time() < self._app_read_at + READ_AHEAD_DELAY
                )
            ):
                await self._pause()
                continue
            self._reader = Reader.CONNECTION
            try:
                events = await source.read()
            finally:
                self._reader = _NOBODY
                if self._app_waiting:
                    # An app waiting in receive() takes the message, then reads inline
                    # again: give reading back to it.
                    self._app_waiting.unpark_all()
                    self._app_read_at = trio.current_time()
            self.received(events)

    async def _read_inline(self) -> WebSocketDataReceived | None:
        """Read in the app's task; None if that read gave the app nothing (yet)."""
        self._reader = _APP
        try:
            events = await self.source.read()
            # Only a read that finished counts: an app whose receive() is cancelled
            # before it reads (a poll under ``move_on_after(0)``) is not reading.
            self._app_read_at = trio.current_time()
        finally:
            self._reader = _NOBODY
            if self._app_waiting:
                self._app_waiting.unpark_all()
            scope = self._pause_scope
            if scope is not None and scope.deadline == math.inf:
                # Nobody reads now: the connection task takes over unless the app comes back.
                scope.deadline = self._app_read_at + READ_AHEAD_DELAY
        if len(events) == 1 and type(events[0]) is WebSocketDataReceived and self.inbound is _OPEN:
            return events[0]  # the usual case, one message per read, straight to the app
        self.received(events)
        return self._pop() if self._queue else None

    def _pop(self) -> WebSocketDataReceived:
        queue = self._queue
        message = queue.popleft()
        if len(queue) == self.max_queue - 1:
            self._paused.unpark_all()  # there is room again
        return message

    def _ended(self, event: WebSocketDisconnected) -> None:
        self.inbound = Inbound.ENDED
        if self._end is None:
            self._end = event
        self._wake_all()

    def _wake_all(self) -> None:
        self._app_waiting.unpark_all()
        self._paused.unpark_all()

    async def _pause(self) -> None:
        """Wait until reading may be this task's turn.

        Without a deadline while someone reads or the queue is full: the end
        of an inline read, room in the queue and the end of delivery wake
        this task. Otherwise it wakes once the app has neither finished a read
        of its own nor taken a queued message for :data:`READ_AHEAD_DELAY`.
        """
        deadline = math.inf
        if self._reader is _NOBODY and self.inbound is _OPEN and len(self._queue) < self.max_queue:
            deadline = self._app_read_at + READ_AHEAD_DELAY
        with trio.CancelScope(deadline=deadline) as scope:
            self._pause_scope = scope
            try:
                await self._paused.park()
            finally:
                self._pause_scope = None
