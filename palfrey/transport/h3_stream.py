"""One HTTP/3 request: the :class:`~palfrey.asgi.http.HTTPStream` of a QUIC stream.

Like :class:`~palfrey.transport.h2_stream.H2Stream`, the stream only *queues*
frames in the connection's :class:`~palfrey.protocols.h3.H3Protocol`; the
connection task sends the datagrams. Back-pressure, every buffer bounded:

- request bodies: the flow-control window moves on only as the app consumes
  the body (:meth:`H3Protocol.acknowledge`), so a stream buffers at most
  ``--h3-receive-window`` bytes;
- responses: aioquic buffers what it is given until the peer acknowledges it,
  so a send waits while more than :data:`SEND_HIGH_WATER` bytes of this
  stream are unacknowledged, at most ``--timeout-send`` (then the stream is
  reset): a client that stops reading holds at most that much per stream.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.messages import plain_text_headers
from palfrey.protocols.events import ProtocolError
from palfrey.protocols.h3 import ErrorCode, StreamClosed
from palfrey.protocols.status import reason_phrase

if TYPE_CHECKING:
    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.quic import QuicConnectionTask

#: Unacknowledged response bytes of one stream beyond which its sends wait.
SEND_HIGH_WATER = 256 * 1024


class H3Stream:
    """One request on an HTTP/3 connection, served by :class:`~palfrey.asgi.http.HTTPCycle`."""

    __slots__ = (
        "_body_wait",
        "_gone_event",
        "_head_only",
        "_received",
        "chunks",
        "complete",
        "connection",
        "ended",
        "gone",
        "head_sent",
        "pending_error",
        "stream_id",
        "supports_early_hints",
        "supports_trailers",
    )

    def __init__(self, connection: QuicConnectionTask, request: RequestReceived) -> None:
        self.connection = connection
        self.stream_id = request.stream_id
        self.chunks: deque[bytes] = deque()
        #: The client finished its side: the request body is complete.
        self.ended = False
        self._received = 0
        self._body_wait: trio.Event | None = None
        self._gone_event: trio.Event | None = None
        self._head_only = request.method == b"HEAD"
        #: The stream takes no more frames: reset or stopped by the peer, or the connection ended.
        self.gone = False
        self.head_sent = False
        #: The response went out whole (FIN queued).
        self.complete = False
        self.pending_error: ProtocolError | None = None
        self.supports_trailers = True
        self.supports_early_hints = True

    # Called by the connection task.

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        limit = self.connection.state.config.limit_request_body
        if limit is not None and self._received > limit:
            if self.pending_error is None:
                self.pending_error = ProtocolError("Request body too large", 413)
                self._wake_body()
            # Not buffered: nobody will read it.
            self.connection.protocol.acknowledge(self.stream_id, len(data))
            return
        self.chunks.append(data)
        self._wake_body()

    def request_ended(self) -> None:
        self.ended = True
        self._wake_body()

    def lost(self) -> None:
        self.gone = True
        if self._gone_event is not None:
            self._gone_event.set()
        self._wake_body()

    def _wake_body(self) -> None:
        if self._body_wait is not None:
            self._body_wait.set()

    # HTTPStream.

    async def receive_body(self) -> tuple[bytes, bool] | None:
        chunks = self.chunks
        while True:
            if self.gone or self.pending_error is not None:
                await trio.lowlevel.checkpoint()
                return None
            if chunks:
                # Checkpoint first, so a cancel loses no chunk.
                await trio.lowlevel.checkpoint()
                data = chunks.popleft()
                connection = self.connection
                connection.protocol.acknowledge(self.stream_id, len(data))
                connection.kick()
                return data, bool(chunks) or not self.ended
            if self.ended:
                await trio.lowlevel.checkpoint()
                return b"", False
            self._body_wait = wait = trio.Event()
            with trio.move_on_after(self.connection.state.config.timeout_request_body):
                await wait.wait()
                continue
            # RFC 9110 §15.5.9; sent only if the response has not started.
            self.pending_error = ProtocolError("Timed out reading the request body", 408)

    async def wait_disconnected(self) -> None:
        if self.gone:
            await trio.lowlevel.checkpoint()
            return
        if self._gone_event is None:
            self._gone_event = trio.Event()
        await self._gone_event.wait()

    async def refuse(self) -> None:
        await self.send_error(503)

    async def send_error(self, status: int) -> None:
        body = reason_phrase(status)
        headers = plain_text_headers(self.connection.state.defaults, body)
        try:
            await self.send_head(status, headers, body, True)
        except ClientDisconnected:
            return

    async def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._queue(self.connection.protocol.send_informational, status, headers)
        await self._after_write()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        if self._head_only or status in (204, 304):
            body = b""
        self.head_sent = True
        protocol = self.connection.protocol
        self._queue(protocol.send_headers, status, headers, end and not body)
        if body:
            self._queue(protocol.send_data, body, end)
        if end:
            self.complete = True
        await self._after_write()

    async def send_body(self, body: bytes, end: bool) -> None:
        if self._head_only:
            body = b""
        if body or end:
            self._queue(self.connection.protocol.send_data, body, end)
            if end:
                self.complete = True
            await self._after_write()
        else:
            await trio.lowlevel.checkpoint()

    async def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._queue(self.connection.protocol.send_trailers, headers)
        self.complete = True
        await self._after_write()

    # Writing.

    def _queue(self, method: Any, *args: Any) -> None:
        if self.gone or not self.connection.writable:
            raise ClientDisconnected("the stream was reset or the connection lost")
        try:
            method(self.stream_id, *args)
        except StreamClosed:
            self.lost()
            raise ClientDisconnected("the stream was reset") from None
        self.connection.kick()

    async def _after_write(self) -> None:
        """The send's checkpoint; it waits while the client has too much unacknowledged."""
        connection = self.connection
        if connection.protocol.unsent_size(self.stream_id) <= SEND_HIGH_WATER:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(connection.state.config.timeout_send):
            while connection.protocol.unsent_size(self.stream_id) > SEND_HIGH_WATER:
                await connection.wait_for_progress()
                if self.gone or not connection.writable:
                    raise ClientDisconnected("the stream was reset or the connection lost")
            return
        self.reset(ErrorCode.H3_REQUEST_CANCELLED)
        raise ClientDisconnected("the client did not read the response within --timeout-send")

    def reset(self, error_code: int = ErrorCode.H3_REQUEST_CANCELLED) -> None:
        """Abort the stream both ways now; it takes no more frames."""
        if self.gone:
            return
        self.connection.protocol.reset(self.stream_id, error_code)
        self.connection.kick()
        self.lost()
