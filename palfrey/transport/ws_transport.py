"""What a WebSocket does the same over an HTTP/1.1 socket and an HTTP/2 stream.

The WebSocket's own life does not depend on what carries its frames: the
keepalive pings and their deadline, the closing handshake and the time the
peer gets to answer it, the rule that a write cut short ends the WebSocket,
and the reads that :class:`~palfrey.transport.ws_reader.MessageReader` asks
for. :class:`WebSocketBase` holds all of that once; a subclass brings only
the carrier: how a chunk is read (``_receive_chunk``), how bytes are written
(``_write``), how the handshake is answered and how the end is signalled.

Timers are deadlines on the read's cancel scope, not tasks: the next ping,
the pong deadline and the end of the closing handshake. They only run while
some task is reading, so an app that is slow to take its messages (nobody
reading, pongs unread) is not mistaken for a dead peer.

All writes go through one lock, and each writes exactly the bytes
:class:`~palfrey.protocols.ws.WSProtocol` produced up to then. Each writer
checks for cancellation before it makes its frame, so a cancelled ``send()``
that wrote nothing leaves the WebSocket usable.

The hot path (one message in, one out) stays as short as it was in each
transport: ``read`` awaits the carrier's own receive directly (a bound
method, or a :func:`functools.partial` of one), with no wrapper coroutine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.websocket import WebSocketSession, websocket_scope
from palfrey.protocols.events import WebSocketDisconnected, WebSocketEvent
from palfrey.protocols.ws import ABNORMAL_CLOSURE, INTERNAL_ERROR, NORMAL_CLOSURE, WSProtocol
from palfrey.transport.ws_reader import MessageReader

if TYPE_CHECKING:
    from palfrey.asgi.headers import DefaultHeaders
    from palfrey.config.schema import Config
    from palfrey.observability.metrics import Metrics

logger = logging.getLogger("palfrey.error")

#: How long the peer gets to answer our close frame, or to stop sending after a failure.
CLOSE_HANDSHAKE_TIMEOUT = 5.0
_LOST = WebSocketDisconnected(ABNORMAL_CLOSURE, "")


class WebSocketBase:
    """The carrier-free part of a :class:`~palfrey.asgi.websocket.WebSocketTransport`.

    It is also the reader's :class:`~palfrey.transport.ws_reader.EventSource`:
    ``read`` is one chunk from the carrier under the timers' deadline.
    Subclasses provide ``accept``, ``send_head``, ``send_body``, ``release``
    and ``_write``.
    """

    __slots__ = (
        "_accepted",
        "_answered",
        "_close_deadline",
        "_left_at",
        "_lost",
        "_next_ping",
        "_nursery",
        "_ping_interval",
        "_ping_timeout",
        "_pong_deadline",
        "_read_scope",
        "_receive_chunk",
        "_writing",
        "protocol",
        "reader",
        "receive_message",
    )

    def __init__(
        self,
        protocol: WSProtocol,
        receive_chunk: Callable[[], Awaitable[bytes | None]],
        config: Config,
    ) -> None:
        self.protocol = protocol
        #: The next chunk from the carrier: ``b""`` once the peer ended its side, None
        #: once the carrier is gone. It may raise trio's Broken/ClosedResourceError.
        self._receive_chunk = receive_chunk
        self.reader = MessageReader(self, config.ws_max_queue)
        #: The session awaits the reader's method itself, without a wrapper around it.
        self.receive_message = self.reader.receive_message
        self._ping_interval = config.ws_ping_interval or None
        self._ping_timeout = config.ws_ping_timeout or None
        self._writing = WriteTurn()
        #: The handshake is answered (accepted, refused, or the app gave up on it).
        self._answered = trio.Event()
        self._accepted = False
        self._next_ping = math.inf
        self._pong_deadline = math.inf
        self._close_deadline = math.inf
        self._read_scope: trio.CancelScope | None = None
        self._left_at: float | None = None
        #: The carrier takes nothing more: lost, torn by a write cut short, or the
        #: peer stopped answering.
        self._lost = False
        self._nursery: trio.Nursery | None = None

    def session(
        self, scope: dict[str, Any], defaults: DefaultHeaders, metrics: Metrics | None
    ) -> WebSocketSession:
        """The session that runs the app, with this WebSocket as its transport."""
        return WebSocketSession(
            scope=websocket_scope(scope, self.protocol.subprotocols),
            transport=self,
            defaults=defaults,
            metrics=metrics,
        )

    async def _write(self, data: bytes) -> None:
        """Hand ``data`` to the carrier whole, or give the carrier up; call with the lock held."""
        raise NotImplementedError

    # Messages and the closing handshake.

    async def send_message(self, data: bytes | str) -> None:
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            protocol = self.protocol
            if not protocol.open:
                await trio.lowlevel.cancel_shielded_checkpoint()
                raise ClientDisconnected("the WebSocket is closed")
            protocol.send_message(data)
            await self._write(protocol.data_to_send())

    async def close(self, code: int, reason: str) -> None:
        self.reader.stop(WebSocketDisconnected(code, reason))
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            protocol = self.protocol
            if not protocol.open:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            protocol.close(code, reason)
            self._close_deadline = trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
            if self._read_scope is not None:
                self._read_scope.deadline = min(self._read_scope.deadline, self._close_deadline)
            await self._write(protocol.data_to_send())

    def close_soon(self, code: int, reason: str) -> None:
        self.reader.stop(WebSocketDisconnected(code, reason))
        if self._nursery is not None:
            self._nursery.start_soon(self._close_quietly, code, reason)

    def app_finished(self) -> None:
        self._answered.set()
        self.reader.finish()
        if self._accepted and self.protocol.open and not self._lost:
            # The app's close was cancelled before it was written: nobody else will
            # close, and a peer that answers pings would keep the connection forever.
            self.close_soon(NORMAL_CLOSURE, "")

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            await self.close(code, reason)
        except ClientDisconnected:
            logger.debug("WebSocket client gone before close %d could be sent", code)

    # The connection's (or stream's) task.

    async def run(self) -> None:
        """Wait for the app to answer the handshake; if it accepted, read until the end.

        The nursery holds a close the server asked for (shutdown), written
        beside the reads; it is moot, and cancelled, once the WebSocket is over.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._answered.wait()
                if self._accepted:
                    await self.reader.run()
            finally:
                self._nursery = None
            nursery.cancel_scope.cancel()

    # The reader's EventSource.

    async def read(self) -> list[WebSocketEvent]:
        protocol = self.protocol
        if self._lost:
            return protocol.receive_data(b"")
        if self._left_at is not None:
            # The time nobody was reading (the app busy, its queue full) does not count
            # against the peer.
            self._pong_deadline += trio.current_time() - self._left_at
        try:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._read_scope = scope
                try:
                    data = await self._receive_chunk()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                finally:
                    self._read_scope = None
            if scope.cancelled_caught:
                return await self._on_timer()
            if data is None:
                # The peer reset the stream, or the connection is gone.
                self._lost = True
                data = b""
            # ``b""`` (the peer's EOF, or END_STREAM: RFC 8441 §4's TCP FIN) ends it
            # with 1006 unless the peer's close frame came first.
            events = protocol.receive_data(data)
            if protocol.wants_write and not protocol.failed:
                await self._flush()
            return events
        finally:
            # Pings are sent only while reading, so only an unanswered one needs the time.
            self._left_at = trio.current_time() if protocol.awaiting_pong else None

    def interrupt(self) -> None:
        if self._read_scope is not None:
            self._read_scope.cancel()

    def _deadline(self) -> float:
        protocol = self.protocol
        deadline = self._close_deadline
        if protocol.awaiting_pong:
            deadline = min(deadline, self._pong_deadline)
        elif protocol.open:
            deadline = min(deadline, self._next_ping)
        return deadline

    async def _on_timer(self) -> list[WebSocketEvent]:
        """The read's scope was cancelled: a timer fell due, a write failed, or an interrupt."""
        protocol = self.protocol
        now = trio.current_time()
        if self._lost or now >= self._close_deadline:
            # The peer never answered our close frame, or the carrier broke: give up (1006).
            self._lost = True
            return protocol.receive_data(b"")
        if protocol.awaiting_pong and now >= self._pong_deadline:
            logger.debug("WebSocket keepalive ping timed out; closing with 1011")
            events = protocol.fail(INTERNAL_ERROR, "keepalive ping timeout")
            await self._flush()
            self._lost = True
            return events
        if now >= self._next_ping:
            assert self._ping_interval is not None
            self._next_ping = now + self._ping_interval
            if protocol.open:
                protocol.send_ping()
                if self._ping_timeout is not None:
                    self._pong_deadline = now + self._ping_timeout
                await self._flush()
        return []

    async def _flush(self) -> None:
        """Write what the protocol produced on its own (pongs, pings, the close echo).

        This often runs in the app's task (it reads inline), whose own cancel
        scopes must not drop bytes the protocol has already handed over: the
        write is shielded, under a deadline of its own. A peer that takes
        nothing for that long (reads nothing, or keeps its window shut) is
        given up on.
        """
        if not self.protocol.wants_write:
            return
        with trio.CancelScope(
            shield=True, deadline=trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
        ) as scope:
            async with self._writing:
                data = self.protocol.data_to_send()
                if data:
                    try:
                        await self._write(data)
                    except ClientDisconnected:
                        return
        if scope.cancelled_caught:
            self._lose()

    def _lose(self) -> None:
        """Nothing more may be written: end the WebSocket for the app and the reader now.

        The reader may be paused behind a full queue, or the app blocked on
        this very write: both must learn at once, or the connection (and its
        concurrency slot) would wait for a peer that is gone.
        """
        if self._lost:
            return
        self._lost = True
        self._answered.set()
        if self._read_scope is not None:
            self._read_scope.cancel()
        if not self.protocol.disconnected:
            # Otherwise the events on their way to the reader already end it, with their code.
            self.reader.stop(_LOST)


class WriteTurn:
    """Writers to the carrier take turns, through a :class:`trio.Lock` taken without a yield.

    ``async with lock`` yields to the scheduler even when the lock is free, a
    second scheduler pass per echoed message; ``acquire_nowait`` does not, and
    the writer's own cancellation check and write are the checkpoint.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
