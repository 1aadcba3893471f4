"""What a request's stream is on a connection that carries many (HTTP/2, HTTP/3).

Both versions take a request body the same way: the connection's reader hands
a stream its DATA (``data_received``, ``ended``, ``lost``), the stream
buffers it, and the app's reads hand the flow-control window back as they take
it, which is what pushes back on the client. Past ``--limit-request-body`` the
body is no longer buffered and a 413 waits to be sent; a read that waits past
``--timeout-request-body`` leaves a 408. :func:`serve_stream` is the task of
such a stream, from the app to the connection's bookkeeping.

How a response is framed, queued and paced differs by version and stays in
the subclasses (:class:`~palfrey.transport.h2_stream.H2Stream`,
:class:`~palfrey.transport.h3_stream.H3Stream`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.http import Outcome
from palfrey.asgi.messages import plain_text_headers
from palfrey.protocols.events import ProtocolError
from palfrey.protocols.status import reason_phrase
from palfrey.transport.streams import serve_request

if TYPE_CHECKING:
    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.streams import UpgradeHandler


class MultiplexedStream:
    """The request side of one stream on an HTTP/2 or HTTP/3 connection, and how it ends.

    ``connection`` is the version's connection task: it has ``protocol``
    (with ``acknowledge``, ``reset``), ``state``, the attributes of a
    :class:`~palfrey.transport.streams.RequestOrigin`, ``writable``, ``kick()``
    and ``stream_finished(stream)``.
    """

    __slots__ = (
        "_body_wait",
        "_gone_event",
        "_head_only",
        "_received",
        "chunks",
        "complete",
        "connection",
        "gone",
        "head_sent",
        "pending_error",
        "request_ended",
        "stream_id",
        "supports_early_hints",
        "supports_trailers",
    )

    #: The version's error code for a stream the server gives up on (the default of :meth:`reset`).
    CANCEL: ClassVar[int]
    #: The version's error code for a response the app left unfinished.
    INTERNAL_ERROR: ClassVar[int]
    #: An extended CONNECT's tunnel (HTTP/2 only) carries no request body, so no body limit.
    tunnel: bool

    def __init__(self, connection: Any, request: RequestReceived) -> None:
        self.connection = connection
        self.stream_id = request.stream_id
        self.chunks: deque[bytes] = deque()
        #: The client finished its side: the request body is complete.
        self.request_ended = False
        self._received = 0
        self._body_wait: trio.Event | None = None
        #: Made when the app first waits for a disconnect; most streams never do.
        self._gone_event: trio.Event | None = None
        self._head_only = request.method == b"HEAD"
        #: The stream takes no more frames: reset by the peer, or the connection lost.
        self.gone = False
        self.head_sent = False
        #: The response went out whole (its end queued).
        self.complete = False
        self.pending_error: ProtocolError | None = None
        self.supports_trailers = True
        self.supports_early_hints = True

    # Called by the connection's reader.

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        limit = self.connection.state.config.limit_request_body
        if limit is not None and self._received > limit and not self.tunnel:
            if self.pending_error is None:
                self.pending_error = ProtocolError("Request body too large", 413)
                self._wake_body()
            # Not buffered: nobody will read it.
            self.connection.protocol.acknowledge(self.stream_id, len(data))
            return
        self.chunks.append(data)
        self._wake_body()

    def ended(self) -> None:
        self.request_ended = True
        self._wake_body()

    def lost(self) -> None:
        self.gone = True
        if self._gone_event is not None:
            self._gone_event.set()
        self._wake_body()

    def _take(self) -> bytes:
        """The oldest buffered chunk, its window handed back as it leaves the buffer."""
        data = self.chunks.popleft()
        connection = self.connection
        connection.protocol.acknowledge(self.stream_id, len(data))
        connection.kick()
        return data

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
                # The call's checkpoint, taken before the chunk leaves the buffer so
                # that a cancel loses nothing.
                await trio.lowlevel.checkpoint()
                return self._take(), bool(chunks) or not self.request_ended
            if self.request_ended:
                await trio.lowlevel.checkpoint()
                return b"", False
            self._body_wait = wait = trio.Event()
            with trio.move_on_after(self.connection.state.config.timeout_request_body):
                await wait.wait()
                continue
            # RFC 9110 §15.5.9; sent only if the response has not started.
            self.pending_error = ProtocolError("Timed out reading the request body", 408)
            self.connection.state.count_timeout("request_body")

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
        self.connection.state.count_server_response(status)
        body = reason_phrase(status)
        headers = plain_text_headers(self.connection.state.defaults, body)
        try:
            await self.send_head(status, headers, body, True)
        except ClientDisconnected:
            return

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        raise NotImplementedError

    def reset(self, error_code: int | None = None) -> None:
        """Abort the stream now (``error_code``, by default :attr:`CANCEL`); it takes no
        more frames."""
        if self.gone:
            return
        connection = self.connection
        connection.protocol.reset(self.stream_id, self.CANCEL if error_code is None else error_code)
        connection.kick()
        self.lost()


async def serve_stream(
    stream: MultiplexedStream, request: RequestReceived, upgrade: UpgradeHandler | None
) -> None:
    """The task of one stream: serve the request, then answer an error the body left
    (413, 408) or reset a response left unfinished, and always let the connection
    forget the stream."""
    connection = stream.connection
    try:
        outcome = await serve_request(connection.state, request, stream, connection, upgrade)
        if stream.pending_error is not None and not stream.head_sent and not stream.gone:
            await stream.send_error(stream.pending_error.status_code)
        elif outcome is not Outcome.COMPLETED and not stream.complete and not stream.gone:
            # Abandoned, failed after the head, or cut off mid-body (every frame
            # queued is whole, so unlike HTTP/1.1 only the stream is lost).
            connection.protocol.reset(stream.stream_id, stream.INTERNAL_ERROR)
    except ClientDisconnected:
        pass
    finally:
        connection.stream_finished(stream)
