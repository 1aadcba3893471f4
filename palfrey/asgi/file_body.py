"""Response bodies read from files: ``http.response.pathsend`` and ``http.response.zerocopysend``.

An application that serves a file should not have to read it into Python
only for the server to write it out again. With these extensions it names
the file (``pathsend``, an absolute path the server opens) or hands over an
open one (``zerocopysend``, with an optional ``offset`` and ``count``), and
the server moves the bytes:

- where the stream can, the kernel copies them (``os.sendfile`` on a
  cleartext HTTP/1.1 socket, :class:`FileStream`): no byte passes through
  Python, and the socket's own writability is the back-pressure;
- everywhere else (TLS, HTTP/2, HTTP/3) they are read in
  :data:`CHUNK_SIZE` pieces in a worker thread, so a slow disk never blocks
  the trio loop, and each piece goes through the stream's ``send_body`` like
  any body message, under its flow control. One piece is in memory at a time.

The ASGI rules around them (order, ``content-length``, HEAD) stay in
:class:`~palfrey.asgi.http.HTTPCycle`; this module opens and checks the files
and moves their bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import trio

from palfrey.protocols.events import LocalProtocolError

if TYPE_CHECKING:
    from palfrey.asgi.http import HTTPStream
    from palfrey.asgi.types import Message

#: Bytes read and sent at a time where the kernel cannot copy the file itself.
CHUNK_SIZE = 64 * 1024
#: Linux's flag for a read that fails instead of waiting for the disk.
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
#: What such a read fails with: the bytes are not cached, or the file system cannot say.
_NOWAIT_REFUSED = frozenset((errno.EAGAIN, errno.EOPNOTSUPP))
#: The messages this module serves, each usable only where the scope offers it.
FILE_MESSAGES = frozenset(("http.response.pathsend", "http.response.zerocopysend"))


@runtime_checkable
class FileStream(Protocol):
    """An :class:`~palfrey.asgi.http.HTTPStream` that can write a file's bytes itself.

    Optional: a stream without it gets the chunked reads. ``can_send_file`` is
    read for each file (HTTP/1.1 knows only per connection whether TLS is on).
    """

    @property
    def can_send_file(self) -> bool: ...

    async def send_file(self, fd: int, offset: int, count: int, end: bool) -> None:
        """Write ``count`` (> 0) bytes of ``fd`` from ``offset`` as body, after the head.

        Raises as ``send_body`` does, and :class:`LocalProtocolError` when the
        file ends before ``count`` bytes.
        """
        ...


@attrs.define(slots=True, eq=False)
class FileBody:
    """``count`` bytes of the open file ``fd`` from ``offset``: one file message's body."""

    fd: int
    offset: int
    count: int
    #: Opened by the server (``pathsend``), so closed by it; an app's file is the app's.
    owned: bool = False
    #: The app's file object when ``offset`` was left out: the body starts at its
    #: position, which moves past what was sent, as a read would move it.
    advance: Any = None

    def __len__(self) -> int:
        return self.count

    def sent(self) -> None:
        """The bytes are on their way: move the app's file position past them."""
        end = self.offset + self.count
        if self.advance is None:
            return
        if isinstance(self.advance, int):
            os.lseek(self.advance, end, os.SEEK_SET)
        else:
            self.advance.seek(end)

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)


async def open_path(message: Message) -> FileBody:
    """The whole file an ``http.response.pathsend`` names, opened in a worker thread
    (an ``open`` can wait on a slow or remote disk)."""
    path = message.get("path")
    if not isinstance(path, str):
        raise TypeError(f"'path' must be a str, got {type(path).__name__}")
    if not os.path.isabs(path):
        raise ValueError(f"'path' must be absolute, got {path!r}")
    return await trio.to_thread.run_sync(_open, path)


def _open(path: str) -> FileBody:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = _regular_file_size(fd)
    except BaseException:
        os.close(fd)
        raise
    return FileBody(fd, 0, size, owned=True)


def zerocopy_file(message: Message) -> tuple[FileBody, bool]:
    """The body an ``http.response.zerocopysend`` describes, and its ``more_body``.

    ``file`` is a file object (or descriptor) on a regular file. Without
    ``offset`` the body starts at the file's position; without ``count`` it runs
    to the end of the file, and a ``count`` past the end stops there, so the
    body's length is known before any byte is sent.
    """
    file = message.get("file")
    if isinstance(file, int) and not isinstance(file, bool):
        fd = file
    elif hasattr(file, "fileno"):
        fd = file.fileno()
    else:
        raise TypeError(f"'file' must be a file object or descriptor, got {type(file).__name__}")
    offset = message.get("offset")
    count = message.get("count")
    more = message.get("more_body", False)
    for name, value in (("offset", offset), ("count", count)):
        if value is not None and (type(value) is not int or value < 0):
            raise ValueError(f"{name!r} must be an int from 0, got {value!r}")
    if type(more) is not bool:
        raise TypeError(f"'more_body' must be a bool, got {more!r}")
    size = _regular_file_size(fd)
    advance = None
    if offset is None:
        advance = file
        offset = os.lseek(fd, 0, os.SEEK_CUR) if isinstance(file, int) else file.tell()
    left = max(size - offset, 0)
    return FileBody(fd, offset, left if count is None else min(count, left), advance=advance), more


def _regular_file_size(fd: int) -> int:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("a file response must come from a regular file")
    return info.st_size


def with_content_length(
    headers: list[tuple[bytes, bytes]], length: int
) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``content-length: length`` unless they frame the body already."""
    if any(name in (b"content-length", b"transfer-encoding") for name, _ in headers):
        return headers
    return [*headers, (b"content-length", b"%d" % length)]


async def send_file(stream: HTTPStream, body: FileBody, end: bool) -> None:
    """Write ``body`` (not empty) after the head: by the stream itself where it can,
    otherwise read in chunks and sent as body messages."""
    if isinstance(stream, FileStream) and stream.can_send_file:
        await stream.send_file(body.fd, body.offset, body.count, end)
        return
    offset = body.offset
    left = body.count
    while left:
        try:
            chunk = await _read(body.fd, min(CHUNK_SIZE, left), offset)
        except OSError as exc:
            # Between two writes: the stream is whole, only this response is cut short.
            raise LocalProtocolError(f"reading the file failed: {exc}") from exc
        if not chunk:
            raise LocalProtocolError(f"the file ended {left} bytes early")
        offset += len(chunk)
        left -= len(chunk)
        await stream.send_body(chunk, end and not left)


async def _read(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` at ``offset``, without blocking the trio loop.

    Bytes already in the page cache are read inline: ``RWF_NOWAIT`` (Linux) makes
    the read fail rather than wait for the disk. Only then, or where the flag is
    missing, does the read go to a worker thread, whose round trip per chunk made
    a cached 64 MiB file four times slower to send than an inline read.
    """
    if _NOWAIT is not None:
        buffer = bytearray(size)
        try:
            got = os.preadv(fd, [buffer], offset, _NOWAIT)
        except OSError as exc:
            if exc.errno not in _NOWAIT_REFUSED:
                raise
        else:
            if got:
                return bytes(memoryview(buffer)[:got])
    return await trio.to_thread.run_sync(os.pread, fd, size, offset)
