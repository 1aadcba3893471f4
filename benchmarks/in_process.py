"""What one keep-alive HTTP/1.1 request costs inside the server, with no load generator.

Serves ``--requests`` requests on one connection through Palfrey's real code
(``handle_connection``, the httptools handler, ``HTTPCycle``, ``apps.app``) or
through ``bare_trio.py``'s ASGI ceiling, both on Palfrey's ``SocketStream``
over a stand-in socket. The stand-in answers every other ``recv`` with
``EAGAIN``, as a client waiting for its response would, and its file
descriptor is a pipe that is always readable, so every request still goes
through trio's epoll wait. Prints microseconds of wall time per request, the
best of ``--repeat`` runs.

The point is to measure a block of the request path where it runs: run this
against two trees, one with the block removed or changed, and compare::

    PYTHONPATH=/tmp/variant python benchmarks/in_process.py --server palfrey
    python benchmarks/in_process.py --server palfrey

Pin it to one CPU (``taskset -c 0``) and alternate the trees a few times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from palfrey.transport.socket_stream import SocketStream

sys.path.insert(0, str(Path(__file__).parent))

REQUESTS = {
    "get": b"GET /plaintext HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: wrk\r\n\r\n",
    "post": (
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1024\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 1024
    ),
}


class WaitingClientSocket:
    """The part of a socket ``SocketStream`` uses: a request per readable ``recv``."""

    family = 0  # not a TCP socket: no TCP_NODELAY

    def __init__(self, request: bytes, count: int, readable_fd: int) -> None:
        self.request = request
        self.left = count
        self.responses = 0
        self._fd = readable_fd
        self._ready = False

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return self._fd

    def recv(self, size: int) -> bytes:
        if not self._ready:
            self._ready = True
            raise BlockingIOError
        self._ready = False
        if not self.left:
            return b""
        self.left -= 1
        return self.request

    def send(self, data: bytes) -> int:
        self.responses += 1
        return len(data)

    def sendmsg(self, parts: list[bytes]) -> int:
        self.responses += 1
        return sum(map(len, parts))

    def close(self) -> None:
        pass


def new_stream(sock: Any) -> SocketStream:
    return SocketStream(
        sock,
        skip_redundant_yields=True,
        tcp=False,
        peer_address=("127.0.0.1", 50000),
        local_address=("127.0.0.1", 8000),
    )


async def serve_palfrey(sock: Any) -> None:
    from apps import app  # noqa: PLC0415 - benchmarks/ is on the path

    from palfrey.asgi.headers import DefaultHeaders  # noqa: PLC0415
    from palfrey.asgi.proxy_headers import ProxyHeadersMiddleware  # noqa: PLC0415
    from palfrey.config.schema import Config  # noqa: PLC0415
    from palfrey.transport.state import ServerState  # noqa: PLC0415
    from palfrey.transport.tcp import handle_connection  # noqa: PLC0415

    # As ``palfrey apps:app --http httptools --no-access-log`` sets it up.
    config = Config(app=app, lifespan="off", http="httptools", access_log=False)
    state = ServerState(
        app=ProxyHeadersMiddleware(app, config.trusted_proxies),
        config=config,
        defaults=DefaultHeaders(),
    )
    await handle_connection(new_stream(sock), state, None)


async def serve_bare(sock: Any) -> None:
    import bare_trio  # noqa: PLC0415

    await bare_trio.serve_asgi(new_stream(sock))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("palfrey", "bare-asgi"), default="palfrey")
    parser.add_argument("--request", choices=sorted(REQUESTS), default="get")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    serve = serve_palfrey if arguments.server == "palfrey" else serve_bare
    readable, writer = os.pipe()
    os.write(writer, b"x")
    times = []
    for _ in range(arguments.repeat):
        sock = WaitingClientSocket(REQUESTS[arguments.request], arguments.requests, readable)
        started = time.perf_counter()
        trio.run(serve, sock)
        times.append((time.perf_counter() - started) / arguments.requests * 1e6)
        if sock.responses < arguments.requests:
            raise SystemExit(f"only {sock.responses} of {arguments.requests} requests answered")
    print(
        f"{arguments.server} {arguments.request}: {min(times):.2f} µs per request"
        f" (best of {arguments.repeat}: {' '.join(f'{t:.2f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
