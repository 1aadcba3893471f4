"""Accepted stream connections: one task each, with its own error boundary."""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from typing import TYPE_CHECKING, Any

import attrs
import trio

from palfrey.asgi.scope import Address
from palfrey.transport.protocol_select import open_connection
from palfrey.transport.state import ConnectionControl
from palfrey.transport.tls import handshake, tls_extension

if TYPE_CHECKING:
    from palfrey.transport.socket_stream import SocketListener, SocketStream
    from palfrey.transport.state import ServerState

logger = logging.getLogger("palfrey.error")

#: How long the lingering read before a close may take.
SOCKET_CLOSE_TIMEOUT = 1.0
#: Bytes read and dropped while lingering before giving up on a graceful close.
LINGER_LIMIT = 1024 * 1024
#: accept() failures that mean the process is out of something; retried after a pause.
_ACCEPT_CAPACITY_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS))
#: How long accepting pauses after such a failure.
ACCEPT_RETRY_DELAY = 0.1


async def accept_connections(
    listener: SocketListener,
    state: ServerState,
    ssl_context: ssl.SSLContext | None,
    nursery: trio.Nursery,
    *,
    slots: trio.CapacityLimiter | None = None,
) -> None:
    """Start a :func:`handle_connection` task in ``nursery`` for each accepted connection.

    Like :func:`trio.serve_listeners`, but the handler alone closes the
    connection, so a closed connection is not closed a second time under
    another cancel scope.

    ``slots`` (``--limit-connections``, shared by every listener) is taken
    *before* ``accept()`` and given back when the connection's task ends: at
    the cap, the server stops accepting, and new clients wait in the kernel's
    listen backlog, costing this process no descriptor, until a connection
    closes. Accepting and closing at once would still spend a descriptor and
    a wake-up on every client of a flood, and invite an immediate retry.
    """
    outage = _AcceptOutage()
    async with listener:
        while True:
            borrower = object()
            if slots is not None:
                await slots.acquire_on_behalf_of(borrower)
            try:
                stream = await listener.accept()
            except BaseException as exc:
                if slots is not None:
                    slots.release_on_behalf_of(borrower)
                if not isinstance(exc, OSError) or exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                outage.failed(exc.errno)
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            outage.recovered()
            if slots is None:
                nursery.start_soon(handle_connection, stream, state, ssl_context)
            else:
                nursery.start_soon(_handle_in_slot, stream, state, ssl_context, slots, borrower)


@attrs.define(slots=True)
class _AcceptOutage:
    """Logs an episode of ``accept()`` running out of descriptors once, not per retry.

    A process out of descriptors fails every retry until a connection closes,
    ten times a second: one line when it starts and one when accepting works
    again (with how long it lasted and how many attempts failed) say as much
    without filling the disk.
    """

    #: When the current episode began (trio time), None while accept() works.
    since: float | None = None
    #: accept() calls that failed in the current episode.
    failures: int = 0

    def failed(self, code: int) -> None:
        self.failures += 1
        if self.since is not None:
            return
        self.since = trio.current_time()
        logger.error(
            "accept() failed: %s (%s); new connections wait until descriptors free up"
            " (retrying every %s seconds)",
            errno.errorcode[code],
            os.strerror(code),
            ACCEPT_RETRY_DELAY,
        )

    def recovered(self) -> None:
        if self.since is None:
            return
        logger.warning(
            "accept() works again after %.1f seconds (%d failed attempts)",
            trio.current_time() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = 0


async def _handle_in_slot(
    stream: SocketStream,
    state: ServerState,
    ssl_context: ssl.SSLContext | None,
    slots: trio.CapacityLimiter,
    borrower: object,
) -> None:
    """:func:`handle_connection`, then give its ``--limit-connections`` slot back."""
    try:
        await handle_connection(stream, state, ssl_context)
    finally:
        slots.release_on_behalf_of(borrower)


async def handle_connection(
    stream: SocketStream, state: ServerState, ssl_context: ssl.SSLContext | None
) -> None:
    """Serve one accepted connection; nothing raised here reaches the listener but Cancelled."""
    control = ConnectionControl()
    state.connections.add(control)
    if state.metrics is not None:
        state.metrics.connections_total += 1
    # Every write to this client, HTTP/1.1 or WebSocket, under TLS or not, ends
    # here: a client that stops reading is given up on after this long.
    stream.send_timeout = state.config.timeout_send
    transport: trio.abc.Stream = stream
    extension: dict[str, Any] | None = None
    try:
        client, server = _addresses(stream)
        if ssl_context is not None:
            tls = await handshake(stream, ssl_context, state.config.timeout_tls_handshake, state)
            if tls is None:
                return
            transport = tls
            # Once per connection: every request on it shares the dict.
            extension = tls_extension(tls)
        connection = await open_connection(
            transport,
            state,
            control,
            socket_stream=stream,
            tls=extension,
            client=client,
            server=server,
        )
        if connection is None:
            return
        await connection.run()
        if connection.linger and connection.writable:
            await _linger(transport)
    except Exception:
        logger.exception("Unhandled error on a connection; closing it")
    finally:
        state.connections.discard(control)
        # Closing never waits: TLS runs with ``https_compatible``, so it sends no
        # close_notify, and closing its SSLStream would only close this socket.
        stream.close()


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close and read for a moment before closing, after answering an error.

    Closing with unread input makes the kernel send RST, which can destroy
    the error response before the client reads it (RFC 9112 §9.6).
    """
    with trio.move_on_after(SOCKET_CLOSE_TIMEOUT):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            drained = 0
            while drained < LINGER_LIMIT:
                data = await stream.receive_some(65536)
                if not data:
                    return
                drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


def _addresses(stream: SocketStream) -> tuple[Address, Address]:
    """The scope's ``client`` and ``server``, from what the listener learnt when it
    accepted the connection where it can, from the socket otherwise."""
    sock = stream.socket
    peer = stream.peer_address
    if peer is None or not isinstance(peer, tuple):
        if sock.family == socket.AF_UNIX:
            return None, (sock.getsockname(), None)
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
    local = stream.local_address or sock.getsockname()
    # (host, port) as accept() gives it for IPv4 is kept as it is: no new tuple.
    client: Address = None if not peer else peer if len(peer) == 2 else (str(peer[0]), int(peer[1]))
    return client, (local if len(local) == 2 else (str(local[0]), int(local[1])))
