"""Opening every listening socket the configuration names, all at once.

The sockets come from ``--fd``, ``--uds``, each ``--bind`` address, the
sockets systemd passes (``LISTEN_FDS``), and ``--host/--port`` — the last only
when nothing else names a socket or when the host or port was set explicitly,
so ``--bind unix:/run/app.sock`` alone does not also open port 8000.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

import trio

from palfrey.config.binds import BindAddress, InheritedSocket, TCPAddress, UnixAddress, parse_bind
from palfrey.transport.errors import BindError
from palfrey.transport.socket_stream import SocketListener

if TYPE_CHECKING:
    from palfrey.config.schema import Config

#: The first file descriptor systemd passes (``SD_LISTEN_FDS_START``, sd_listen_fds(3)).
SYSTEMD_FIRST_FD = 3


def bind_addresses(config: Config, environ: MutableMapping[str, str]) -> list[BindAddress]:
    """The addresses to listen on, in the order the banner shows them."""
    addresses: list[BindAddress] = []
    if config.fd is not None:
        addresses.append(InheritedSocket(config.fd))
    if config.uds is not None:
        addresses.append(UnixAddress(config.uds))
    addresses.extend(parse_bind(text) for text in config.bind)
    addresses.extend(InheritedSocket(fd) for fd in systemd_sockets(environ))
    if not addresses or {"host", "port"} & config.set_options:
        addresses.insert(0, TCPAddress(config.host, config.port))
    return addresses


def systemd_sockets(environ: MutableMapping[str, str]) -> list[int]:
    """The file descriptors systemd passed to this process, if any (socket activation).

    The variables are removed once read, as ``sd_listen_fds(unset_environment=1)``
    does, so child processes do not take the sockets for theirs.
    """
    pid = environ.get("LISTEN_PID", "")
    count = environ.get("LISTEN_FDS", "")
    if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    return list(range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + int(count)))


async def open_listeners(config: Config) -> list[SocketListener]:
    """Bind (or adopt) every socket; on any failure, close those opened and raise BindError."""
    sockets: list[socket.socket] = []
    try:
        for address in bind_addresses(config, os.environ):
            sockets.extend(await _open(address, config))
    except BaseException:
        for sock in sockets:
            sock.close()
        remove_socket_files(config)
        raise
    return [SocketListener(sock, skip_redundant_yields=True) for sock in sockets]


async def _open(address: BindAddress, config: Config) -> list[socket.socket]:
    if isinstance(address, InheritedSocket):
        return [_adopt(address.fd, config.backlog)]
    if isinstance(address, UnixAddress):
        return [_unix_socket(address.path, config.backlog, int(config.uds_mode, 8))]
    return await _tcp_sockets(address, config.backlog)


async def _tcp_sockets(address: TCPAddress, backlog: int) -> list[socket.socket]:
    try:
        opened = await trio.open_tcp_listeners(address.port, host=address.host, backlog=backlog)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"could not bind {address.host}:{address.port}: {reason}") from None
    # trio resolves the host and sets the socket options; Palfrey's listener takes the sockets.
    return [_stdlib_socket(listener.socket) for listener in opened]


def _stdlib_socket(sock: trio.socket.SocketType) -> socket.socket:
    family, kind, proto = sock.family, sock.type, sock.proto
    return socket.socket(family, kind, proto, fileno=sock.detach())


def _adopt(fd: int, backlog: int) -> socket.socket:
    try:
        raw = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"could not use file descriptor {fd}: {exc.strerror}") from None
    if raw.type != socket.SOCK_STREAM:
        raw.detach()
        raise BindError(f"file descriptor {fd} is not a stream socket")
    raw.listen(backlog)
    return raw


def _unix_socket(path: str, backlog: int, mode: int) -> socket.socket:
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
    os.chmod(path, mode)
    raw.listen(backlog)
    return raw


def remove_socket_files(config: Config) -> None:
    """Remove the socket files this process bound for ``--uds`` and ``--bind unix:``."""
    paths = [config.uds] if config.uds is not None else []
    paths += [text[len("unix:") :] for text in config.bind if text.startswith("unix:")]
    for path in paths:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass


def describe(listener: SocketListener, *, tls: bool) -> str:
    """The URL a user would type to reach this listener."""
    return describe_socket(listener.socket, tls=tls)


def describe_socket(sock: socket.socket, *, tls: bool) -> str:
    """The URL a user would type to reach this listening socket."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"
