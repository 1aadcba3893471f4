"""Accepted sockets as trio streams, with as little Python as possible per read and write.

:class:`trio.SocketStream` layers a conflict detector, a generator context
manager for error translation, memoryview slicing and trio's socket wrapper
around every ``recv`` and ``send``: about 2 µs per call, a tenth of a whole
keep-alive request with httptools. These classes call the non-blocking stdlib
socket directly and park on :func:`trio.lowlevel.wait_readable` /
``wait_writable`` only when it would block, keeping trio's contract:
cancellation is checked before any byte moves, and errors surface as
``BrokenResourceError`` / ``ClosedResourceError``.

Scheduling differs. trio yields to the scheduler after every successful
call; here a call skips that yield when the call before it on the stream
yielded and was of a kind that makes the next yield redundant:

* a read that finds data waiting, after any call that yielded: an echo
  (WebSocket message, pipelined request) is read, answered and written with
  one scheduler pass instead of two;
* a write that follows a write that yielded: a streamed response yields every
  second chunk, which more than halves the scheduling cost per chunk.

A write after a read always yields: under load the next request often
arrives during that pass, and the read after it then finds data instead of
parking in epoll. No two calls in a row skip their yield, so a busy
connection cannot starve the others.
"""

from __future__ import annotations

import contextlib
import errno
import socket

import trio

#: Bytes asked of the kernel per read when the caller does not say.
DEFAULT_RECEIVE_SIZE = 64 * 1024
#: errnos that mean our own side closed the socket, not that the peer broke it.
_CLOSED_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))
#: accept() failures that concern only the one connection being accepted (trio's list).
_IGNORED_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class SocketStream(trio.abc.HalfCloseableStream):
    """One accepted TCP or Unix connection.

    Writes are serialised by the callers (one task per HTTP/1.1 connection, a
    send lock per WebSocket); a second writer arriving while a large write is
    parked gets ``BusyResourceError`` rather than interleaved bytes.
    """

    __slots__ = ("_eof_sent", "_send_yielded", "_sending", "_yielded", "socket")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in _TCP_FAMILIES:
            # Responses are written whole, so Nagle would only delay them. A peer
            # that already reset the connection makes this fail; reads will say so.
            # Unlike trio, no TCP_NOTSENT_LOWAT: like Uvicorn, large responses go to
            # the kernel in as few writes as its buffer allows.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = sock
        self._eof_sent = False
        self._sending = False
        #: The previous call on this stream gave the scheduler a turn.
        self._yielded = False
        #: ...and it was a write.
        self._send_yielded = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        sock = self.socket
        size = max_bytes or DEFAULT_RECEIVE_SIZE
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = sock.recv(size)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise _stream_error(exc) from exc
        else:
            self._send_yielded = False
            if self._yielded:
                self._yielded = False
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._yielded = True
            return data
        self._yielded = True
        self._send_yielded = False
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(size)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this connection")
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _stream_error(exc) from exc
        if sent == len(data):
            if self._send_yielded:
                # The second of two writes in a row: the first gave the scheduler its turn.
                self._send_yielded = self._yielded = False
                return
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._send_rest(memoryview(data), sent)
        self._send_yielded = self._yielded = True

    async def _send_rest(self, view: memoryview, sent: int) -> None:
        """The slow path: the kernel's send buffer is full, so wait for room, part by part."""
        sock = self.socket
        self._sending = True
        try:
            while sent < len(view):
                await trio.lowlevel.wait_writable(sock)
                try:
                    sent += sock.send(view[sent:])
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _stream_error(exc) from exc
        finally:
            self._sending = False
            view.release()

    async def wait_send_all_might_not_block(self) -> None:
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("this socket was already closed")
        await trio.lowlevel.wait_writable(self.socket)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(exc) from exc

    def close(self) -> None:
        """Close now: closing a plain socket never waits, so it needs no cancel scope."""
        _close(self.socket)

    async def aclose(self) -> None:
        _close(self.socket)
        await trio.lowlevel.checkpoint()


class SocketListener(trio.abc.Listener[SocketStream]):
    """A listening socket that accepts :class:`SocketStream` connections."""

    __slots__ = ("socket",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock

    async def accept(self) -> SocketStream:
        """The next connection; errors that concern only that connection are skipped.

        Running out of file descriptors (``EMFILE`` and friends) is raised, as
        trio's listener does: :func:`trio.serve_listeners` pauses and retries.
        """
        sock = self.socket
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                connection, _ = sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError from None
                if exc.errno not in _IGNORED_ACCEPT_ERRNOS:
                    raise
                continue
            stream = SocketStream(connection)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return stream

    async def aclose(self) -> None:
        _close(self.socket)
        await trio.lowlevel.checkpoint()


def _close(sock: socket.socket) -> None:
    """Close, first waking any task parked on the socket (it gets ``ClosedResourceError``)."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()
