"""HTTP/1.1 on a trio stream: the thin loop between a socket and a ProtocolHandler.

The application runs inline in the connection task (no task per request) and
pulls the request body through ``receive()``: the socket is read only when the
app asks for more, so an unread body pushes back on the client through TCP.
The connection task doubles as the :class:`HTTPStream` for the current cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.http import HTTPCycle
from palfrey.asgi.scope import Address, http_scope
from palfrey.protocols.events import (
    BodyReceived,
    ConnectionClosed,
    ProtocolError,
    ProtocolEvent,
    RequestReceived,
)
from palfrey.protocols.status import reason_phrase, render_simple_response

if TYPE_CHECKING:
    from palfrey.protocols.base import ProtocolHandler
    from palfrey.transport.state import ConnectionControl, ServerState

logger = logging.getLogger("palfrey.error")

_CLOSE = (b"connection", b"close")
RECEIVE_SIZE = 64 * 1024
#: Bytes read ahead (pipelined requests, an unread body) before reading pauses.
READ_AHEAD_LIMIT = 64 * 1024

#: Hands an accepted upgrade (e.g. WebSocket) the connection; returns when it is over.
UpgradeHandler = Callable[["H1Connection", RequestReceived, dict[str, Any]], Any]


class H1Connection:
    """Serves requests on one HTTP/1.1 connection until it must close."""

    __slots__ = (
        "_awaiting_continue",
        "_events",
        "_peer_gone",
        "client",
        "closed_with_error",
        "control",
        "nursery",
        "pending_error",
        "protocol",
        "scheme",
        "server",
        "state",
        "stream",
        "upgrade_handler",
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
        upgrade_handler: UpgradeHandler | None = None,
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self.state = state
        self.control = control
        #: Open while an upgraded protocol runs: tasks it starts beside the connection
        #: (a WebSocket's app) live here, inside the connection task.
        self.nursery: trio.Nursery | None = None
        self.scheme = scheme
        self.client = client
        self.server = server
        self.upgrade_handler = upgrade_handler
        self.pending_error: ProtocolError | None = None
        # A list, not a deque: it rarely holds more than two events, and an idle
        # connection's empty deque costs over a kilobyte.
        self._events: list[ProtocolEvent] = []
        self._peer_gone = False
        #: The client sent ``Expect: 100-continue`` and the app has not asked for the body yet.
        self._awaiting_continue = False
        #: The server answered on its own and stopped reading: close gently.
        self.closed_with_error = False

    async def run(self) -> None:
        """Serve requests until either side closes, a timeout fires or the server stops."""
        first = True
        with self.control.waiting_scope:
            while True:
                try:
                    request = await self._next_request(first)
                except ProtocolError as exc:
                    await self.send_error(exc.status_code, str(exc))
                    return
                if request is None:
                    return
                first = False
                if not await self._serve(request):
                    return
                self.protocol.start_new_cycle()
        # Reached only when the waiting scope was cancelled: a timeout or shutdown.
        if not self.state.stopping and self.protocol.has_pending_input:
            await self.send_error(408, "Timed out reading the request head")

    async def _next_request(self, first: bool) -> RequestReceived | None:
        """Wait for the next request head under the keep-alive and header deadlines.

        Nothing received before the deadline closes silently; a partial head
        gets 408 (RFC 9110 §15.5.9). A fresh connection gets the header
        timeout, an idle keep-alive one the shorter of both.
        """
        events = self._events
        protocol = self.protocol
        if not events and protocol.has_pending_input:
            # A pipelined request; otherwise there is nothing to parse before reading.
            events.extend(protocol.next_events())
        if not events:
            if self.state.stopping or self._peer_gone:
                return None
            config = self.state.config
            control = self.control
            now = trio.current_time()
            header_deadline = now + config.timeout_request_header
            control.deadline = (
                header_deadline if first else min(header_deadline, now + config.timeout_keep_alive)
            )
            control.idle = True
            try:
                while not events:
                    data = await self._receive()
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
        state = self.state
        state.count_request()
        scope = http_scope(
            method=request.method,
            target=request.target,
            headers=request.headers,
            http_version=request.http_version,
            scheme=self.scheme,
            client=self.client,
            server=self.server,
            root_path=state.config.root_path,
            state=state.lifespan_state,
        )
        limiter = state.limiter
        if limiter is not None:
            # The connection is the borrower: it serves one request (or WebSocket) at a time.
            try:
                limiter.acquire_on_behalf_of_nowait(self)
            except trio.WouldBlock:
                await self.send_error(503, "Service Unavailable")
                return False
        try:
            upgrade, self._awaiting_continue = _upgrade_and_expect(request)
            if upgrade and self.upgrade_handler is not None:
                # Only an upgrade needs tasks beside this one, so only it pays for a nursery.
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    handled = await self.upgrade_handler(self, request, scope)
                self.nursery = None
                if handled:
                    return False
            cycle = HTTPCycle(scope, self, state.defaults)
            await cycle.run(state.app)
        finally:
            if limiter is not None:
                limiter.release_on_behalf_of(self)
        if self.pending_error is not None:
            if not cycle.head_sent:
                await self.send_error(self.pending_error.status_code, str(self.pending_error))
            return False
        if cycle.broken or not cycle.response_complete:
            return False
        self._events.clear()
        protocol = self.protocol
        if not protocol.request_complete and (
            self._awaiting_continue or not await self._drain_request_body()
        ):
            # An app that answered ``Expect: 100-continue`` without reading leaves the
            # client unsure whether to send the body: close rather than drain
            # (RFC 9110 §10.1.1).
            return False
        return protocol.keep_alive and not state.stopping

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
        self._awaiting_continue = False
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, BodyReceived):
                    return event.data, event.more
                if isinstance(event, ConnectionClosed):
                    self._peer_gone = True
            if self._peer_gone or self.pending_error is not None:
                return None
            interim = self.protocol.send_continue()
            if interim:
                try:
                    await self._send_all(interim)
                except ClientDisconnected:
                    return None
            data = await self._receive()
            try:
                self._events.extend(self.protocol.receive_data(data))
            except ProtocolError as exc:
                self.pending_error = exc
                return None

    async def wait_disconnected(self) -> None:
        read_ahead = 0
        while not self._peer_gone:
            if read_ahead > READ_AHEAD_LIMIT:
                await trio.sleep_forever()
            data = await self._receive()
            read_ahead += len(data)
            try:
                self.protocol.receive_data(data)
            except ProtocolError:
                return

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        protocol = self.protocol
        if (
            self.state.shutdown_requested.is_set()
            or (self._awaiting_continue and not protocol.request_complete)
        ) and _CLOSE not in headers:
            # This connection will not be reused; say so (RFC 9112 §9.6).
            headers = [*headers, _CLOSE]
        data = protocol.send_response(status, headers)
        await self._send_all(data + protocol.send_body(body, more=not end))

    async def send_body(self, body: bytes, end: bool) -> None:
        data = self.protocol.send_body(body, more=not end)
        if data:
            await self._send_all(data)

    # Socket helpers.

    async def _receive(self) -> bytes:
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._peer_gone = True
        return data

    async def _send_all(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone = True
            raise ClientDisconnected("the client has disconnected") from None

    async def send_error(
        self, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer a request the app never saw (bad input, overload, timeout) and stop."""
        logger.debug("Answering %d: %s", status, detail)
        self.closed_with_error = not self._peer_gone
        body = reason_phrase(status)
        response = render_simple_response(status, [*self.state.defaults.current(), *headers], body)
        try:
            await self._send_all(response)
        except ClientDisconnected:
            return


def _upgrade_and_expect(request: RequestReceived) -> tuple[bool, bool]:
    """Whether the request asks to upgrade, and whether it waits for ``100 Continue``; one pass."""
    upgrade = expects_continue = False
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = True
        elif name == b"expect" and value.lower() == b"100-continue":
            expects_continue = True
    return upgrade, expects_continue
