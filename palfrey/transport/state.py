"""State the server shares with every connection task."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from palfrey.asgi.headers import DefaultHeaders

if TYPE_CHECKING:
    from palfrey.asgi.types import ASGIApp
    from palfrey.config.schema import Config

logger = logging.getLogger("palfrey.error")


@attrs.define(slots=True, eq=False)
class ConnectionControl:
    """The handle the server keeps on one connection to close it when idle at shutdown."""

    #: Wraps the connection's request loop; cancelled to end a wait for a request
    #: head (timeout or shutdown). One scope serves every request of the connection.
    waiting_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    #: When the current wait for a request head times out (keep-alive or head
    #: timeout), infinite otherwise; enforced by ``expire_waiting_connections``.
    deadline: float = math.inf
    #: True while the connection waits for a request head.
    idle: bool = False
    #: Set while the connection carries a WebSocket: closes it with 1012 at shutdown.
    on_shutdown: Callable[[], None] | None = None

    def close_if_idle(self) -> None:
        if self.idle:
            self.waiting_scope.cancel()


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

    def count_request(self) -> None:
        """Count a request; the one that reaches ``--limit-max-requests`` starts the shutdown."""
        self.total_requests += 1
        if self.max_requests is not None and self.total_requests >= self.max_requests:
            if not self.shutdown_requested.is_set():
                logger.info("Maximum request limit of %d reached; shutting down", self.max_requests)
            self.request_shutdown()

    def request_shutdown(self) -> None:
        """Ask the server to stop; the server task runs the actual shutdown sequence."""
        self.shutdown_requested.set()

    @property
    def stopping(self) -> bool:
        """Shutdown was asked for: finish what is in flight, start nothing new."""
        return self.shutdown_requested.is_set()

    def begin_shutdown(self) -> None:
        """Close every idle connection (and every WebSocket, with 1012)."""
        for control in list(self.connections):
            control.close_if_idle()
            if control.on_shutdown is not None:
                control.on_shutdown()
