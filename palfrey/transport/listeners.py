"""Opening the listening sockets named by ``--host/--port``, ``--uds`` or ``--fd``."""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import TYPE_CHECKING

import trio

from palfrey.transport.errors import BindError
from palfrey.transport.socket_stream import SocketListener

if TYPE_CHECKING:
    from palfrey.config.schema import Config


async def open_listeners(config: Config) -> list[SocketListener]:
    if config.fd is not None:
        return [_listener_from_fd(config.fd, config.backlog)]
    if config.uds is not None:
        return [_unix_listener(config.uds, config.backlog)]
    try:
        opened = await trio.open_tcp_listeners(
            config.port, host=config.host, backlog=config.backlog
        )
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"could not bind {config.host}:{config.port}: {reason}") from None
    # trio resolves the host and sets the socket options; Palfrey's listener takes the sockets.
    return [
        SocketListener(_stdlib_socket(listener.socket), skip_redundant_yields=True)
        for listener in opened
    ]


def _stdlib_socket(sock: trio.socket.SocketType) -> socket.socket:
    family, kind, proto = sock.family, sock.type, sock.proto
    return socket.socket(family, kind, proto, fileno=sock.detach())


def _listener_from_fd(fd: int, backlog: int) -> SocketListener:
    try:
        raw = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"could not use file descriptor {fd}: {exc.strerror}") from None
    raw.listen(backlog)
    return SocketListener(raw, skip_redundant_yields=True)


def _unix_listener(path: str, backlog: int) -> SocketListener:
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
    return SocketListener(raw, skip_redundant_yields=True)


def describe(listener: SocketListener, *, tls: bool) -> str:
    """The URL a user would type to reach this listener."""
    sock = listener.socket
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"
