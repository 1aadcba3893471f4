"""State the server shares with every connection task."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from palfrey.asgi.headers import DefaultHeaders
from palfrey.observability.metrics import Metrics, Snapshot, by_label

if TYPE_CHECKING:
    from palfrey.asgi.types import ASGIApp
    from palfrey.config.schema import Config

logger = logging.getLogger("palfrey.error")

#: Seconds a connection accepted just before shutdown has to send its first request.
FIRST_REQUEST_GRACE = 1.0


@attrs.define(slots=True, eq=False)
class ConnectionControl:
    """The server's handle on one connection, the same whatever protocol it speaks.

    The server never looks inside a connection: the timeout sweep calls
    :meth:`expire` once :attr:`deadline` has passed, shutdown calls
    :meth:`shutdown`, and :attr:`open_streams` says how much work is in
    flight. HTTP/1.1 ends its wait for the next request head on either; a
    protocol with streams of its own (a WebSocket today, HTTP/2 next) hooks
    :attr:`on_shutdown` to say goodbye in its own terms (close 1012, GOAWAY).
    """

    #: Wraps the connection's request loop; cancelled to end a wait for a request
    #: head (timeout or shutdown). One scope serves every request of the connection.
    waiting_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    #: When the current idle wait (keep-alive or request head) times out,
    #: infinite otherwise; enforced by ``expire_waiting_connections``.
    deadline: float = math.inf
    #: True while the connection waits for a request head.
    idle: bool = False
    #: True while that head is the connection's first: shutdown then gives it
    #: FIRST_REQUEST_GRACE instead of closing it.
    awaiting_first_request: bool = False
    #: Requests (streams) being served on the connection now.
    open_streams: int = 0
    #: Called at shutdown while the connection carries a protocol of its own.
    on_shutdown: Callable[[], None] | None = None
    #: What the connection speaks (``http/1.1``, ``h2``, ``h3``, ``websocket``), for metrics.
    protocol: str = "http/1.1"

    def expire(self) -> None:
        """The idle deadline passed: stop waiting for a request."""
        self.waiting_scope.cancel()

    def shutdown(self) -> None:
        """The server is stopping: end an idle wait now, and tell any protocol on top.

        A keep-alive connection between requests is closed at once (a client
        retries a request that crosses the close, RFC 9112 §9.3.1). A
        connection still waiting for its first request was accepted moments
        ago, typically with the request already on its way; closing it would
        fail that request, which is what a rolling restart must never do, so
        it gets a short grace to deliver it (answered with ``connection:
        close``).
        """
        if self.idle:
            if self.awaiting_first_request:
                self.deadline = min(self.deadline, trio.current_time() + FIRST_REQUEST_GRACE)
            else:
                self.waiting_scope.cancel()
        if self.on_shutdown is not None:
            self.on_shutdown()


@attrs.define(slots=True, eq=False)
class ServerState:
    """What every connection reads: the app, the config and the shutdown flag."""

    app: ASGIApp
    config: Config
    defaults: DefaultHeaders
    limiter: trio.CapacityLimiter | None = None
    lifespan_state: dict[str, Any] = attrs.Factory(dict)
    max_requests: int | None = None
    total_requests: int = 0
    connections: set[ConnectionControl] = attrs.Factory(set)
    shutdown_requested: trio.Event = attrs.Factory(trio.Event)
    #: Set when --limit-max-requests started the shutdown: a supervisor then starts a replacement.
    limit_reached: trio.Event = attrs.Factory(trio.Event)
    #: Counted only with ``--metrics-bind``; None costs the hot path nothing.
    metrics: Metrics | None = None
    #: Lifespan startup completed and the listeners accept: ``/readyz`` answers 200
    #: until shutdown begins.
    serving: trio.Event = attrs.Factory(trio.Event)
    #: Shutdown was asked for: finish what is in flight, start nothing new. The
    #: plain-attribute twin of ``shutdown_requested``, which every request reads.
    stopping: bool = False

    def count_request(self) -> None:
        """Count a request; the one that reaches ``--limit-max-requests`` starts the shutdown."""
        self.total_requests += 1
        if self.max_requests is not None and self.total_requests >= self.max_requests:
            if not self.stopping:
                logger.info("Maximum request limit of %d reached; shutting down", self.max_requests)
                self.limit_reached.set()
            self.request_shutdown()

    def request_shutdown(self) -> None:
        """Ask the server to stop; the server task runs the actual shutdown sequence."""
        self.stopping = True
        self.shutdown_requested.set()

    def begin_shutdown(self) -> None:
        """Tell every connection the server is stopping."""
        for control in list(self.connections):
            control.shutdown()

    @property
    def ready(self) -> bool:
        """Serving and not stopping: a load balancer may send traffic."""
        return self.serving.is_set() and not self.stopping

    def count_server_response(self, status: int) -> None:
        """Palfrey answered a request itself; counted for ``palfrey_server_responses_total``."""
        if self.metrics is not None:
            self.metrics.server_response(status)

    def count_timeout(self, kind: str) -> None:
        """A wait on a client was given up; counted for ``palfrey_timeouts_total``."""
        if self.metrics is not None:
            self.metrics.timeout(kind)

    def metrics_snapshot(self) -> Snapshot:
        """This process's metrics, with the gauges read off the open connections."""
        metrics = self.metrics if self.metrics is not None else Metrics()
        connections: dict[str, int] = {}
        streams: dict[str, int] = {}
        for control in self.connections:
            if not control.protocol:
                continue
            connections[control.protocol] = connections.get(control.protocol, 0) + 1
            if control.protocol in ("h2", "h3"):
                streams[control.protocol] = streams.get(control.protocol, 0) + control.open_streams
        snapshot = metrics.snapshot()
        snapshot["palfrey_connections_open"] = by_label(connections, "protocol")
        snapshot["palfrey_streams_open"] = by_label(streams, "protocol")
        return snapshot

    @property
    def open_streams(self) -> int:
        """Requests and WebSockets in flight on every connection."""
        return sum(control.open_streams for control in self.connections)
