"""A worker process: ``python -m palfrey.supervisor.worker CONTROL_FD [SOCKET_FD ...]``.

It receives its configuration on the control channel, imports the app
afresh (so a restart serves new code), serves the listening sockets it
inherited, answers the supervisor's pings from its trio loop, and shuts down
gracefully on SIGTERM/SIGINT or when the supervisor goes away.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import sys

import attrs
import trio

from palfrey.asgi.lifespan import LifespanFailure
from palfrey.server.logging import configure_logging
from palfrey.server.runner import EXIT_ERROR, serve_process
from palfrey.server.server import Server
from palfrey.supervisor.control import (
    METRICS_REQUEST,
    PING,
    PONG,
    READY,
    RECYCLING,
    encode_metrics,
    receive_config,
)
from palfrey.transport.errors import ServeError


def main(argv: list[str]) -> int:
    _remember_stop_signals()
    control = socket.socket(fileno=int(argv[0]))
    sockets = [socket.socket(fileno=int(fd)) for fd in argv[1:]]
    try:
        config = receive_config(control)
    except (EOFError, OSError, ValueError, TypeError) as exc:
        print(f"palfrey: worker could not read its configuration: {exc}", file=sys.stderr)
        return EXIT_ERROR
    configure_logging(config, show_pid=True)
    status = serve_process(
        config, functools.partial(_serve_worker, control=control), sockets=sockets
    )
    # Served and shut down: a late signal must not turn the exit status into a kill.
    # (Interpreter finalization puts Python-level handlers back to the default
    # action; it leaves SIG_IGN alone.)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    return status


#: SIGINT/SIGTERM that reached the worker while the server's own signal watcher
#: was not listening (before it started, or after it ended).
_stop_signals: list[int] = []


def _remember_stop_signals() -> None:
    """Replace the default actions of SIGINT and SIGTERM by a note.

    The server watches these signals only while it serves; trio restores this
    handler when it stops. Without it, a SIGTERM arriving during import or
    in the last moments of a shutdown (the supervisor's, after a signal to the
    whole process group) would kill the worker outright, skipping its clean
    exit; a note taken before serving turns into a shutdown request.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: _stop_signals.append(received))


async def _serve_worker(server: Server, *, control: socket.socket) -> None:
    """Serve, telling the supervisor when serving began and when the request limit ends it."""
    channel = _SupervisorChannel(trio.SocketStream(trio.socket.from_stdlib_socket(control)))
    ready = trio.Event()
    failure: BaseException | None = None

    async def run_server() -> None:
        nonlocal failure
        try:
            await server.serve(handle_signals=True, task_status=_Started(ready))
        except (LifespanFailure, ServeError) as exc:
            failure = exc
        if server.state.metrics is not None:
            # The requests since the supervisor last asked must not be lost.
            await channel.tell(encode_metrics(server.state.metrics_snapshot()))
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.answer_pings, server)
        nursery.start_soon(run_server)
        if _stop_signals:
            server.request_shutdown()
        await ready.wait()
        await channel.tell(READY)
        if _stop_signals:
            server.request_shutdown()
        await server.state.limit_reached.wait()
        await channel.tell(RECYCLING)
    if failure is not None:
        raise failure


@attrs.define(slots=True)
class _Started:
    """Stands in for a nursery's task status: the server calls ``started`` once it listens."""

    event: trio.Event

    def started(self, _value: object = None) -> None:
        self.event.set()


@attrs.define(slots=True)
class _SupervisorChannel:
    """The worker's end of the control channel; one lock keeps its writes whole."""

    stream: trio.SocketStream
    sending: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock)

    async def tell(self, message: bytes) -> None:
        async with self.sending:
            # A supervisor that went away is noticed by answer_pings, which reads.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(message)

    async def answer_pings(self, server: Server) -> None:
        """Answer each ping; if the supervisor is gone, shut down rather than serve orphaned."""
        while True:
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                server.request_shutdown()
                return
            for _ in range(data.count(PING)):
                await self.tell(PONG)
            if METRICS_REQUEST in data:
                await self.tell(encode_metrics(server.state.metrics_snapshot()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
