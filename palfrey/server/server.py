"""The server task: one root nursery that owns lifespan, listeners and connections.

Shutdown — from a signal, ``--limit-max-requests`` or cancellation of
:func:`serve` — always takes the same path: stop accepting, close idle
connections, give in-flight requests ``--timeout-graceful-shutdown`` seconds,
cancel what is left, then run lifespan shutdown.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import socket
import ssl
import sys
from typing import Any

import trio

from palfrey.asgi.asyncio_bridge import open_app_loop
from palfrey.asgi.headers import DefaultHeaders
from palfrey.asgi.interfaces import wrap_app
from palfrey.asgi.lifespan import Lifespan, LifespanFailure
from palfrey.asgi.proxy_headers import ProxyHeadersMiddleware
from palfrey.asgi.types import ASGIApp
from palfrey.config.schema import Config
from palfrey.observability.metrics import Metrics, Snapshot
from palfrey.server.metrics_endpoint import serve_metrics
from palfrey.transport.errors import BindError, ServeError, TLSSetupError
from palfrey.transport.listeners import describe, open_listeners, remove_socket_files
from palfrey.transport.protocol_select import alpn_protocols, h1_protocol_class, protocol_names
from palfrey.transport.quic import open_quic_endpoints
from palfrey.transport.socket_stream import SocketListener
from palfrey.transport.state import ServerState
from palfrey.transport.tcp import accept_connections
from palfrey.transport.timeouts import expire_waiting_connections
from palfrey.transport.tls import create_ssl_context

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger("palfrey.error")


class Server:
    """One serving run of an ASGI 3 app with a validated :class:`Config`."""

    def __init__(
        self, app: ASGIApp, config: Config, *, sockets: list[socket.socket] | None = None
    ) -> None:
        """``sockets``, when given, are listening sockets a supervisor bound and handed down:
        the server then serves those instead of binding, binds HTTP/3 with
        ``SO_REUSEPORT`` beside its sibling workers, and leaves the banner to
        the supervisor."""
        self.config = config
        self.sockets = sockets
        if config.proxy_headers:
            app = ProxyHeadersMiddleware(app, config.trusted_proxies)
        max_requests = config.limit_max_requests
        if max_requests is not None and config.limit_max_requests_jitter:
            max_requests += random.randint(0, config.limit_max_requests_jitter)
        self.state = ServerState(
            app=app,
            config=config,
            defaults=DefaultHeaders(
                server_header=config.server_header,
                date_header=config.date_header,
                extra=config.extra_headers(),
            ),
            limiter=(
                trio.CapacityLimiter(config.limit_concurrency)
                if config.limit_concurrency is not None
                else None
            ),
            max_requests=max_requests,
            metrics=Metrics() if config.metrics_bind is not None else None,
        )
        #: ``--limit-connections``: one pool for every listener, so the cap is per process.
        self._connection_slots = (
            trio.CapacityLimiter(config.limit_connections)
            if config.limit_connections is not None
            else None
        )
        self.forced = False
        #: ``http://host:port`` of the ``--metrics-bind`` listener once it listens.
        self.metrics_url: str | None = None
        self._startup_scope: trio.CancelScope | None = None
        self._root_scope: trio.CancelScope | None = None

    def request_shutdown(self) -> None:
        """Start a graceful shutdown; safe to call at any time, any number of times."""
        self.state.request_shutdown()
        if self._startup_scope is not None:
            self._startup_scope.cancel()

    def force_exit(self) -> None:
        """Cancel everything now, skipping the graceful wait and lifespan shutdown."""
        self.forced = True
        self.request_shutdown()
        if self._root_scope is not None:
            self._root_scope.cancel()

    async def serve(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until shut down; cancelling the caller's scope shuts down gracefully.

        The server runs shielded so that cancellation from outside only
        *requests* the shutdown; the shutdown itself is bounded by the
        graceful timeout and the lifespan timeout.
        """
        failure: BaseException | None = None
        async with trio.open_nursery() as guard:
            guard.start_soon(self._shutdown_when_cancelled)
            with trio.CancelScope(shield=True):
                try:
                    async with open_app_loop(self.config.loop):
                        await self._run(handle_signals, task_status)
                except BaseExceptionGroup as group:
                    failure = _startup_failure(group)
                    if failure is None:
                        raise
            guard.cancel_scope.cancel()
        if failure is not None:
            # Raised bare, outside every nursery, so callers can catch it by type.
            raise failure

    async def _shutdown_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.request_shutdown()

    async def _run(self, handle_signals: bool, task_status: trio.TaskStatus[list[str]]) -> None:
        config = self.config
        state = self.state
        async with trio.open_nursery() as root:
            self._root_scope = root.cancel_scope
            if handle_signals:
                root.start_soon(self._watch_signals)
            ssl_context = self._ssl_context()
            if config.metrics_bind is not None and self.sockets is None:
                # Up before lifespan startup: /healthz answers and /readyz says 503 meanwhile.
                self.metrics_url = await root.start(
                    serve_metrics, config.metrics_bind, ServerMetrics(state)
                )
            if config.http not in ("h2", "h3"):
                # A missing httptools fails here, before any connection.
                h1_protocol_class(config.http)
            lifespan = Lifespan(
                state.app,
                mode=config.lifespan,
                timeout=config.timeout_lifespan,
                state=state.lifespan_state,
            )
            with trio.CancelScope() as startup_scope:
                self._startup_scope = startup_scope
                if state.shutdown_requested.is_set():
                    startup_scope.cancel()
                await lifespan.startup(root)
            self._startup_scope = None
            if startup_scope.cancelled_caught:
                root.cancel_scope.cancel()
                return
            listeners: list[SocketListener] = []
            in_worker = self.sockets is not None
            try:
                if self.sockets is not None:
                    listeners = [
                        SocketListener(sock, skip_redundant_yields=True) for sock in self.sockets
                    ]
                elif config.http != "h3":
                    listeners = await open_listeners(config)
                endpoints = (
                    await open_quic_endpoints(config, reuse_port=in_worker)
                    if config.serves_http3
                    else []
                )
            except (BindError, TLSSetupError):
                for listener in listeners:
                    listener.socket.close()
                # Startup ran, so the app gets its shutdown before we give up.
                await lifespan.shutdown()
                raise
            # In the root nursery: head timeouts still apply during the graceful shutdown.
            root.start_soon(expire_waiting_connections, state)
            async with trio.open_nursery() as connections:
                listening = trio.CancelScope()
                connections.start_soon(self._accept, listening, listeners, connections, ssl_context)
                # Beside the listeners, not under ``listening``: an endpoint keeps carrying
                # its connections' datagrams through the graceful shutdown.
                for endpoint in endpoints:
                    connections.start_soon(endpoint.run, state, connections)
                if endpoints and listeners:
                    self._advertise_http3(endpoints[0].address[1])
                addresses = [
                    describe(listener, tls=ssl_context is not None) for listener in listeners
                ] + [endpoint.describe() for endpoint in endpoints]
                logger.info("Started server process [%d]", os.getpid())
                if not in_worker:
                    log_banner(self.config, addresses)
                state.serving.set()
                task_status.started(addresses)
                await state.shutdown_requested.wait()
                listening.cancel()
                state.begin_shutdown()
                logger.info("Shutting down; waiting for %d open streams", state.open_streams)
                connections.cancel_scope.deadline = (
                    trio.current_time() + config.timeout_graceful_shutdown
                )
            if connections.cancel_scope.cancelled_caught:
                logger.warning(
                    "Cancelled in-flight requests after the %ss graceful shutdown timeout",
                    config.timeout_graceful_shutdown,
                )
            await lifespan.shutdown()
            root.cancel_scope.cancel()
        if not in_worker:
            remove_socket_files(config)
        logger.info("Finished server process [%d]", os.getpid())

    async def _accept(
        self,
        listening: trio.CancelScope,
        listeners: list[SocketListener],
        connections: trio.Nursery,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        with listening:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(
                        functools.partial(accept_connections, slots=self._connection_slots),
                        listener,
                        self.state,
                        ssl_context,
                        connections,
                    )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.is_ssl or self.config.http == "h3":
            return None
        return create_ssl_context(self.config, alpn_protocols(self.config.http))

    def _advertise_http3(self, port: int) -> None:
        """Every TCP response names the HTTP/3 port (RFC 7838 ``alt-svc``, RFC 9114 §3.1.1),
        which is how a browser finds HTTP/3; an app's own ``alt-svc`` wins (a default)."""
        defaults = self.state.defaults
        defaults.extra = [*defaults.extra, (b"alt-svc", f'h3=":{port}"; ma=86400'.encode())]
        defaults.invalidate()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.state.shutdown_requested.is_set() and signum == signal.SIGINT:
                    logger.warning("Second interrupt: exiting without waiting")
                    self.force_exit()
                    return
                logger.info("Received %s; shutting down gracefully", signal.Signals(signum).name)
                self.request_shutdown()


class ServerMetrics:
    """What ``--metrics-bind`` reports for a single serving process."""

    __slots__ = ("state",)

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def collect(self) -> Snapshot:
        await trio.lowlevel.checkpoint()
        return self.state.metrics_snapshot()

    def healthy(self) -> bool:
        # Answering at all proves the serving loop runs: the listener lives in it.
        return True

    def ready(self) -> bool:
        return self.state.ready


def log_banner(config: Config, addresses: list[str]) -> None:
    """The lines that tell a user what is served where (the supervisor's banner too)."""
    logger.info("Protocols: %s", protocol_names(config))
    for address in addresses:
        shown = address
        if address.startswith("quic://"):
            shown = "https://" + address.removeprefix("quic://") + " (HTTP/3, UDP)"
        logger.info("Palfrey running on %s (Press CTRL+C to quit)", shown)


def _startup_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The user-facing start-up error a group carries, if that is all it carries."""
    matched, rest = group.split((LifespanFailure, ServeError))
    if matched is None or rest is not None:
        return None
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


async def serve(
    app: Any,
    config: Config,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI 3 ``app`` inside the caller's trio program.

    Use ``await nursery.start(palfrey.serve, app, config)`` to get the bound
    addresses back once the server accepts connections; cancel the
    surrounding scope to shut it down gracefully. Signals stay the caller's.
    """
    asgi_app, _ = wrap_app(
        app, config.interface, loop=config.loop, wsgi_threads=config.wsgi_threads
    )
    await Server(asgi_app, config).serve(task_status=task_status)
