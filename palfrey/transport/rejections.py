"""Logging the requests Palfrey turns away itself, without letting a flood fill the disk.

An operator wants to see who is sending malformed, oversized or slow requests
(400, 408, 413, 414, 431, 505), so each is logged at INFO on ``palfrey.error``
with the client's address and the reason. A client can send thousands of bad
requests a second, though, so at most :data:`LINES_PER_SECOND` lines are
written per one-second window in each process; the rest are counted and
reported as one "suppressed" line. Having no timer of its own, the limiter
writes that line with the first rejection of a later window.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import attrs

from palfrey.asgi.scope import Address

logger = logging.getLogger("palfrey.error")

#: The statuses that mean the client sent something Palfrey would not serve.
LOGGED_STATUSES = frozenset((400, 408, 413, 414, 431, 505))
#: Rejection lines written per second per process before they are only counted.
LINES_PER_SECOND = 10


def format_client(client: Address) -> str:
    """``host:port``, ``[v6]:port``, a Unix socket's path, or ``unknown``."""
    if client is None:
        return "unknown"
    host, port = client
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@attrs.define(slots=True)
class RejectionLog:
    """A one-second-window rate limit on rejection log lines."""

    per_second: int = LINES_PER_SECOND
    clock: Callable[[], float] = time.monotonic
    _window_start: float = -math.inf
    _logged: int = 0
    _suppressed: int = 0

    def record(self, status: int, client: Address, reason: str) -> None:
        """Log one rejection, or count it once this window's lines are used up."""
        if status not in LOGGED_STATUSES:
            return
        now = self.clock()
        if now - self._window_start >= 1.0:
            if self._suppressed:
                logger.info("Suppressed %d more rejected request log lines", self._suppressed)
            self._window_start = now
            self._logged = 0
            self._suppressed = 0
        if self._logged < self.per_second:
            self._logged += 1
            logger.info(
                "Rejected a request from %s with %d: %s", format_client(client), status, reason
            )
        else:
            self._suppressed += 1


#: The process's limiter: a flood is one flood whichever connection it arrives on.
REJECTIONS = RejectionLog()
