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

from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.protocols.h3 import ErrorCode, StreamClosed
from palfrey.transport.multiplexed import MultiplexedStream

if TYPE_CHECKING:
    from palfrey.transport.quic import QuicConnectionTask

#: Unacknowledged response bytes of one stream beyond which its sends wait.
SEND_HIGH_WATER = 256 * 1024


class H3Stream(MultiplexedStream):
    """One request on an HTTP/3 connection, served by :class:`~palfrey.asgi.http.HTTPCycle`."""

    __slots__ = ()

    CANCEL = ErrorCode.H3_REQUEST_CANCELLED
    INTERNAL_ERROR = ErrorCode.H3_INTERNAL_ERROR
    #: HTTP/3 has no extended CONNECT here: DATA is always a request body.
    tunnel = False

    connection: QuicConnectionTask

    # HTTPStream.

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
        connection.state.count_timeout("send")
        self.reset()
        raise ClientDisconnected("the client did not read the response within --timeout-send")
