"""Opening the listening sockets named by ``--host/--port``, ``--uds`` or ``--fd``."""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import TYPE_CHECKING

import trio

from palfrey.transport.errors import BindError

if TYPE_CHECKING:
    from palfrey.config.schema import Config


async def open_listeners(config: Config) -> list[trio.SocketListener]:
    if config.fd is not None:
        return [_listener_from_fd(config.fd, config.backlog)]
    if config.uds is not None:
        return [_unix_listener(config.uds, config.backlog)]
    try:
        return await trio.open_tcp_listeners(config.port, host=config.host, backlog=config.backlog)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"could not bind {config.host}:{config.port}: {reason}") from None


def _listener_from_fd(fd: int, backlog: int) -> trio.SocketListener:
    try:
        raw = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"could not use file descriptor {fd}: {exc.strerror}") from None
    raw.listen(backlog)
    return trio.SocketListener(trio.socket.from_stdlib_socket(raw))


def _unix_listener(path: str, backlog: int) -> trio.SocketListener:
    # A socket file left by a previous run would make bind fail; remove only sockets.
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.bind(path)
    except OSError as exc:
        raw.close()
        raise BindError(f"could not bind unix socket {path}: {exc.strerror}") from None
    os.chmod(path, 0o666)
    raw.listen(backlog)
    return trio.SocketListener(trio.socket.from_stdlib_socket(raw))


def describe(listener: trio.SocketListener, *, tls: bool) -> str:
    """The URL a user would type to reach this listener."""
    sock = listener.socket
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"
