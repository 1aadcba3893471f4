"""HTTP/1.1 on a trio stream: the thin loop between a socket and a ProtocolHandler.

The application runs inline in the connection task (no task per request) and
pulls the request body through ``receive()``: the socket is read only when the
app asks for more, so an unread body pushes back on the client through TCP.
The connection task doubles as the :class:`HTTPStream` for the current
request, which :func:`~palfrey.transport.streams.serve_request` serves; this
module keeps only what is HTTP/1.1's own: keep-alive, pipelining,
``100-continue``, draining an unread body, and answering bad input itself.

Two rules keep the byte stream honest. Reading ahead stops once
:data:`READ_AHEAD_LIMIT` bytes wait unparsed, whatever the app does. And a
write that fails or is cancelled part-way leaves the framing unknown (the
handler has already counted the bytes), so the connection writes nothing
more and closes.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.http import Outcome
from palfrey.asgi.scope import Address
from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    ProtocolEvent,
    RequestReceived,
)
from palfrey.protocols.status import reason_phrase, render_simple_response
from palfrey.transport.rejections import REJECTIONS
from palfrey.transport.request_context import run_in_context
from palfrey.transport.state import FIRST_REQUEST_GRACE
from palfrey.transport.streams import connection_app, serve_request

if TYPE_CHECKING:
    from palfrey.protocols.base import ProtocolHandler
    from palfrey.transport.socket_stream import SocketStream
    from palfrey.transport.state import ConnectionControl, ServerState

logger = logging.getLogger("palfrey.error")

_CLOSE = (b"connection", b"close")
#: ``os.sendfile`` and ``socket.sendmsg`` exist here (not on Windows).
_SENDFILE = hasattr(os, "sendfile")
_SENDMSG = hasattr(socket.socket, "sendmsg")
RECEIVE_SIZE = 64 * 1024
#: From this size on, a body goes out beside its head by one gathering ``sendmsg``
#: rather than copied after it; below it, joining them costs less than gathering.
GATHER_MIN = 16 * 1024
#: Unparsed bytes (pipelined requests) held while the app runs; reading pauses beyond it.
READ_AHEAD_LIMIT = 64 * 1024


class _MustWait(enum.Enum):
    MUST_WAIT = "must wait"


#: What :meth:`H1Connection._next_request` says, when told not to wait, where it would have to.
MUST_WAIT = _MustWait.MUST_WAIT

#: Hands an accepted upgrade (e.g. WebSocket) the connection; returns when it is over.
H1UpgradeHandler = Callable[["H1Connection", RequestReceived, dict[str, Any]], Any]
#: Switches the connection to another protocol before any app sees the request
#: (``Upgrade: h2c``); True once it served the rest of the connection.
H1SwitchHandler = Callable[["H1Connection", RequestReceived], Awaitable[bool]]


class H1Connection:
    """Serves requests on one HTTP/1.1 connection until it must close."""

    __slots__ = (
        "_closing",
        "_events",
        "_first_request",
        "_initial_data",
        "_peer_gone",
        "_response_started",
        "app",
        "client",
        "control",
        "h2c_handler",
        "linger",
        "nursery",
        "pending_error",
        "protocol",
        "proxy",
        "scheme",
        "server",
        "socket_stream",
        "state",
        "stream",
        "supports_early_hints",
        "supports_trailers",
        "tls",
        "upgrade_handler",
        "writable",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: ProtocolHandler,
        state: ServerState,
        control: ConnectionControl,
        *,
        scheme: str,
        client: Address,
        server: Address,
        tls: dict[str, Any] | None = None,
        upgrade_handler: H1UpgradeHandler | None = None,
        h2c_handler: H1SwitchHandler | None = None,
        socket_stream: SocketStream | None = None,
        initial_data: bytes = b"",
    ) -> None:
        self.stream = stream
        #: The socket under ``stream`` (and under TLS), whose scheduling an upgrade tunes.
        self.socket_stream = socket_stream
        self.protocol = protocol
        self.state = state
        self.control = control
        #: Open while an upgraded protocol runs: tasks it starts beside the connection
        #: (a WebSocket's app) live here, inside the connection task.
        self.nursery: trio.Nursery | None = None
        self.scheme = scheme
        self.client = client
        self.server = server
        #: The connection's ``tls`` scope extension (TLS only), shared by its requests.
        self.tls = tls
        self.app, self.proxy = connection_app(state, client)
        self.upgrade_handler = upgrade_handler
        self.h2c_handler = h2c_handler
        #: Bytes read before this object existed (while choosing the protocol).
        self._initial_data = initial_data
        self.pending_error: ProtocolError | None = None
        # A list, not a deque: it rarely holds more than two events, and an idle
        # connection's empty deque costs over a kilobyte.
        self._events: list[ProtocolEvent] = []
        self._peer_gone = False
        #: The connection stops reading while the client may still be sending (an
        #: error answer, an unread body): close gently, or the kernel's reset could
        #: destroy the response before the client reads it.
        self.linger = False
        #: False once a write failed or was cancelled: nothing more may be written.
        self.writable = True
        #: The current request's response head was handed to the socket.
        self._response_started = False
        #: That head said ``connection: close``: no request follows this one.
        self._closing = False
        #: Whether the current request can get a trailer section and a ``1xx``: both
        #: need HTTP/1.1 (chunked framing; RFC 9110 §15.2 keeps 1xx from HTTP/1.0).
        self.supports_trailers = False
        self.supports_early_hints = False
        #: No request has been served yet: its head gets the header timeout alone.
        self._first_request = True

    async def run(self) -> None:
        """Serve requests until either side closes, a timeout fires or the server stops.

        The waiting scope, which a timeout or shutdown cancels, is entered the first
        time the connection has to wait for a request head, not before: entering a
        cancel scope costs a sizeable part of a short connection (``Connection:
        close``, whose request usually arrives with it), and until a head must be
        waited for there is no wait to end. The scope may be cancelled before it is
        entered; everything in it is then cancelled at once.
        """
        if not await self._serve_requests(wait=False):
            return
        with self.control.waiting_scope:
            await self._serve_requests(wait=True)
            return
        # Reached only when the waiting scope was cancelled: a timeout or shutdown.
        if not self.state.stopping:
            partial_head = self.protocol.has_pending_input
            first = self._first_request
            self.state.count_timeout("request_head" if first or partial_head else "keep_alive")
            if partial_head:
                await self.send_error(408, "Timed out reading the request head")

    async def _serve_requests(self, *, wait: bool) -> bool:
        """Serve requests one after another until the connection must close; without
        ``wait``, only those whose heads arrive without a wait, and then say True."""
        while True:
            try:
                request = await self._next_request(wait)
            except ProtocolError as exc:
                await self.send_error(exc.status_code, str(exc))
                return False
            if request is None:
                return False
            if request is MUST_WAIT:
                return True
            self._first_request = False
            if not await self._serve(request):
                return False
            self.protocol.start_new_cycle()

    async def _next_request(self, wait: bool) -> RequestReceived | _MustWait | None:
        """Wait for the next request head under the keep-alive and header deadlines.

        Nothing received before the deadline closes silently; a partial head
        gets 408 (RFC 9110 §15.5.9). A fresh connection gets the header
        timeout, an idle keep-alive one the shorter of both. Without ``wait``,
        :data:`MUST_WAIT` where the head (or the rest of it) has not arrived.
        """
        first = self._first_request
        events = self._events
        protocol = self.protocol
        if not events and protocol.has_pending_input:
            # A pipelined request; otherwise there is nothing to parse before reading.
            events.extend(protocol.next_events())
        if not events:
            if self._peer_gone or (self.state.stopping and not first):
                return None
            config = self.state.config
            control = self.control
            now = trio.current_time()
            header_deadline = now + config.timeout_request_header
            # Once a head has begun (buffered already, or read in an earlier call that
            # stopped where it had to wait), the keep-alive timeout no longer applies.
            control.deadline = (
                header_deadline
                if first or protocol.has_pending_input
                else min(header_deadline, now + config.timeout_keep_alive)
            )
            if first and self.state.stopping:
                # Accepted as shutdown began: see ConnectionControl.shutdown.
                control.deadline = min(control.deadline, now + FIRST_REQUEST_GRACE)
            control.awaiting_first_request = first
            control.idle = True
            try:
                while not events:
                    if wait:
                        data = await self._receive()
                    else:
                        ready = await self._receive_ready()
                        if ready is None:
                            return MUST_WAIT
                        data = ready
                    # The head has begun: the keep-alive timeout no longer applies.
                    control.deadline = header_deadline
                    events.extend(protocol.receive_data(data))
            finally:
                control.idle = False
                control.deadline = math.inf
            if control.waiting_scope.cancel_called:
                # The wait was ended (timeout, shutdown) in the same scheduler pass in
                # which the request arrived. Everything in the cancelled scope would be
                # cancelled, so the app must not start: close, as on any keep-alive
                # timeout that crosses a request (RFC 9112 §9.3.1 lets clients retry).
                return None
        event = events.pop(0)
        if type(event) is RequestReceived:
            return event
        return None

    async def _serve(self, request: RequestReceived) -> bool:
        """Run one request through the app; True if the connection may be reused."""
        upgrade = self.protocol.upgrade_requested
        self._response_started = False
        if upgrade and self.h2c_handler is not None and await self.h2c_handler(self, request):
            return False
        self.supports_trailers = self.supports_early_hints = request.http_version != "1.0"
        control = self.control
        control.open_streams = 1
        try:
            # Every request starts from the connection's context, never from what
            # the request before it on this connection left in it.
            outcome = await run_in_context(
                contextvars.copy_context(),
                serve_request(
                    self.state,
                    request,
                    self,
                    self,
                    (
                        functools.partial(self._upgrade, request)
                        if upgrade and self.upgrade_handler is not None
                        else None
                    ),
                ),
            )
        finally:
            control.open_streams = 0
        if self.pending_error is not None:
            if not self._response_started:
                await self.send_error(self.pending_error.status_code, str(self.pending_error))
            return False
        if outcome is not Outcome.COMPLETED or not self.writable:
            return False
        protocol = self.protocol
        if self._closing:
            self.linger = not self._peer_gone and not protocol.request_complete
            return False
        self._events.clear()
        if not protocol.request_complete and not await self._drain_request_body():
            self.linger = not self._peer_gone
            return False
        return protocol.keep_alive and not self.state.stopping

    async def _upgrade(self, request: RequestReceived, scope: dict[str, Any]) -> Outcome | None:
        """Hand the connection to the upgrade handler; None if it declined the request."""
        assert self.upgrade_handler is not None
        # Only an upgrade needs tasks beside this one, so only it pays for a nursery.
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            handled = await self.upgrade_handler(self, request, scope)
        self.nursery = None
        # After a switch (or a refused handshake) no HTTP/1.1 follows on this connection.
        return Outcome.CLOSE_CONNECTION if handled else None

    async def _drain_request_body(self) -> bool:
        """Read and drop the body the app did not read, if it is small enough to be worth it."""
        drained = 0
        with trio.move_on_after(self.state.config.timeout_keep_alive):
            while not self.protocol.request_complete:
                if self._peer_gone or drained > READ_AHEAD_LIMIT:
                    return False
                data = await self._receive()
                drained += len(data)
                try:
                    self.protocol.receive_data(data)
                except ProtocolError:
                    return False
            return True
        return False

    # HTTPStream, used by HTTPCycle for the request being served.

    async def receive_body(self) -> tuple[bytes, bool] | None:
        events = self._events
        while True:
            if self._peer_gone or self.pending_error is not None:
                await trio.lowlevel.checkpoint()
                return None
            if events:
                # Parsed already: no I/O below, so this is the call's checkpoint, taken
                # before the event leaves the list so that a cancel loses nothing.
                await trio.lowlevel.checkpoint()
                while events:
                    event = events.pop(0)
                    if isinstance(event, BodyReceived):
                        return event.data, event.more
                    if isinstance(event, ConnectionClosed):
                        self._peer_gone = True
                continue
            # Before the handler commits to a ``100 Continue``, so a cancel costs nothing.
            await trio.lowlevel.checkpoint_if_cancelled()
            interim = self.protocol.send_continue()
            if interim:
                try:
                    await self._send_all(interim)
                except ClientDisconnected:
                    return None
            with trio.move_on_after(self.state.config.timeout_request_body) as waited:
                data = await self._receive()
            if waited.cancelled_caught:
                # RFC 9110 §15.5.9; sent only if the response has not started.
                self.pending_error = ProtocolError("Timed out reading the request body", 408)
                self.state.count_timeout("request_body")
                return None
            try:
                events.extend(self.protocol.receive_data(data))
            except ProtocolError as exc:
                self.pending_error = exc
                return None

    async def wait_disconnected(self) -> None:
        protocol = self.protocol
        if any(type(event) is ConnectionClosed for event in self._events):
            self._peer_gone = True
        while not self._peer_gone:
            if not protocol.request_complete or protocol.pending_input_size >= READ_AHEAD_LIMIT:
                # Body the app has not read stays where ``receive_body`` will find it,
                # and enough is buffered past it: the rest waits in the socket, where
                # TCP pushes back.
                await trio.sleep_forever()
            data = await self._receive(READ_AHEAD_LIMIT - protocol.pending_input_size)
            try:
                protocol.receive_data(data)
            except ProtocolError:
                break
        # The reads above may all have found data (or its end) waiting, and such a
        # read need not yield. Yielded after the look, not before: a poll's look
        # lasts a millisecond, and a busy scheduler could spend it all.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def refuse(self) -> None:
        await self.send_error(503, "Service Unavailable")

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        protocol = self.protocol
        unread = protocol.unread_body_size
        # Decided before the head goes out, so that the head can say so: shutdown,
        # or a body still on its way that will not be drained: too large, of unknown
        # length, or one the client holds back for a ``100 Continue`` the app never
        # asked for, which leaves the client unsure whether to send it (RFC 9110 §10.1.1).
        self._closing = self.state.stopping or (
            unread != 0
            and (protocol.awaiting_continue or unread is None or unread > READ_AHEAD_LIMIT)
        )
        if self._closing and _CLOSE not in headers:
            # This connection will not be reused; say so (RFC 9112 §9.6).
            headers = [*headers, _CLOSE]
        head = protocol.send_response(status, headers)
        self._response_started = True
        framed = protocol.send_body(body, more=not end)
        if len(framed) >= GATHER_MIN and _SENDMSG and self.stream is self.socket_stream:
            await self._send_all(head, framed)
        else:
            await self._send_all(head + framed)

    async def send_body(self, body: bytes, end: bool) -> None:
        data = self.protocol.send_body(body, more=not end)
        if data:
            await self._send_all(data)
        else:
            # Nothing to write (a HEAD response, an empty chunk): the checkpoint
            # every send() owes the app is taken here instead.
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        data = self.protocol.send_informational(status, headers)
        if data:
            await self._send_all(data)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        # A response framed by content-length (or without a body) ends without
        # them: HTTP/1.1 carries trailers only after a chunked body (RFC 9112 §7.1.2).
        data = self.protocol.send_trailers(headers)
        if data:
            await self._send_all(data)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    @property
    def can_send_file(self) -> bool:
        """Whether :meth:`send_file` may run: in cleartext, where the kernel can copy a
        file to the socket. Under TLS the bytes must be encrypted in Python, so the
        bridge reads them in chunks through :meth:`send_body` instead."""
        return _SENDFILE and self.stream is self.socket_stream

    async def send_file(self, fd: int, offset: int, count: int, end: bool) -> None:
        """Write ``count`` (> 0) bytes of the file ``fd`` from ``offset`` as response body
        with ``os.sendfile``, after the head; the handler frames them without seeing them.

        Cut short in any way (cancelled, timed out, the file ended early) the framing
        is broken, so the connection writes nothing more.
        """
        assert self.socket_stream is not None
        before, after = self.protocol.frame_body(count, more=not end)
        if before:
            await self._send_all(before)
        if not self.writable:
            raise ClientDisconnected("the connection was given up after an interrupted write")
        try:
            sent = await self.socket_stream.send_file(fd, offset, count)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.writable = False
            self._peer_gone = True
            raise ClientDisconnected("the client has disconnected") from None
        except BaseException:
            self.writable = False
            raise
        if sent < count:
            self.writable = False
            raise LocalProtocolError(f"the file ended {count - sent} bytes early")
        if after:
            await self._send_all(after)

    # Socket helpers.

    async def _receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        if self._initial_data:
            data, self._initial_data = self._initial_data, b""
            await trio.lowlevel.checkpoint()
            return data
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._peer_gone = True
        return data

    async def _receive_ready(self) -> bytes | None:
        """:meth:`_receive` where bytes (or the end of the stream) are waiting, else None
        at once; always None under TLS, whose records may need several reads."""
        if self._initial_data:
            return await self._receive()
        socket_stream = self.socket_stream
        if socket_stream is None or self.stream is not socket_stream:
            return None
        try:
            data = await socket_stream.receive_ready(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data == b"":
            self._peer_gone = True
        return data

    async def send_raw(self, data: bytes) -> None:
        """Write bytes the handler framed outside a response (a ``101``, for a switch)."""
        await self._send_all(data)

    async def _send_all(self, data: bytes, then: bytes | None = None) -> None:
        """Write ``data``, and ``then`` after it (in cleartext only) without joining them."""
        if not self.writable:
            raise ClientDisconnected("the connection was given up after an interrupted write")
        try:
            if then is None:
                await self.stream.send_all(data)
            else:
                assert self.socket_stream is not None
                await self.socket_stream.send_all_parts(data, then)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.writable = False
            self._peer_gone = True
            raise ClientDisconnected("the client has disconnected") from None
        except BaseException:
            self.writable = False
            raise

    async def send_error(
        self, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer a request the app never saw (bad input, overload, timeout) and stop."""
        logger.debug("Answering %d: %s", status, detail)
        REJECTIONS.record(status, self.client, detail)
        if not self.writable:
            return
        self.state.count_server_response(status)
        self.linger = not self._peer_gone
        body = reason_phrase(status)
        response = render_simple_response(status, [*self.state.defaults.current(), *headers], body)
        try:
            await self._send_all(response)
        except ClientDisconnected:
            return
