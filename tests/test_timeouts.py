"""The server-wide sweep that ends waits for a request head."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from palfrey.asgi.headers import DefaultHeaders
from palfrey.config.schema import Config
from palfrey.transport.state import ConnectionControl, ServerState
from palfrey.transport.timeouts import (
    MAX_SWEEP_INTERVAL,
    MIN_SWEEP_INTERVAL,
    expire_waiting_connections,
    sweep_interval,
)


@pytest.mark.parametrize(
    ("keep_alive", "header", "expected"),
    [
        (5.0, 10.0, MAX_SWEEP_INTERVAL),  # the defaults: checked twice a second
        (1.0, 10.0, 0.1),
        (10.0, 0.3, 0.03),
        (0.0, 10.0, MIN_SWEEP_INTERVAL),  # keep-alive 0 still does not spin
    ],
)
def test_sweep_interval_is_a_tenth_of_the_shortest_timeout(
    keep_alive: float, header: float, expected: float
) -> None:
    assert sweep_interval(keep_alive, header) == pytest.approx(expected)


async def test_only_waits_past_their_deadline_are_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(app=lambda *_: None, timeout_keep_alive=5.0, timeout_request_header=10.0)
    interval = sweep_interval(5.0, 10.0)
    state = ServerState(app=config.app, config=config, defaults=DefaultHeaders())
    expired, waiting, busy = ConnectionControl(), ConnectionControl(), ConnectionControl()
    now = trio.current_time()
    expired.deadline = now + 5
    waiting.deadline = now + 30
    busy.deadline = math.inf  # serving a request: no head deadline
    state.connections.update((expired, waiting, busy))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expire_waiting_connections, state)
        # Virtual time: the sweep's ticks and these wake-ups fall exactly where set.
        await trio.sleep_until(now + 5 - interval / 2)
        assert not expired.waiting_scope.cancel_called  # not before its deadline
        await trio.sleep_until(now + 5 + interval * 1.5)
        nursery.cancel_scope.cancel()
    assert expired.waiting_scope.cancel_called  # at most one sweep late
    assert not waiting.waiting_scope.cancel_called
    assert not busy.waiting_scope.cancel_called
