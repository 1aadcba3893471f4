"""Keep-alive and request-head timeouts: one sweep for the whole server.

A connection waiting for a request head records when that wait must end in
:attr:`ConnectionControl.deadline`, a plain float, and this task cancels the
connection's :meth:`~ConnectionControl.expire` once the time has passed.
Moving a trio deadline costs a heap push and a context manager each time,
twice per request (set it when the wait starts, clear it when the head
arrives), a visible share of a keep-alive request (docs/performance.md). A
float costs nothing, and one task checking every connection a few times a
second costs nothing per request.

Timeouts fire up to one sweep interval late: a tenth of the shortest of
the two timeouts, between 10 ms and 0.5 s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from palfrey.transport.state import ServerState

MIN_SWEEP_INTERVAL = 0.01
MAX_SWEEP_INTERVAL = 0.5


def sweep_interval(keep_alive: float, request_header: float) -> float:
    """How often to look: a tenth of the shortest timeout, within sensible bounds."""
    return min(max(min(keep_alive, request_header) / 10, MIN_SWEEP_INTERVAL), MAX_SWEEP_INTERVAL)


async def expire_waiting_connections(state: ServerState) -> None:
    """Cancel the wait of every connection whose keep-alive or head deadline has passed."""
    config = state.config
    interval = sweep_interval(config.timeout_keep_alive, config.timeout_request_header)
    while True:
        await trio.sleep(interval)
        now = trio.current_time()
        for control in state.connections:
            if control.deadline <= now:
                control.expire()
