"""HTTP/2 on a trio stream: one reader, one writer, a task per stream's app.

The connection task reads and feeds :class:`~palfrey.protocols.h2.H2Protocol`;
each request becomes an :class:`H2Stream` (the :class:`~palfrey.asgi.http.HTTPStream`
of that request) served in the connection's nursery through the same
:func:`~palfrey.transport.streams.serve_request` as HTTP/1.1. Streams only
*queue* frames in the protocol; a single writer task takes what is queued and
sends it, so no two tasks ever write the socket and a stream cancelled
mid-body never tears a frame (the stream is reset; the connection goes on).

Back-pressure, every buffer bounded:

- request bodies: the window is handed back only as the app consumes the
  body, so a stream buffers at most its window and the connection at most
  the connection window;
- responses: a stream sends what the peer's window allows and then waits for
  a WINDOW_UPDATE (at most ``--timeout-send``) without holding up the reader
  or other streams; all streams and the reader stop queuing while more than
  :data:`OUTPUT_HIGH_WATER` bytes wait for the socket, which a client that
  does not read therefore cannot grow (PING and SETTINGS floods included).
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from palfrey.protocols.events import (
    ConnectionTerminated,
    ControlReceived,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from palfrey.protocols.h2 import ErrorCodes, H2ConnectionError, H2Protocol
from palfrey.transport.h2_stream import OUTPUT_HIGH_WATER, H2Stream
from palfrey.transport.h2_websocket import h2_websocket
from palfrey.transport.multiplexed import serve_stream
from palfrey.transport.streams import connection_app

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from palfrey.asgi.http import Outcome
    from palfrey.asgi.scope import Address
    from palfrey.transport.state import ConnectionControl, ServerState

    #: Serves an extended CONNECT (RFC 8441) on a stream; None when it declined.
    StreamUpgrade = Callable[["H2Stream", dict[str, Any]], Awaitable[Outcome | None]]

logger = logging.getLogger("palfrey.error")

RECEIVE_SIZE = 64 * 1024
#: Resets (the peer's RST_STREAM, refused streams) tolerated per interval before the
#: connection is closed with ENHANCE_YOUR_CALM (CVE-2023-44487, "rapid reset").
RESET_LIMIT = 200
#: Frames that carry nothing for a stream (PING, SETTINGS, PRIORITY, empty DATA, tiny
#: WINDOW_UPDATE) tolerated per interval (CVE-2019-9512, -9513, -9518).
CONTROL_FRAME_LIMIT = 1000
#: The interval of both budgets, in seconds.
ABUSE_INTERVAL = 1.0
#: How long a shutting-down connection with no stream waits for the GOAWAY PING's answer.
GOAWAY_GRACE = 1.0


def open_h2_connection(
    transport: trio.abc.Stream,
    state: ServerState,
    control: ConnectionControl,
    *,
    scheme: str,
    client: Address,
    server: Address,
    initial: bytes = b"",
    upgraded: tuple[RequestReceived, bytes] | None = None,
    settings: bytes | None = None,
    tls: dict[str, Any] | None = None,
) -> H2Connection:
    """An HTTP/2 connection; with ``settings`` (the ``HTTP2-Settings`` of an ``Upgrade: h2c``),
    one that starts by answering ``upgraded`` on stream 1."""
    config = state.config
    protocol = H2Protocol(
        max_concurrent_streams=config.h2_max_concurrent_streams,
        max_header_list_size=config.h2_max_header_list_size,
        max_inbound_frame_size=config.h2_max_inbound_frame_size,
        connect_protocol=config.ws != "none",
    )
    if settings is not None:
        protocol.initiate_upgrade(settings)
    return H2Connection(
        transport,
        protocol,
        state,
        control,
        scheme=scheme,
        client=client,
        server=server,
        initial_data=initial,
        upgraded=upgraded,
        stream_upgrade=h2_websocket if config.ws != "none" else None,
        tls=tls,
    )


class H2Connection:
    """Serves every stream of one HTTP/2 connection until it must close."""

    __slots__ = (
        "_budget_start",
        "_control_frames",
        "_finished",
        "_flushed",
        "_initial_data",
        "_output_ready",
        "_resets",
        "_room",
        "_served_any",
        "_streams",
        "_upgraded",
        "app",
        "client",
        "control",
        "linger",
        "nursery",
        "protocol",
        "proxy",
        "scheme",
        "sending",
        "server",
        "state",
        "stream_upgrade",
        "tls",
        "transport",
        "writable",
    )

    def __init__(
        self,
        transport: trio.abc.Stream,
        protocol: H2Protocol,
        state: ServerState,
        control: ConnectionControl,
        *,
        scheme: str,
        client: Address,
        server: Address,
        initial_data: bytes = b"",
        upgraded: tuple[RequestReceived, bytes] | None = None,
        stream_upgrade: StreamUpgrade | None = None,
        tls: dict[str, Any] | None = None,
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        self.state = state
        self.control = control
        control.protocol = "h2"
        self.scheme = scheme
        self.client = client
        self.server = server
        #: The connection's ``tls`` scope extension (TLS only), shared by its streams.
        self.tls = tls
        self.app, self.proxy = connection_app(state, client)
        self.stream_upgrade = stream_upgrade
        self.nursery: trio.Nursery | None = None
        #: Close gently (half-close, then drain briefly), so that input still in
        #: flight does not make the kernel reset the connection and destroy the
        #: final GOAWAY before the peer reads it; not when the peer is gone.
        self.linger = True
        #: False once a write failed: the peer is gone or too slow, nothing more is sent.
        self.writable = True
        #: The writer is in the middle of a send (so queued output may be piling up).
        self.sending = False
        self._initial_data = initial_data
        #: The request that arrived as ``Upgrade: h2c`` (served as stream 1) and its body.
        self._upgraded = upgraded
        self._streams: dict[int, H2Stream] = {}
        self._output_ready = trio.Event()
        self._room = trio.Event()
        #: Reading is over: the writer flushes what is queued and stops.
        self._finished = False
        self._flushed = trio.Event()
        self._served_any = False
        self._resets = 0
        self._control_frames = 0
        self._budget_start = 0.0

    async def run(self) -> None:
        """Serve streams until the peer leaves, breaks the protocol, idles out or we stop."""
        control = self.control
        control.on_shutdown = self._on_shutdown
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._write_loop)
                self._budget_start = trio.current_time()
                if self._upgraded is None:
                    self.protocol.initiate()
                else:
                    request, body = self._upgraded
                    self._start_stream(request, body=body)
                self.kick()
                if self.state.stopping:
                    self._on_shutdown()
                failed = await self._read_until_done()
                self._finished = True
                self.kick()
                if failed:
                    # A connection error: the GOAWAY goes out, then every stream ends.
                    with trio.move_on_after(GOAWAY_GRACE):
                        await self._flushed.wait()
                    nursery.cancel_scope.cancel()
        except Exception:
            logger.exception("Unhandled error on an HTTP/2 connection; closing it")
            await self._abort(ErrorCodes.INTERNAL_ERROR)
        finally:
            control.on_shutdown = None
            control.open_streams = 0

    async def _read_until_done(self) -> bool:
        """Read and dispatch until the connection is over; True after a connection error."""
        control = self.control
        while True:
            self._update_deadline()
            # Fresh each time: a scope is entered once, and an ``Upgrade: h2c``
            # arrives here inside HTTP/1.1's.
            control.waiting_scope = trio.CancelScope()
            with control.waiting_scope:
                try:
                    await self._read_loop()
                except H2ConnectionError as exc:
                    logger.debug("HTTP/2 connection error: %s", exc)
                    return True
                finally:
                    control.deadline = math.inf
                return False
            # The wait was cut short: the idle (keep-alive) deadline passed, the
            # shutdown grace for an unanswered GOAWAY PING ran out, or the writer failed.
            if not self.writable:
                return False
            if self._streams:
                # A request arrived in the same scheduler pass: keep serving it.
                continue
            if not self.state.stopping:
                self.state.count_timeout("keep_alive" if self._served_any else "request_head")
            self.protocol.finish_goaway()
            return False

    async def _read_loop(self) -> None:
        protocol = self.protocol
        receive_some = self.transport.receive_some
        data = self._initial_data
        self._initial_data = b""
        while True:
            if data:
                events = protocol.receive_data(data)
                if events:
                    self._dispatch(events)
                if protocol.pending_output_size:
                    self.kick()
            if self._done():
                return
            if protocol.pending_output_size > OUTPUT_HIGH_WATER:
                await self.wait_for_room()
            try:
                data = await receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._lose_peer()
                return

    def _done(self) -> bool:
        """Shutting down (or told to go away), and nothing left in flight."""
        # A graceful GOAWAY waits for its PING's answer (or the grace period) so that
        # requests already on the wire are not lost; the final GOAWAY marks the end.
        return not self._streams and self.protocol.goaway_final

    def _dispatch(self, events: list[Any]) -> None:
        streams = self._streams
        for event in events:
            kind = type(event)
            if kind is StreamData:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.data_received(event.data)
                else:
                    self.protocol.acknowledge(event.stream_id, len(event.data))
            elif kind is RequestReceived:
                self._start_stream(event)
            elif kind is StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.ended()
            elif kind is WindowUpdated:
                if event.stream_id == 0:
                    for stream in streams.values():
                        stream.window_opened()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.window_opened()
            elif kind is StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.lost()
                self._count_reset()
            elif kind is ControlReceived:
                self._count_control_frame()
            elif kind is ConnectionTerminated:
                # The peer is going away: serve what it sent, start nothing new.
                self.protocol.finish_goaway()

    def _start_stream(self, request: RequestReceived, body: bytes | None = None) -> None:
        stream = H2Stream(self, request)
        if body is not None:
            if body:
                stream.chunks.append(body)
            stream.ended()
        self._streams[request.stream_id] = stream
        self.control.open_streams = len(self._streams)
        self.control.deadline = math.inf
        self._served_any = True
        assert self.nursery is not None
        upgrade = None
        if request.protocol is not None and self.stream_upgrade is not None:
            upgrade = partial(self.stream_upgrade, stream)
        self.nursery.start_soon(serve_stream, stream, request, upgrade)

    def stream_finished(self, stream: H2Stream) -> None:
        """The stream's task is over: forget it, hand back the body it never read."""
        stream_id = stream.stream_id
        protocol = self.protocol
        del self._streams[stream_id]
        unread = stream.unread_size()
        protocol.stream_finished(stream_id)
        if unread:
            protocol.acknowledge(stream_id, unread)
        self.kick()
        self.control.open_streams = len(self._streams)
        if not self._streams:
            self._update_deadline()
            if self._done():
                self.control.waiting_scope.cancel()

    def _update_deadline(self) -> None:
        """With no stream open, the connection waits under the idle deadline."""
        if self._streams:
            return
        config = self.state.config
        now = trio.current_time()
        if self.protocol.goaway_sent:
            timeout = GOAWAY_GRACE
        elif self._served_any:
            timeout = config.timeout_keep_alive
        else:
            timeout = config.timeout_request_header
        self.control.deadline = now + timeout

    def _count_reset(self) -> None:
        self._resets += 1
        if self._resets > RESET_LIMIT and not self._budget_renewed():
            self._calm_down("too many stream resets")

    def _count_control_frame(self) -> None:
        self._control_frames += 1
        if self._control_frames > CONTROL_FRAME_LIMIT and not self._budget_renewed():
            self._calm_down("too many control or empty frames")

    def _budget_renewed(self) -> bool:
        """Start a new interval if the current one is over; False while it runs."""
        now = trio.current_time()
        if now - self._budget_start < ABUSE_INTERVAL:
            return False
        self._budget_start = now
        self._resets = self._control_frames = 0
        return True

    def _calm_down(self, reason: str) -> None:
        logger.warning("Closing an HTTP/2 connection from %s: %s", self.client, reason)
        self.protocol.finish_goaway(ErrorCodes.ENHANCE_YOUR_CALM)
        raise H2ConnectionError(reason, ErrorCodes.ENHANCE_YOUR_CALM)

    def _on_shutdown(self) -> None:
        """The server is stopping: GOAWAY now, to idle connections too (RFC 9113 §6.8)."""
        for stream in list(self._streams.values()):
            if stream.on_shutdown is not None:
                stream.on_shutdown()
        self.protocol.begin_goaway()
        self.kick()
        self._update_deadline()

    def _lose_peer(self) -> None:
        self.writable = False
        self.linger = False
        for stream in list(self._streams.values()):
            stream.lost()

    async def _abort(self, error_code: int) -> None:
        """A bug on this connection: tell the peer, briefly, then let the caller close."""
        if not self.writable:
            return
        self.protocol.finish_goaway(error_code)
        with trio.move_on_after(1):
            try:
                await self.transport.send_all(self.protocol.data_to_send())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    # The writer.

    def kick(self) -> None:
        self._output_ready.set()

    async def wait_for_room(self) -> None:
        while self.writable and self.protocol.pending_output_size > OUTPUT_HIGH_WATER:
            await self._room.wait()

    async def _write_loop(self) -> None:
        protocol = self.protocol
        send_all = self.transport.send_all
        try:
            while True:
                self._output_ready = trio.Event()
                data = protocol.data_to_send()
                if data:
                    self.sending = True
                    await send_all(data)
                    self.sending = False
                    continue
                room, self._room = self._room, trio.Event()
                room.set()
                if self._finished:
                    self._flushed.set()
                    return
                await self._output_ready.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._writer_failed()
        except BaseException:
            self._writer_failed()
            raise

    def _writer_failed(self) -> None:
        """Nothing more can be sent: every stream and the reader learn it now."""
        self._lose_peer()
        self._room.set()
        self.control.waiting_scope.cancel()
