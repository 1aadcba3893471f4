"""Graceful shutdown in-process: cancelling :func:`palfrey.serve` and ``--limit-max-requests``.

Tests that wait for a slow request or the graceful timeout run on trio's autojumping
mock clock: server and client share one trio run, so when every task waits the clock
jumps to the next deadline, and ``trio.current_time()`` says when the server acted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from h1_client import (
    WAIT,
    RawClient,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    ok_app,
    request,
)

import palfrey
from palfrey.transport.state import FIRST_REQUEST_GRACE

Scope = dict[str, Any]


@attrs.define
class Served:
    """A :func:`palfrey.serve` task in its own cancel scope, so tests can cancel just it."""

    url: str
    scope: trio.CancelScope
    finished: trio.Event

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def connect(self) -> RawClient:
        with trio.fail_after(WAIT):
            return RawClient(await trio.open_tcp_stream("127.0.0.1", self.port))

    async def wait_finished(self, timeout: float = WAIT) -> float:
        """Wait for serve() to return; how long that took."""
        start = trio.current_time()
        with trio.fail_after(timeout):
            await self.finished.wait()
        return trio.current_time() - start


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Served]:
    config = palfrey.Config(app=app, host="127.0.0.1", port=0, **options)
    scope = trio.CancelScope()
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            with scope:
                await palfrey.serve(app, config, task_status=task_status)
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(run)
        yield Served(url, scope, finished)
        scope.cancel()


async def test_in_flight_request_finishes_after_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    entered = trio.Event()
    busy = 3.0  # well within the default 30 s graceful timeout

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        await trio.sleep(busy)
        await ok_app(scope, receive, send)

    async with serving(app, lifespan="off") as served:
        client = await served.connect()
        await client.send(request())
        with trio.fail_after(WAIT):
            await entered.wait()
        cancelled_at = trio.current_time()
        served.scope.cancel()
        response = await client.read_response()
        assert response.body == b"ok"
        assert response.header(b"connection") == b"close"
        await client.assert_closed()
        await served.wait_finished()
        # serve() returned as soon as the request was done, not at the graceful timeout.
        assert trio.current_time() - cancelled_at == pytest.approx(busy)
        await client.aclose()


async def test_idle_keep_alive_connections_close_at_once() -> None:
    async with serving(ok_app, timeout_keep_alive=30) as served:
        idle = await served.connect()
        await idle.send(request())
        assert (await idle.read_response()).status == 200
        served.scope.cancel()
        await idle.assert_closed(timeout=1)
        assert await served.wait_finished() < 1
        await idle.aclose()


async def test_a_fresh_connection_gets_a_grace_for_its_first_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection accepted as shutdown begins usually has its request on the way:
    closing it would fail that request (what a rolling restart must avoid)."""
    async with serving(ok_app, timeout_keep_alive=30, lifespan="off") as served:
        late = await served.connect()
        silent = await served.connect()
        await trio.sleep(0.1)
        cancelled_at = trio.current_time()
        served.scope.cancel()
        await trio.sleep(FIRST_REQUEST_GRACE / 2)
        await late.send(request())
        response = await late.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        await late.assert_closed()
        # A connection that sends nothing is closed once the grace (plus one sweep) is over.
        await silent.assert_closed(timeout=FIRST_REQUEST_GRACE + 1)
        await served.wait_finished()
        assert FIRST_REQUEST_GRACE <= trio.current_time() - cancelled_at < FIRST_REQUEST_GRACE + 1
        await late.aclose()
        await silent.aclose()


async def test_graceful_timeout_cancels_a_stuck_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    entered = trio.Event()
    cancelled = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    grace = 30.0
    async with serving(app, lifespan="off", timeout_graceful_shutdown=grace) as served:
        client = await served.connect()
        await client.send(request())
        with trio.fail_after(WAIT):
            await entered.wait()
        served.scope.cancel()
        elapsed = await served.wait_finished(timeout=grace + WAIT)
        assert elapsed == pytest.approx(grace)
        assert cancelled.is_set()
        await client.assert_closed(timeout=1)
        await client.aclose()


async def test_request_shutdown_lets_lifespan_shutdown_run_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await trio.sleep(0.2)
        events.append("request finished")
        await ok_app(scope, receive, send)

    async with serving(app) as served:
        client = await served.connect()
        await client.send(request())
        # The mock clock moves only when every task waits: the request is in the app by then.
        await trio.sleep(0.05)
        served.scope.cancel()
        assert (await client.read_response()).status == 200
        await served.wait_finished()
        await client.aclose()
    assert events == ["request finished", "lifespan shutdown"]


async def test_limit_max_requests_shuts_down() -> None:
    async with serving(ok_app, limit_max_requests=2) as served:
        client = await served.connect()
        await client.send(request())
        first = await client.read_response()
        assert first.header(b"connection") is None
        await client.send(request())
        second = await client.read_response()
        assert second.status == 200
        assert second.header(b"connection") == b"close"
        await client.assert_closed()
        assert await served.wait_finished() < 1
        await client.aclose()


async def test_limit_max_requests_jitter_adds_up_to_n_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    picked: list[tuple[int, int]] = []

    def randint(low: int, high: int) -> int:
        picked.append((low, high))
        return high

    monkeypatch.setattr("palfrey.server.server.random.randint", randint)
    async with serving(ok_app, limit_max_requests=1, limit_max_requests_jitter=2) as served:
        client = await served.connect()
        for _ in range(2):
            await client.send(request())
            assert (await client.read_response()).header(b"connection") is None
        await client.send(request())
        assert (await client.read_response()).header(b"connection") == b"close"
        await client.assert_closed()
        assert await served.wait_finished() < 1
        await client.aclose()
    assert picked == [(0, 2)]


async def test_new_connections_are_refused_during_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    entered = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            entered.set()
            await trio.sleep(0.5)
        await ok_app(scope, receive, send)

    async with serving(app, lifespan="off") as served:
        slow = await served.connect()
        await slow.send(request(target="/slow"))
        with trio.fail_after(WAIT):
            await entered.wait()
        served.scope.cancel()
        # The mock clock moves only when every task waits: the server has acted on the cancel.
        await trio.sleep(0.05)
        # The listener closes at once, so a load balancer can fail over immediately.
        with pytest.raises(OSError):
            await served.connect()
        assert (await slow.read_response()).status == 200
        await served.wait_finished()
        await slow.aclose()
