"""One worker process as the supervisor sees it: spawn, readiness, health pings, exit.

Each worker is watched by one task in the supervisor's trio program (it
reads the control channel, pings, and waits for the process); there is no
thread per worker.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import socket
import sys
from collections.abc import Callable

import attrs
import trio

from palfrey.observability.metrics import Snapshot
from palfrey.supervisor.control import (
    METRICS_REQUEST,
    PING,
    PONG,
    READY,
    RECYCLING,
    WorkerMessages,
)

logger = logging.getLogger("palfrey.error")

#: The longest gap between two health pings; shorter when the timeout is short.
PING_INTERVAL = 1.0
#: How long an exited worker's last messages (its final metrics) may take to arrive.
DRAIN_TIMEOUT = 1.0


class WorkerState(enum.Enum):
    STARTING = "starting"  # spawned, importing the app and running lifespan startup
    SERVING = "serving"  # told the supervisor it listens
    STOPPING = "stopping"  # shutting down: retired, or recycling at its request limit
    EXITED = "exited"


@attrs.define(slots=True, eq=False)
class Worker:
    process: trio.Process
    control: trio.SocketStream
    on_change: Callable[[], None]
    state: WorkerState = WorkerState.STARTING
    #: Set once the worker is serving or has exited, whichever comes first.
    settled: trio.Event = attrs.field(factory=trio.Event)
    exited: trio.Event = attrs.field(factory=trio.Event)
    pong: trio.Event = attrs.field(factory=trio.Event)
    started_at: float = attrs.field(factory=trio.current_time)
    #: Why the supervisor wants this worker replaced, once it does (memory, lifetime).
    replace_reason: str | None = None
    #: The same as a metrics label: ``lifetime`` or ``max_rss``.
    replace_cause: str | None = None
    killed_unhealthy: bool = False
    #: The worker's latest metrics snapshot (the last one it sent before exiting, once it has).
    metrics: Snapshot | None = None
    metrics_received: trio.Event = attrs.field(factory=trio.Event)
    #: Pings and metrics requests come from different tasks; one writes at a time.
    _sending: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def terminate(self) -> None:
        """Ask for a graceful shutdown (the worker's own SIGTERM handling)."""
        self._signal(signal.SIGTERM)
        if self.state is not WorkerState.EXITED:
            self.state = WorkerState.STOPPING

    def interrupt(self) -> None:
        """A second interrupt: the worker stops without waiting for its requests."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def watch(self, health_timeout: float) -> None:
        """Follow the worker until its process exits; kill it if its loop stops answering."""
        async with trio.open_nursery() as nursery:
            read_all = trio.Event()
            nursery.start_soon(self._read_control, read_all)
            nursery.start_soon(self._check_health, health_timeout)
            await self.process.wait()
            # What it sent last (its final metrics) may still be in the socket.
            with trio.move_on_after(DRAIN_TIMEOUT):
                await read_all.wait()
            nursery.cancel_scope.cancel()
        self.state = WorkerState.EXITED
        await self.control.aclose()
        self.settled.set()
        self.exited.set()
        self.on_change()

    async def request_metrics(self, timeout: float) -> Snapshot | None:
        """Ask for a fresh snapshot; the last one known if none comes within ``timeout``."""
        if self.state is WorkerState.EXITED:
            await trio.lowlevel.checkpoint()
            return self.metrics
        self.metrics_received = received = trio.Event()
        with trio.move_on_after(timeout):
            if await self._send(METRICS_REQUEST):
                await received.wait()
        return self.metrics

    async def _send(self, message: bytes) -> bool:
        """Whether ``message`` went out (False: the worker's end is closed)."""
        async with self._sending:
            try:
                await self.control.send_all(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    async def _read_control(self, read_all: trio.Event) -> None:
        messages = WorkerMessages()
        try:
            await self._read_messages(messages)
        finally:
            read_all.set()

    async def _read_messages(self, messages: WorkerMessages) -> None:
        while True:
            try:
                data = await self.control.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                received = messages.feed(data)
            except ValueError as exc:
                logger.error("Worker [%d] sent garbage on its control channel: %s", self.pid, exc)
                return
            for message in received:
                if isinstance(message, dict):
                    self.metrics = message
                    self.metrics_received.set()
                elif message == PONG:
                    self.pong.set()
                elif message == READY and self.state is WorkerState.STARTING:
                    self.state = WorkerState.SERVING
                    self.settled.set()
                    self.on_change()
                elif message == RECYCLING and self.state is WorkerState.SERVING:
                    self.state = WorkerState.STOPPING
                    self.on_change()

    async def _check_health(self, timeout: float) -> None:
        """Ping from the supervisor's loop; the pong must come from the worker's trio loop.

        Pinging starts once the worker serves (start-up has its own deadline)
        and goes on while it shuts down, so a worker whose loop blocks during
        its graceful shutdown is killed too.
        """
        await self.settled.wait()
        interval = min(PING_INTERVAL, timeout / 2)
        while True:
            await trio.sleep(interval)
            self.pong = trio.Event()
            if not await self._send(PING):
                return
            with trio.move_on_after(timeout):
                await self.pong.wait()
                continue
            logger.warning(
                "Worker [%d] did not answer the health check within %ss (its event loop is"
                " blocked or stopped); killing it",
                self.pid,
                timeout,
            )
            self.killed_unhealthy = True
            self.kill()
            return


async def spawn_worker(
    config_message: bytes, sockets: list[socket.socket], on_change: Callable[[], None]
) -> Worker:
    """Start a worker process with the listening sockets and its end of a control pair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = [sock.fileno() for sock in sockets]
    command = [sys.executable, "-m", "palfrey.supervisor.worker", str(theirs.fileno())]
    try:
        process = await trio.lowlevel.open_process(
            [*command, *map(str, fds)], pass_fds=(theirs.fileno(), *fds)
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    control = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    worker = Worker(process, control, on_change)
    # The worker reads its configuration before anything else; the socket buffer holds it.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await control.send_all(config_message)
    return worker
