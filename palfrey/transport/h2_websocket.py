"""WebSocket over an HTTP/2 stream (RFC 8441): the trio glue between a stream and WSProtocol.

An extended CONNECT (``:method CONNECT``, ``:protocol websocket``) is a
request on a stream of its own; :class:`~palfrey.transport.http2.H2Connection`
hands it to :func:`h2_websocket` through ``serve_request``'s upgrade hook.
The handshake is checked as RFC 8441 §5 says (``Sec-WebSocket-Version: 13``,
no key), the same :class:`~palfrey.asgi.websocket.WebSocketSession` as over
HTTP/1.1 runs the app, and :class:`H2WebSocket` is its transport: the
handshake is answered with ``:status 200`` (no ``Upgrade``, no accept token),
and from then on the stream's DATA carries the WebSocket frames, both ways.

Differences from HTTP/1.1 (:mod:`palfrey.transport.websocket`):

- back-pressure is the stream's flow-control window: a chunk is handed back
  to the window as it is read, and reading follows the same
  :class:`~palfrey.transport.ws_reader.MessageReader` rules (read inline by
  the app, read ahead by the stream's task while at most ``--ws-max-queue``
  messages wait), so a slow app leaves the window shut and the peer stops;
- writes go through the stream's flow-controlled send path and the
  connection's single writer. Each takes exactly the bytes WSProtocol produced
  up to then, under one lock; a write cut short after part of a frame was
  queued resets the stream (RST_STREAM CANCEL), since the rest would never
  follow, and the WebSocket ends (1006 for the app);
- the end is the stream's: after the closing handshake (or our failure's
  close frame) END_STREAM, when the peer is gone or stopped answering
  RST_STREAM CANCEL. Nothing lingers: frames on one stream stay in order, and
  other streams are untouched;
- the server's shutdown closes with 1012 as over HTTP/1.1 (the connection
  itself sends GOAWAY).

Timers are deadlines on the read's cancel scope, as over HTTP/1.1: the next
ping, the pong deadline and the end of the closing handshake.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.http import Outcome
from palfrey.asgi.messages import plain_text_headers
from palfrey.asgi.websocket import WebSocketSession, websocket_scope
from palfrey.protocols.events import LocalProtocolError, WebSocketDisconnected, WebSocketEvent
from palfrey.protocols.ws import (
    ABNORMAL_CLOSURE,
    INTERNAL_ERROR,
    NORMAL_CLOSURE,
    HandshakeError,
    WSProtocol,
)
from palfrey.transport.websocket import CLOSE_HANDSHAKE_TIMEOUT, WriteTurn
from palfrey.transport.ws_reader import MessageReader

if TYPE_CHECKING:
    from palfrey.transport.h2_stream import H2Stream

logger = logging.getLogger("palfrey.error")

_LOST = WebSocketDisconnected(ABNORMAL_CLOSURE, "")


async def h2_websocket(stream: H2Stream, scope: dict[str, Any]) -> Outcome | None:
    """Serve an extended CONNECT for ``websocket`` on ``stream``; how the stream ended."""
    state = stream.connection.state
    config = state.config
    # The protocol layer let only an extended CONNECT with ``:protocol websocket`` here.
    try:
        protocol = WSProtocol(
            scope["headers"],
            max_size=config.ws_max_size,
            per_message_deflate=config.ws_per_message_deflate,
            require_key=False,
        )
    except HandshakeError as exc:
        await _refuse(stream, exc)
        return _outcome(stream)
    websocket = H2WebSocket(
        stream,
        protocol,
        ping_interval=config.ws_ping_interval or None,
        ping_timeout=config.ws_ping_timeout or None,
        max_queue=config.ws_max_queue,
    )
    session = WebSocketSession(
        scope=websocket_scope(scope, protocol.subprotocols),
        transport=websocket,
        defaults=state.defaults,
    )
    # The connection says goodbye with GOAWAY; the WebSocket with close 1012.
    stream.on_shutdown = session.shutdown
    if state.stopping:
        session.shutdown()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run_app, state.app)
            try:
                await websocket.run()
            finally:
                await websocket.release()
    finally:
        stream.on_shutdown = None
    return _outcome(stream)


def _outcome(stream: H2Stream) -> Outcome:
    # Anything but a complete response (or a stream already reset) gets RST_STREAM.
    return Outcome.COMPLETED if stream.complete or stream.gone else Outcome.RESET_STREAM


async def _refuse(stream: H2Stream, exc: HandshakeError) -> None:
    """Answer a request that is not a valid handshake; the app never sees it."""
    body = str(exc).encode("utf-8")
    headers = plain_text_headers(stream.connection.state.defaults, body, exc.headers)
    try:
        await stream.send_head(exc.status_code, headers, body, True)
    except ClientDisconnected:
        return


class H2WebSocket:
    """The :class:`~palfrey.asgi.websocket.WebSocketTransport` of an extended CONNECT stream.

    It is also the reader's :class:`~palfrey.transport.ws_reader.EventSource`:
    ``read`` is one chunk of the stream's DATA under the timers' deadline.
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
        "_stream",
        "_writing",
        "protocol",
        "reader",
        "receive_message",
    )

    #: What the handshake's acceptance answers with (RFC 8441 §5).
    accept_status = 200

    def __init__(
        self,
        stream: H2Stream,
        protocol: WSProtocol,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        max_queue: int = 32,
    ) -> None:
        self._stream = stream
        self.protocol = protocol
        self.reader = MessageReader(self, max_queue)
        #: The session awaits the reader's method itself, without a wrapper around it.
        self.receive_message = self.reader.receive_message
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._writing = WriteTurn()
        #: The handshake is answered (accepted, refused, or the app gave up on it).
        self._answered = trio.Event()
        self._accepted = False
        self._next_ping = math.inf
        self._pong_deadline = math.inf
        self._close_deadline = math.inf
        self._read_scope: trio.CancelScope | None = None
        self._left_at: float | None = None
        #: The stream carries nothing more: reset, lost, torn by a write cut short,
        #: or the peer stopped answering.
        self._lost = False
        self._nursery: trio.Nursery | None = None

    # The handshake answers.

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        protocol = self.protocol
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            # RFC 8441 §5: a 2xx answers the extended CONNECT; the HTTP/1.1-only
            # fields (Upgrade, Connection, Sec-WebSocket-Accept) are never made.
            response = protocol.accept(subprotocol, headers)
            self._accepted = True
            self.reader.received(protocol.next_events())
            if self._ping_interval is not None:
                self._next_ping = trio.current_time() + self._ping_interval
            # The head is queued at once; only the checkpoint after it waits. A cancel
            # landing there would make the session answer a second time on a stream
            # already accepted, so from here the accept is done, or the stream is reset.
            with trio.CancelScope(
                shield=True, deadline=trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
            ) as scope:
                try:
                    await self._stream.send_head(200, response, b"", False)
                except ClientDisconnected:
                    self._lose()
                    raise
                finally:
                    self._answered.set()
            if scope.cancelled_caught:
                self._stream.reset()
                self._lose()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        if 200 <= status < 300:
            # RFC 9113 §8.5: a 2xx answer to a CONNECT opens the tunnel; the client would
            # take the body for WebSocket frames. The session makes this the app's error.
            await trio.lowlevel.checkpoint()
            raise LocalProtocolError(
                f"a {status} response accepts a WebSocket over HTTP/2; deny with 3xx-5xx"
            )
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._stream.send_head(status, headers, body, end)
        if end:
            self._answered.set()

    async def send_body(self, body: bytes, end: bool) -> None:
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._stream.send_body(body, end)
        if end:
            self._answered.set()

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
            # close, and a peer that answers pings would keep the stream forever.
            self.close_soon(NORMAL_CLOSURE, "")

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            await self.close(code, reason)
        except ClientDisconnected:
            logger.debug("WebSocket client gone before close %d could be sent", code)

    # The stream's task.

    async def run(self) -> None:
        """Wait for the app to answer the handshake; if it accepted, read until the end.

        The nursery holds a close the server asked for, written beside the
        reads; it is moot, and cancelled, once the WebSocket is over.
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

    async def release(self) -> None:
        """End the stream now that the WebSocket is over, even if the app task still runs.

        After the closing handshake, or our own close frame when we failed the
        WebSocket, END_STREAM (a frame the app's write left unsent goes first);
        RST_STREAM CANCEL when the peer is gone or stopped answering. A refused
        handshake's response is the connection's to finish or reset.
        """
        stream = self._stream
        if not self._accepted or stream.gone or stream.complete:
            return
        if self._lost:
            stream.reset()
            return
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT) as scope:
            async with self._writing:
                if self._lost:
                    stream.reset()
                    return
                try:
                    await stream.send_tunnel(self.protocol.data_to_send(), end=True)
                except ClientDisconnected:
                    return
        if scope.cancelled_caught:
            stream.reset()

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
                    data = await self._stream.receive_tunnel()
                finally:
                    self._read_scope = None
            if scope.cancelled_caught:
                return await self._on_timer()
            if data is None:
                # The peer reset the stream, or the connection is gone.
                self._lost = True
                data = b""
            # ``b""`` (the peer's END_STREAM, RFC 8441 §4's TCP FIN) ends it with 1006
            # unless the peer's close frame came first.
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
            # The peer never answered our close frame, or the stream broke: give up (1006).
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
        write is shielded, under a deadline of its own. A peer that keeps its
        window shut for that long is given up on.
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

    async def _write(self, data: bytes) -> None:
        """Queue ``data`` on the stream whole, or give the stream up; call with the lock held."""
        stream = self._stream
        if self._lost:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise ClientDisconnected("the WebSocket stream was given up")
        try:
            await stream.send_tunnel(data)
        except ClientDisconnected:
            self._lose()
            raise
        except BaseException:
            if stream.gone:
                # Cut short part-way: the stream was reset, nothing more can follow.
                self._lose()
            raise

    def _lose(self) -> None:
        """Nothing more may be written: end the WebSocket for the app and the reader now.

        The reader may be paused behind a full queue, or the app blocked on
        this very write: both must learn at once, or the stream (and its
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
