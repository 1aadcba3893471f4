"""Accepted sockets as trio streams, with as little Python as possible per read and write.

:class:`trio.SocketStream` layers a conflict detector, a generator context
manager for error translation, memoryview slicing and trio's socket wrapper
around every ``recv`` and ``send``, a cost paid several times per keep-alive
request. These classes call the non-blocking stdlib
socket directly and park on :func:`trio.lowlevel.wait_readable` /
``wait_writable`` only when it would block, keeping trio's contract:
cancellation is checked before any byte moves, errors surface as
``BrokenResourceError`` / ``ClosedResourceError``, and a second task that
reads or writes while another is parked doing the same gets
``BusyResourceError``.

Scheduling. By default every call is a full trio checkpoint, and the stream
passes :func:`trio.testing.check_half_closeable_stream`. The server sets
``skip_redundant_yields``, which relaxes exactly one clause of that contract:
**a successful call may return without being a schedule point** (without
letting other tasks run). It is still always a cancel point: cancellation is
checked before any byte moves, and a cancelled call moves none. Only a read
skips, and only when it finds data waiting and the previous call on this
stream was made by the same task and yielded: a pipelined or kept-alive
request head is then read, answered and written with one scheduler pass
instead of two. The server uses it for HTTP/1.1 request heads only, which
no ASGI call waits for: a request body is read through ``receive()``, which
takes its own checkpoint, and a connection that switches to WebSocket turns
the flag off, since the app's ``receive()`` reads the socket itself.

Writes always yield. Every ASGI ``send()`` must let other tasks run, and a
response body message is one write, so a skipped write yield would be
a skipped ``send()`` checkpoint. A yield after a write is also what lets the
next request arrive, so that the read after it finds data instead of parking
in epoll.

Why this is safe: a call that skips clears the record, so no two calls of one
task in a row on this stream skip, and a task that loops on the stream still
lets every other task run at least once per two calls; a busy connection
cannot starve the rest. The record names a task because one stream can have
two callers (a WebSocket's app task and its connection task): one task's
yield says nothing about when the other last let the scheduler run, so a call
by any other task in between takes the skip away.

The write deadline. ``send_timeout`` bounds only the slow path, where a
write must park waiting for room in the kernel's buffer: it raises
:class:`StreamTimeout` once no byte has moved for that long. A write that
does not park reads no clock and opens no cancel scope. (Reads need no such
deadline here: their callers know which wait they are in, a request head,
a body or a WebSocket, and time each with their own scope or sweep.)
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    wait_readable,
    wait_writable,
)

_T = TypeVar("_T")

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


class StreamTimeout(trio.BrokenResourceError):
    """A parked write saw no byte move for its stream's ``send_timeout``.

    A ``BrokenResourceError``, so code that treats a broken peer as gone
    needs no new case. Afterwards the stream refuses every later write,
    because part of the message may already be out.
    """


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class SocketStream(trio.abc.HalfCloseableStream):
    """One accepted TCP or Unix connection.

    Writes are serialised by the callers (one task per HTTP/1.1 connection, a
    send lock per WebSocket); a second writer arriving while a large write is
    parked gets ``BusyResourceError`` rather than interleaved bytes.

    ``skip_redundant_yields`` turns on the scheduling relaxation described in
    this module's docstring; ``send_timeout`` (seconds,
    infinite by default) may be changed at any time by the stream's owner and
    apply from the next time a call parks.
    """

    __slots__ = (
        "_eof_sent",
        "_receiving",
        "_send_broken",
        "_send_refused",
        "_sending",
        "_yielder",
        "local_address",
        "peer_address",
        "send_timeout",
        "skip_redundant_yields",
        "socket",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        skip_redundant_yields: bool = False,
        tcp: bool | None = None,
        peer_address: Any = None,
        local_address: Any = None,
    ) -> None:
        """``tcp``, ``peer_address`` and ``local_address`` are what a listener already
        knows about a connection it accepted (``sock.family`` and the two addresses
        otherwise cost a conversion or a system call each, per connection)."""
        sock.setblocking(False)
        if tcp is None:
            tcp = sock.family in _TCP_FAMILIES
        if tcp:
            # Responses are written whole, so Nagle would only delay them. A peer
            # that already reset the connection makes this fail; reads will say so.
            # Unlike trio, no TCP_NOTSENT_LOWAT: like Uvicorn, large responses go to
            # the kernel in as few writes as its buffer allows.
            try:  # noqa: SIM105 - contextlib.suppress would cost a context manager per connection
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.socket = sock
        #: The peer's address as ``accept()`` returned it, when the stream came from one.
        self.peer_address = peer_address
        #: The address the peer connected to, when the listener knows it without asking.
        self.local_address = local_address
        self.skip_redundant_yields = skip_redundant_yields
        #: Seconds a parked write may wait without a byte moving.
        self.send_timeout = math.inf
        self._eof_sent = False
        #: A send timed out, possibly part-way through a message.
        self._send_broken = False
        #: Either of the two above: the one flag the write fast path tests.
        self._send_refused = False
        self._sending = False
        self._receiving = False
        #: The task whose call was the last on this stream and gave the scheduler a
        #: turn; a call by another task replaces it, a call that skips clears it.
        self._yielder: trio.lowlevel.Task | None = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this connection")
        await checkpoint_if_cancelled()
        try:
            data = self.socket.recv(max_bytes)
        except BlockingIOError:
            data = None
        except OSError as exc:
            raise _stream_error(exc) from exc
        if data is None:
            # The slow path, inline: an idle connection parks here, and every
            # coroutine frame on its stack is memory it holds while idle. Outside
            # the ``except`` above, so that what interrupts the wait (Ctrl+C, an
            # error) is not reported as raised while handling a BlockingIOError.
            if self.skip_redundant_yields:
                self._yielder = current_task()
            self._receiving = True
            try:
                while True:
                    await wait_readable(self.socket)
                    try:
                        return self.socket.recv(max_bytes)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        raise _stream_error(exc) from exc
            finally:
                self._receiving = False
        if self.skip_redundant_yields and self._skips_yield():
            return data
        await cancel_shielded_checkpoint()
        return data

    async def receive_ready(self, max_bytes: int) -> bytes | None:
        """:meth:`receive_some` where data (or the end of the stream) is already waiting;
        None, at once, where it would have to wait for it.

        A call that returns None moved nothing and is a cancel point only: it lets
        the caller decide how to wait (the HTTP/1.1 connection enters its waiting
        scope only for a head it must wait for).
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this connection")
        await checkpoint_if_cancelled()
        try:
            data = self.socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _stream_error(exc) from exc
        if self.skip_redundant_yields and self._skips_yield():
            return data
        await cancel_shielded_checkpoint()
        return data

    def _skips_yield(self) -> bool:
        """Whether a read that found data may skip its yield (see the module docstring);
        either way, records the read for the rule."""
        task = current_task()
        if self._yielder is task:
            self._yielder = None
            return True
        # Claimed before yielding, so that a call by any other task during the
        # yield takes the claim away.
        self._yielder = task
        return False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._send_refused:
            raise self._refusal()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this connection")
        await checkpoint_if_cancelled()
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _stream_error(exc) from exc
        if self.skip_redundant_yields:
            self._yielder = current_task()
        if sent != len(data):
            await self._send_rest(memoryview(data), sent)
            return
        await cancel_shielded_checkpoint()

    async def send_all_parts(self, first: bytes, second: bytes) -> None:
        """``send_all(first + second)`` without joining them: one ``sendmsg`` gathers
        both, so a large response body is not copied again just to follow its head.
        The rules of :meth:`send_all` hold."""
        if self._send_refused:
            raise self._refusal()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this connection")
        await checkpoint_if_cancelled()
        try:
            sent = self.socket.sendmsg((first, second))
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _stream_error(exc) from exc
        if self.skip_redundant_yields:
            self._yielder = current_task()
        if sent != len(first) + len(second):
            await self._under_send_deadline(
                partial(self._send_parts_when_writable, first, second, sent)
            )
            return
        await cancel_shielded_checkpoint()

    def _refusal(self) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._send_broken:
            return trio.BrokenResourceError("an earlier send timed out part-way")
        return trio.ClosedResourceError("can't send data after sending EOF")

    async def _send_rest(self, view: memoryview, sent: int) -> None:
        """The slow path: the kernel's send buffer is full, so wait for room, part by part."""
        try:
            await self._under_send_deadline(partial(self._send_when_writable, view, sent))
        finally:
            view.release()

    async def _under_send_deadline(
        self, move: Callable[[trio.CancelScope | None], Awaitable[_T]]
    ) -> _T:
        """Run ``move`` as this stream's one sender, under ``send_timeout`` (which ``move``
        renews as bytes move by pushing the scope's deadline)."""
        self._sending = True
        try:
            timeout = self.send_timeout
            if timeout == math.inf:
                return await move(None)
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                return await move(scope)
            # The deadline struck: some of the message may be out, so no other byte
            # may follow it.
            self._send_broken = self._send_refused = True
            raise StreamTimeout(f"no byte could be sent for {self.send_timeout} seconds")
        finally:
            self._sending = False

    async def _send_when_writable(
        self, view: memoryview, sent: int, scope: trio.CancelScope | None
    ) -> None:
        """Send the rest of ``view`` as room appears; each byte that moves renews ``scope``."""
        sock = self.socket
        while sent < len(view):
            await wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc
            if scope is not None:
                scope.deadline = trio.current_time() + self.send_timeout

    async def _send_parts_when_writable(
        self, first: bytes, second: bytes, sent: int, scope: trio.CancelScope | None
    ) -> None:
        """The slow path of :meth:`send_all_parts`: what is left of each part, in turn."""
        for part in (first, second):
            if sent < len(part):
                with memoryview(part) as view:
                    await self._send_when_writable(view, sent, scope)
                sent = 0
            else:
                sent -= len(part)

    async def send_file(self, fd: int, offset: int, count: int) -> int:
        """Copy ``count`` bytes of the file ``fd`` from ``offset`` to the socket inside the
        kernel (``os.sendfile``): no byte passes through Python.

        Returns the bytes sent, fewer than ``count`` only if the file ended first.
        The rules of :meth:`send_all` hold: cancellation is checked before any byte
        moves, the call always yields, and ``send_timeout`` bounds how long no byte
        may move (the deadline renewed as bytes move), after which every later write
        is refused. Between two kernel calls the task waits for the socket to be
        writable again, so a long file lets other tasks run and stays cancellable.
        """
        if self._send_refused:
            raise self._refusal()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this connection")
        await checkpoint_if_cancelled()
        if self.skip_redundant_yields:
            self._yielder = current_task()
        return await self._under_send_deadline(partial(self._send_file, fd, offset, count))

    async def _send_file(
        self, fd: int, offset: int, count: int, scope: trio.CancelScope | None
    ) -> int:
        sock = self.socket
        out = sock.fileno()
        sent = 0
        waited = False
        while sent < count:
            try:
                moved = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                moved = -1
            except OSError as exc:
                raise _stream_error(exc) from exc
            if moved == 0:
                break  # the end of the file
            if moved > 0:
                sent += moved
                if scope is not None:
                    scope.deadline = trio.current_time() + self.send_timeout
                if sent == count:
                    break
            await wait_writable(sock)
            waited = True
        if not waited:
            await cancel_shielded_checkpoint()
        return sent

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this connection")
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("this socket was already closed")
        if self._send_broken:
            raise self._refusal()
        self._sending = True
        try:
            await wait_writable(self.socket)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this connection")
        await trio.lowlevel.checkpoint()
        if self._send_broken:
            # A FIN after a cut-off message could pass it off as complete.
            raise self._refusal()
        if self._eof_sent:
            return
        self._eof_sent = self._send_refused = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(exc) from exc

    def close(self) -> None:
        """Close now: closing a plain socket never waits, so it needs no cancel scope."""
        self._close()

    async def aclose(self) -> None:
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        """Close, telling trio first only when a task is parked on this socket.

        Every wait on the socket goes through this stream, which marks it. With
        none parked, trio has nobody to wake, and the kernel drops the socket from
        trio's epoll set as it closes it (trio then registers a socket that reuses
        the descriptor afresh), so ``notify_closing``, an exception object and an
        ``epoll_ctl`` call per connection, would buy nothing.
        """
        if self._receiving or self._sending:
            _close(self.socket)
        else:
            self.socket.close()


class SocketListener(trio.abc.Listener[SocketStream]):
    """A listening socket that accepts :class:`SocketStream` connections.

    ``skip_redundant_yields`` is passed on to every accepted stream.
    """

    __slots__ = ("_kind", "_local_address", "_tcp", "skip_redundant_yields", "socket")

    def __init__(self, sock: socket.socket, *, skip_redundant_yields: bool = False) -> None:
        sock.setblocking(False)
        self.socket = sock
        self.skip_redundant_yields = skip_redundant_yields
        self._tcp = sock.family in _TCP_FAMILIES
        #: What every accepted socket is, read once: ``socket.accept()`` reads the
        #: listener's ``family`` and ``type`` again per connection, each turned into
        #: an enum member, a cost a short connection notices.
        self._kind = (int(sock.family), int(sock.type), sock.proto)
        #: Bound to one address (not a wildcard), every connection is addressed to it.
        self._local_address = _fixed_local_address(sock) if self._tcp else None

    async def accept(self) -> SocketStream:
        """The next connection; errors that concern only that connection are skipped.

        Running out of file descriptors (``EMFILE`` and friends) is raised, as
        trio's listener does: :func:`trio.serve_listeners` pauses and retries.
        """
        sock = self.socket
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                # socket.accept() without its per-call lookups (see _kind).
                fd, peer = sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                connection = None
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError from None
                if exc.errno not in _IGNORED_ACCEPT_ERRNOS:
                    raise
                continue
            else:
                connection = socket.socket(*self._kind, fileno=fd)
            if connection is None:
                # Waited outside the ``except``, as in ``receive_some``.
                await trio.lowlevel.wait_readable(sock)
                continue
            stream = SocketStream(
                connection,
                skip_redundant_yields=self.skip_redundant_yields,
                tcp=self._tcp,
                peer_address=peer,
                local_address=self._local_address,
            )
            await trio.lowlevel.cancel_shielded_checkpoint()
            return stream

    async def aclose(self) -> None:
        _close(self.socket)
        await trio.lowlevel.checkpoint()


def _fixed_local_address(sock: socket.socket) -> Any:
    """The listener's own address if it is one address, not a wildcard, else None."""
    try:
        local = sock.getsockname()
        unspecified = ipaddress.ip_address(local[0]).is_unspecified
    except (OSError, ValueError, TypeError, IndexError):
        return None
    return None if unspecified else local


def _close(sock: socket.socket) -> None:
    """Close, first waking any task parked on the socket (it gets ``ClosedResourceError``)."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()
