"""One HTTP/2 stream seen from the ASGI bridge: the :class:`~palfrey.asgi.http.HTTPStream`
of one request, and the byte pipe of an extended CONNECT (RFC 8441).

The connection's reader hands a stream what arrives for it (``data_received``,
``ended``, ``window_opened``, ``lost``); the bridge pulls the body and pushes
the response through the ``HTTPStream`` methods. Writing only *queues* frames
in the connection's :class:`~palfrey.protocols.h2.H2Protocol` and wakes its
writer, so a cancelled send never tears a frame: at worst the stream is reset.
Request body is acknowledged (its window handed back) as it is taken, which is
what pushes back on the client; a response waits for the client's window at
most ``--timeout-send``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.protocols.h2 import ErrorCodes, StreamClosed
from palfrey.transport.multiplexed import MultiplexedStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.http2 import H2Connection

#: Bytes queued for the socket beyond which streams and the reader wait for the writer.
OUTPUT_HIGH_WATER = 64 * 1024


class H2Stream(MultiplexedStream):
    """One request on an HTTP/2 connection: the :class:`~palfrey.asgi.http.HTTPStream`
    :class:`~palfrey.asgi.http.HTTPCycle` serves."""

    __slots__ = ("_window_wait", "on_shutdown", "tunnel")

    CANCEL = ErrorCodes.CANCEL
    INTERNAL_ERROR = ErrorCodes.INTERNAL_ERROR

    connection: H2Connection

    def __init__(self, connection: H2Connection, request: RequestReceived) -> None:
        super().__init__(connection, request)
        self._window_wait: trio.Event | None = None
        #: Called when the server starts stopping, for a protocol on the stream
        #: (a WebSocket closes with 1012); requests simply finish.
        self.on_shutdown: Callable[[], None] | None = None
        #: An extended CONNECT (RFC 8441): the DATA is a tunnel's bytes, not a request
        #: body, so the body's limit and read timeout do not apply (see ``receive_tunnel``).
        self.tunnel = request.protocol is not None

    # Called by the connection's reader.

    def window_opened(self) -> None:
        if self._window_wait is not None:
            self._window_wait.set()

    def lost(self) -> None:
        super().lost()
        self.window_opened()

    def unread_size(self) -> int:
        """Body bytes buffered and never consumed, to hand back to the connection window."""
        return sum(len(chunk) for chunk in self.chunks)

    # HTTPStream.

    async def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._check_open()
        self._queued(self.connection.protocol.send_informational, status, headers)
        await self._after_write()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        self._check_open()
        if self._head_only or status in (204, 304):
            body = b""
        self.head_sent = True
        self._queued(
            self.connection.protocol.send_headers,
            status,
            headers,
            end and not body,
            end=end and not body,
        )
        if body:
            await self._send_data(body, end)
        else:
            await self._after_write()

    async def send_body(self, body: bytes, end: bool) -> None:
        if self._head_only:
            body = b""
        if body or end:
            self._check_open()
            await self._send_data(body, end)
        else:
            await trio.lowlevel.checkpoint()

    async def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._check_open()
        self._queued(self.connection.protocol.send_trailers, headers, end=True)
        await self._after_write()

    # Writing.

    def _check_open(self) -> None:
        if self.gone or not self.connection.writable:
            raise ClientDisconnected("the stream was reset or the connection lost")

    def _queued(self, method: Any, *args: Any, end: bool = False) -> None:
        try:
            method(self.stream_id, *args)
        except StreamClosed:
            self.lost()
            raise ClientDisconnected("the stream was reset") from None
        if end:
            self.complete = True
        self.connection.kick()

    async def _send_data(self, body: bytes, end: bool) -> None:
        """Queue ``body`` whole as DATA as the peer's windows allow (then END_STREAM if ``end``).

        A send cut short after part of ``body`` was queued (cancelled, or the
        window kept shut past ``--timeout-send``) resets the stream with
        CANCEL: the rest will never follow. A cancel in the final checkpoint
        leaves ``body`` queued whole and the stream usable.
        """
        connection = self.connection
        protocol = connection.protocol
        view = memoryview(body) if len(body) > 16384 else body
        offset = 0
        total = len(body)
        while True:
            try:
                offset += protocol.send_data(self.stream_id, view[offset:], end)
            except StreamClosed:
                self.lost()
                raise ClientDisconnected("the stream was reset") from None
            connection.kick()
            if offset >= total:
                break
            try:
                await self._wait_for_window()
            except BaseException:
                self.reset(ErrorCodes.CANCEL)
                raise
        if end:
            self.complete = True
        await self._after_write()

    async def _wait_for_window(self) -> None:
        """The peer's window is shut: wait for it to open, at most ``--timeout-send``."""
        self._window_wait = wait = trio.Event()
        with trio.move_on_after(self.connection.state.config.timeout_send):
            await wait.wait()
            self._window_wait = None
            self._check_open()
            return
        self._window_wait = None
        self.connection.state.count_timeout("send")
        self.connection.protocol.reset(self.stream_id, ErrorCodes.CANCEL)
        self.lost()
        raise ClientDisconnected("the client kept its flow-control window shut")

    async def _after_write(self) -> None:
        """The send's checkpoint; it waits while the socket has too much to take."""
        connection = self.connection
        # Output piles up only while the writer is in a send: an idle writer takes
        # everything queued at once, and then the size need not be looked at.
        if connection.sending and connection.protocol.pending_output_size > OUTPUT_HIGH_WATER:
            await connection.wait_for_room()
            self._check_open()
        else:
            await trio.lowlevel.checkpoint()

    # Tunnels: an extended CONNECT's stream (RFC 8441) carries another protocol's bytes.

    async def receive_tunnel(self) -> bytes | None:
        """The next DATA chunk, its window handed back as it is taken (the back-pressure);
        ``b""`` once the peer ended its side, None once the stream is gone.

        Unlike :meth:`receive_body` it waits without a deadline: the tunnel's
        protocol keeps its own timers (WebSocket pings). A cancel loses nothing.
        """
        chunks = self.chunks
        while True:
            if self.gone:
                await trio.lowlevel.checkpoint()
                return None
            if chunks:
                await trio.lowlevel.checkpoint()
                return self._take()
            if self.request_ended:
                await trio.lowlevel.checkpoint()
                return b""
            self._body_wait = wait = trio.Event()
            await wait.wait()

    async def send_tunnel(self, data: bytes, end: bool = False) -> None:
        """Queue ``data`` whole as DATA (see :meth:`_send_data`, which resets the stream
        when a send is cut short: the peer would read the next message as the end of
        this one). Raises :class:`ClientDisconnected` once the stream is gone."""
        self._check_open()
        await self._send_data(data, end)
