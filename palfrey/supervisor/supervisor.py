"""The supervisor: one trio program that binds every socket once and keeps N workers serving.

Each worker *slot* is a task that keeps one worker alive: it starts the
worker, replaces it when it dies (with back-off when replacements die during
start-up), and replaces it gracefully on request — a rolling restart on
SIGHUP, a file change under ``--reload``, ``--workers-lifetime`` or
``--workers-max-rss``. A replacement is serving before the worker it replaces
is told to stop, and the listening sockets stay open in the supervisor
throughout, so no connection is refused.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import socket
from collections.abc import Callable

import attrs
import trio

from palfrey.config.schema import Config
from palfrey.server.logging import configure_logging
from palfrey.server.metrics_endpoint import serve_metrics
from palfrey.server.pidfile import pid_file
from palfrey.server.runner import EXIT_FORCED
from palfrey.server.server import log_banner
from palfrey.supervisor.control import encode_config
from palfrey.supervisor.memory import resident_mib
from palfrey.supervisor.metrics import WorkerMetrics
from palfrey.supervisor.workers import Worker, WorkerState, spawn_worker
from palfrey.transport.errors import ServeError
from palfrey.transport.listeners import describe_socket, open_listeners, remove_socket_files
from palfrey.transport.protocol_select import alpn_protocols
from palfrey.transport.quic import open_quic_endpoints
from palfrey.transport.tls import create_ssl_context

logger = logging.getLogger("palfrey.error")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STARTUP_FAILED = 3

#: Back-off before replacing a worker that died during start-up: doubles up to the maximum.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: Beyond the worker's own bound (graceful timeout, then lifespan shutdown).
KILL_MARGIN = 2.0
#: Beyond --timeout-lifespan, for importing the application before its startup.
START_MARGIN = 30.0
#: How often --workers-max-rss is checked.
MEMORY_CHECK_INTERVAL = 1.0


def supervise(config: Config) -> int:
    """Bind, run the workers until a signal stops them, and return the exit status."""
    configure_logging(config, show_pid=True)
    try:
        with pid_file(config.pid):
            return trio.run(_supervise, config)
    except ServeError as exc:
        logger.error("%s", exc)
        return EXIT_ERROR


async def _supervise(config: Config) -> int:
    if config.reload:
        # Imported up front so a missing watchfiles is one clear line, not a failed reload.
        importlib.import_module("palfrey.supervisor.reload")
    tls = _tcp_uses_tls(config)
    listeners = await open_listeners(config) if config.http != "h3" else []
    try:
        worker_config, quic_addresses = await _reserve_quic(config)
        addresses = [describe_socket(item.socket, tls=tls) for item in listeners]
        supervisor = Supervisor(config, worker_config, [item.socket for item in listeners])
        return await supervisor.run(addresses + quic_addresses)
    finally:
        for listener in listeners:
            listener.socket.close()
        remove_socket_files(config)


def _tcp_uses_tls(config: Config) -> bool:
    """Whether TCP listeners speak TLS; the certificate is loaded here once, so a mistake
    is reported once rather than by every worker."""
    if not config.is_ssl:
        return False
    create_ssl_context(config, alpn_protocols(config.http))
    return config.http != "h3"


async def _reserve_quic(config: Config) -> tuple[Config, list[str]]:
    """Check the HTTP/3 addresses bind, and pin port 0 to a real port for every worker.

    Each worker binds its own UDP socket with ``SO_REUSEPORT``; the probe is
    closed before they start, or the kernel would hand it datagrams too.
    """
    if not config.serves_http3:
        return config, []
    endpoints = await open_quic_endpoints(config, reuse_port=True)
    shown = [endpoint.describe() for endpoint in endpoints]
    pinned = []
    for endpoint in endpoints:
        host, port = endpoint.sock.getsockname()[:2]
        pinned.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        endpoint.sock.close()
    if config.http == "h3":
        return attrs.evolve(config, port=int(pinned[0].rpartition(":")[2])), shown
    return attrs.evolve(config, quic_bind=pinned), shown


@attrs.define(slots=True, eq=False)
class Slot:
    """One place for a worker; its task keeps a worker serving in it."""

    supervisor: Supervisor
    current: Worker | None = None
    changed: trio.Event = attrs.field(factory=trio.Event)
    first_ready: trio.Event = attrs.field(factory=trio.Event)
    leaving: bool = False
    #: Rolling-restart requests waiting for this slot; each is set when handled.
    replace_requests: list[trio.Event] = attrs.field(factory=list)
    #: Under --reload, after a failed start: start again only on the next change.
    waiting_for_change: bool = False

    def wake(self) -> None:
        self.changed.set()

    async def replace(self) -> None:
        """Replace this slot's worker gracefully (or start one) and wait until that is done."""
        if self.leaving:
            return
        done = trio.Event()
        self.replace_requests.append(done)
        self.wake()
        await done.wait()

    def _answer_replace_requests(self) -> None:
        for done in self.replace_requests:
            done.set()
        self.replace_requests.clear()

    async def run(self) -> None:
        supervisor = self.supervisor
        failures = 0
        while not (self.leaving or supervisor.stopping):
            if self.current is None:
                if self.waiting_for_change:
                    await self._wait()
                    if not self.replace_requests:
                        continue
                    self.waiting_for_change = False
                worker = await supervisor.start_worker(self.wake)
                self._answer_replace_requests()
                if worker.state is not WorkerState.EXITED:
                    self.current = worker
                    failures = 0
                    self.first_ready.set()
                    continue
                if not await supervisor.handle_start_failure(self, worker, failures):
                    return
                failures += 1
                continue
            await self._wait(self._replace_at(self.current))
            await self._follow(self.current)
        self._answer_replace_requests()
        # A slot removed before its first worker served must not hold up the banner.
        self.first_ready.set()
        if self.current is not None:
            await supervisor.retire(self.current)

    async def _wait(self, deadline: float = math.inf) -> None:
        with trio.move_on_at(deadline):
            await self.changed.wait()
        self.changed = trio.Event()

    def _replace_at(self, worker: Worker) -> float:
        lifetime = self.supervisor.config.workers_lifetime
        if lifetime is None or worker.state is not WorkerState.SERVING:
            return math.inf
        return worker.started_at + lifetime

    async def _follow(self, worker: Worker) -> None:
        """React to what happened to the current worker, or to a request about it."""
        supervisor = self.supervisor
        if worker.state is WorkerState.EXITED:
            if not supervisor.stopping:
                logger.warning(
                    "Worker [%d] %s; starting a replacement", worker.pid, worker.describe_exit()
                )
                supervisor.metrics.count_restart(
                    "unhealthy" if worker.killed_unhealthy else "crashed"
                )
            self.current = None
            return
        if worker.state is WorkerState.STOPPING:
            logger.info("Worker [%d] reached its request limit; starting a replacement", worker.pid)
            supervisor.metrics.count_restart("max_requests")
            self.current = None
            supervisor.workers_nursery.start_soon(supervisor.retire, worker)
            return
        if trio.current_time() >= self._replace_at(worker) and worker.replace_reason is None:
            worker.replace_reason = (
                f"it reached --workers-lifetime ({supervisor.config.workers_lifetime}s)"
            )
            worker.replace_cause = "lifetime"
        if worker.replace_reason is not None or self.replace_requests:
            await self._replace(worker)

    async def _replace(self, old: Worker) -> None:
        supervisor = self.supervisor
        async with supervisor.replacing:
            if self.leaving or supervisor.stopping or old.state is not WorkerState.SERVING:
                self._answer_replace_requests()
                return
            reason = old.replace_reason or "a restart was requested"
            logger.info("Replacing worker [%d]: %s", old.pid, reason)
            new = await supervisor.start_worker(self.wake)
            self._answer_replace_requests()
            if new.state is WorkerState.EXITED:
                logger.error(
                    "The replacement for worker [%d] %s; worker [%d] keeps serving",
                    old.pid,
                    new.describe_exit(),
                    old.pid,
                )
                old.replace_reason = None
                return
            self.current = new
            supervisor.metrics.count_restart(
                old.replace_cause or ("reload" if supervisor.config.reload else "restart")
            )
            supervisor.workers_nursery.start_soon(supervisor.retire, old)


class Supervisor:
    """Starts, watches, replaces and stops the workers; handles signals and reloads."""

    def __init__(self, config: Config, worker_config: Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.config_message = encode_config(worker_config)
        self.slots: list[Slot] = []
        self.workers: set[Worker] = set()
        self.stopped = trio.Event()
        self.ever_served = False
        self.exit_status = EXIT_OK
        self.replacing = trio.Lock()
        self.workers_nursery: trio.Nursery
        self.slots_nursery: trio.Nursery
        self.metrics = WorkerMetrics(self.workers, self.stopped)

    @property
    def stopping(self) -> bool:
        """A shutdown was asked for: slots retire their workers and start no more."""
        return self.stopped.is_set()

    async def run(self, addresses: list[str]) -> int:
        logger.info("Started supervisor process [%d]", os.getpid())
        async with trio.open_nursery() as services:
            services.start_soon(self._watch_signals, services)
            if self.config.metrics_bind is not None:
                await services.start(serve_metrics, self.config.metrics_bind, self.metrics)
            if self.config.workers_max_rss is not None:
                services.start_soon(self._watch_memory, self.config.workers_max_rss)
            if self.config.reload:
                # Watching starts before the first worker: if its code does not import,
                # the next change is what starts one.
                reload = importlib.import_module("palfrey.supervisor.reload")
                services.start_soon(reload.watch_for_changes, self.config, self.restart_all)
            async with trio.open_nursery() as workers:
                self.workers_nursery = workers
                async with trio.open_nursery() as slots:
                    self.slots_nursery = slots
                    for _ in range(self.config.worker_count):
                        self.add_slot()
                    services.start_soon(self._announce, addresses)
            services.cancel_scope.cancel()
        logger.info("Finished supervisor process [%d]", os.getpid())
        return self.exit_status

    async def _announce(self, addresses: list[str]) -> None:
        for slot in list(self.slots):
            await slot.first_ready.wait()
        if self.stopping:
            return
        self.ever_served = True
        log_banner(self.config, addresses)
        pids = [str(slot.current.pid) for slot in self.slots if slot.current is not None]
        logger.info(
            "Serving with %d worker process%s: %s",
            len(pids),
            "" if len(pids) == 1 else "es",
            ", ".join(pids),
        )

    def add_slot(self) -> None:
        slot = Slot(self)
        self.slots.append(slot)
        self.slots_nursery.start_soon(slot.run)

    def remove_slot(self) -> None:
        if len(self.slots) <= 1:
            logger.warning("Not removing the last worker")
            return
        slot = self.slots.pop()
        slot.leaving = True
        slot.wake()

    async def start_worker(self, on_change: Callable[[], None]) -> Worker:
        """Spawn a worker and wait until it serves, exits, or misses its start-up deadline."""
        worker = await spawn_worker(self.config_message, self.sockets, on_change)
        self.workers.add(worker)
        self.workers_nursery.start_soon(self._watch_worker, worker)
        # Lifespan startup has its own timeout; this bounds an import that never ends.
        start_limit = self.config.timeout_lifespan + START_MARGIN
        with trio.move_on_after(start_limit):
            await _first_of(worker.settled, self.stopped)
        if worker.state is WorkerState.STARTING and self.stopping:
            await self.retire(worker)
        elif worker.state is WorkerState.STARTING:
            logger.error(
                "Worker [%d] did not start within %gs; killing it", worker.pid, start_limit
            )
            worker.kill()
            await worker.exited.wait()
        elif worker.state is WorkerState.SERVING:
            logger.info("Worker [%d] is serving", worker.pid)
        return worker

    async def _watch_worker(self, worker: Worker) -> None:
        try:
            await worker.watch(self.config.timeout_worker_healthcheck)
        finally:
            self.workers.discard(worker)
            self.metrics.worker_exited(worker)

    async def handle_start_failure(self, slot: Slot, worker: Worker, failures: int) -> bool:
        """A worker exited before serving; returns whether the slot should try again."""
        status = worker.returncode
        if self.stopping:
            return False
        if self.config.reload:
            logger.error(
                "Worker [%d] %s during start-up; waiting for the next change",
                worker.pid,
                worker.describe_exit(),
            )
            slot.waiting_for_change = True
            return True
        if not self.ever_served:
            failed = EXIT_STARTUP_FAILED if status == EXIT_STARTUP_FAILED else EXIT_ERROR
            logger.error(
                "Worker [%d] %s during start-up; stopping", worker.pid, worker.describe_exit()
            )
            self.stop(failed)
            return False
        delay = min(BACKOFF_FIRST * 2**failures, BACKOFF_MAX)
        self.metrics.count_restart("start_failed")
        logger.error(
            "Worker [%d] %s during start-up; trying again in %.1fs",
            worker.pid,
            worker.describe_exit(),
            delay,
        )
        with trio.move_on_after(delay):
            await self.stopped.wait()
        return True

    async def retire(self, worker: Worker) -> None:
        """Stop a worker gracefully; kill it if it outlives its own shutdown bound."""
        worker.terminate()
        config = self.config
        with trio.move_on_after(
            config.timeout_graceful_shutdown + config.timeout_lifespan + KILL_MARGIN
        ):
            await worker.exited.wait()
        if not worker.exited.is_set():
            logger.error("Worker [%d] did not finish shutting down in time; killing it", worker.pid)
            worker.kill()
            await worker.exited.wait()
        if self.stopping and worker.returncode != 0:
            self.exit_status = self.exit_status or EXIT_ERROR

    def stop(self, status: int = EXIT_OK) -> None:
        """Shut every worker down gracefully and end the supervisor."""
        if status != EXIT_OK:
            self.exit_status = status
        self.stopped.set()
        for slot in self.slots:
            slot.wake()

    async def restart_all(self) -> None:
        """A rolling restart: each worker is replaced by a serving one, one at a time."""
        for slot in list(self.slots):
            if self.stopping:
                return
            await slot.replace()

    async def _watch_signals(self, services: trio.Nursery) -> None:
        wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
        with trio.open_signal_receiver(*wanted) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum in (signal.SIGINT, signal.SIGTERM):
                    if self.stopping and signum == signal.SIGINT:
                        logger.warning("Second interrupt: stopping the workers without waiting")
                        self.exit_status = EXIT_FORCED
                        for worker in list(self.workers):
                            worker.interrupt()
                        continue
                    logger.info("Received %s; shutting down the workers gracefully", name)
                    self.stop()
                elif self.stopping:
                    continue
                elif signum == signal.SIGHUP:
                    logger.info("Received SIGHUP; restarting the workers one at a time")
                    services.start_soon(self.restart_all)
                elif signum == signal.SIGTTIN:
                    logger.info("Received SIGTTIN; adding a worker (now %d)", len(self.slots) + 1)
                    self.add_slot()
                else:
                    logger.info("Received SIGTTOU; removing a worker")
                    self.remove_slot()

    async def _watch_memory(self, limit_mib: int) -> None:
        if resident_mib(os.getpid()) is None:
            logger.warning(
                "--workers-max-rss has no effect here: memory is read from /proc (Linux)"
            )
            return
        while True:
            await trio.sleep(MEMORY_CHECK_INTERVAL)
            for slot in self.slots:
                worker = slot.current
                if worker is None or worker.state is not WorkerState.SERVING:
                    continue
                if worker.replace_reason is not None:
                    continue
                used = resident_mib(worker.pid)
                if used is not None and used > limit_mib:
                    worker.replace_reason = (
                        f"its memory ({used:.0f} MiB) passed --workers-max-rss ({limit_mib} MiB)"
                    )
                    worker.replace_cause = "max_rss"
                    slot.wake()


async def _first_of(*events: trio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(_set_then_cancel, event, nursery.cancel_scope)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
