"""HTTP/2 under load and at its limits: many streams, big bodies both ways, flow-control
windows, timeouts, graceful shutdown, and the per-stream limits.

Tests that wait for a timeout run on trio's autojumping mock clock: server and
client share one trio run, so when every task waits the clock jumps to the next
deadline and ``trio.current_time()`` says when the server acted.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from conftest import RunningServer
from h1_client import no_connection_crashes  # noqa: F401 - autouse fixture
from h2_client import (
    WAIT,
    ErrorCodes,
    SettingCodes,
    get_headers,
    h2_connect,
)
from hyperframe.frame import DataFrame

import palfrey
from palfrey.asgi.interfaces import wrap_app
from palfrey.protocols.h2 import MAX_STREAM_ID
from palfrey.server.server import Server

Scope = dict[str, Any]
MiB = 1024 * 1024


@attrs.define
class Served:
    """A running server and an event set once ``serve()`` returned."""

    srv: RunningServer
    finished: trio.Event

    async def wait_finished(self, timeout: float = WAIT) -> None:
        with trio.fail_after(timeout):
            await self.finished.wait()


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Served]:
    config = palfrey.Config(app=app, host="127.0.0.1", port=0, lifespan="off", **options)
    asgi_app, _ = wrap_app(app, config.interface, loop=config.loop, wsgi_threads=1)
    server = Server(asgi_app, config)
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await server.serve(task_status=task_status)
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(run)
        yield Served(RunningServer(addresses, server, nursery.cancel_scope), finished)
        server.request_shutdown()


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes."""
    block = hashlib.sha256(b"palfrey").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def read_all(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class App:
    """Paths: ``/slow`` waits for :attr:`release`; ``/echo`` streams the body back chunk by
    chunk; ``/bytes/N`` sends N bytes in 64 KiB chunks; ``/read`` reads the body and answers
    its length; anything else answers ``ok <path>``."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.started.append(path)
        try:
            await self.serve(path, receive, send)
        except trio.Cancelled:
            self.cancelled.append(path)
            raise

    async def serve(self, path: str, receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if path == "/slow":
            await self.release.wait()
            await send(start)
            await send({"type": "http.response.body", "body": b"slow done"})
        elif path == "/echo":
            await send(start)
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                more = message.get("more_body", False)
                await send(
                    {"type": "http.response.body", "body": message["body"], "more_body": more}
                )
                if not more:
                    return
        elif path.startswith("/bytes/"):
            data = pattern(int(path.rsplit("/", 1)[1]))
            await send(start)
            for offset in range(0, len(data), 65536):
                chunk = data[offset : offset + 65536]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/read":
            body = await read_all(receive)
            await send(start)
            await send({"type": "http.response.body", "body": b"read %d" % len(body)})
        else:
            await send(start)
            await send({"type": "http.response.body", "body": f"ok {path}".encode()})


async def assert_h2_serving(srv: RunningServer) -> None:
    async with h2_connect(srv) as client:
        result = await client.get("/fresh")
    assert result.status == 200
    assert bytes(result.body) == b"ok /fresh"


# Many streams, big bodies.


async def test_100_concurrent_streams_with_one_slow() -> None:
    app = App()
    async with serving(app) as served, h2_connect(served.srv) as client:
        slow = client.request(get_headers("/slow"))
        fast = [client.request(get_headers(f"/fast/{index}")) for index in range(99)]
        await client.run_until(lambda: all(client.streams[i].done for i in fast))
        # All 99 answered while the slow one is still being worked on: no head-of-line blocking.
        assert not client.streams[slow].done
        for index, stream_id in enumerate(fast):
            result = client.streams[stream_id]
            assert result.status == 200
            assert bytes(result.body) == f"ok /fast/{index}".encode()
        app.release.set()
        result = await client.response(slow)
        assert bytes(result.body) == b"slow done"
        assert client.finished[-1] == slow
        assert client.goaways == []


async def test_10MiB_up_and_down_on_one_stream_while_others_progress() -> None:
    app = App()
    upload = pattern(10 * MiB)
    async with serving(app) as served, h2_connect(served.srv) as client:
        big = client.request(get_headers("/echo", method="POST"), upload)
        download = client.request(get_headers(f"/bytes/{10 * MiB}"))
        result = client.streams[big]
        await client.run_until(lambda: len(result.body) >= MiB, timeout=20)
        # Other streams get through while both big transfers are in flight.
        small = [client.request(get_headers(f"/small/{index}")) for index in range(10)]
        await client.run_until(lambda: all(client.streams[i].done for i in small), timeout=20)
        assert not result.done
        assert not client.streams[download].done
        assert [client.streams[i].status for i in small] == [200] * 10
        await client.run_until(lambda: result.done and client.streams[download].done, timeout=30)
        assert result.ended
        assert len(result.body) == len(upload)
        assert hashlib.sha256(result.body).digest() == hashlib.sha256(upload).digest()
        downloaded = client.streams[download]
        assert downloaded.ended
        assert (
            hashlib.sha256(downloaded.body).digest() == hashlib.sha256(pattern(10 * MiB)).digest()
        )


async def test_one_byte_initial_window() -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE=1: the server sends one byte per DATA frame, waiting
    for each WINDOW_UPDATE, and the response still arrives whole."""
    app = App()
    size = 300
    async with (
        serving(app) as served,
        h2_connect(
            served.srv, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1}, window="exact"
        ) as client,
    ):
        result = await client.get(f"/bytes/{size}", timeout=20)
        assert result.ended
        assert bytes(result.body) == pattern(size)
        data_frames = [f for f in client.frames if isinstance(f, DataFrame) and f.data]
        assert len(data_frames) == size
        assert all(len(f.data) == 1 for f in data_frames)
        assert bytes((await client.get("/after")).body) == b"ok /after"
        assert client.goaways == []


async def test_connection_window_shared_by_streams() -> None:
    """The server's stream bodies together never exceed the client's connection window:
    with the client handing back nothing, 4 streams of 64 KiB get 65535 bytes in all."""
    app = App()
    async with (
        serving(app) as served,
        h2_connect(
            served.srv,
            settings={SettingCodes.INITIAL_WINDOW_SIZE: 2**20},
            window="none",
        ) as client,
    ):
        ids = [client.request(get_headers(f"/bytes/{65536}")) for _ in range(4)]

        def received() -> int:
            return sum(len(client.streams[i].body) for i in ids)

        await client.run_until(lambda: received() >= 65535)
        with trio.move_on_after(0.2):
            await client.run_until(lambda: received() > 65535)
        assert received() == 65535
        client.window = "exact"
        client.conn.increment_flow_control_window(4 * 65536)
        await client.run_until(lambda: all(client.streams[i].done for i in ids))
        assert all(bytes(client.streams[i].body) == pattern(65536) for i in ids)


# Timeouts.


async def test_send_timeout_resets_only_the_stuck_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    async with (
        serving(app, timeout_send=10, timeout_keep_alive=600) as served,
        h2_connect(
            served.srv, settings={SettingCodes.INITIAL_WINDOW_SIZE: 10}, window="none"
        ) as client,
    ):
        stuck = client.request(get_headers("/bytes/100"))
        await client.run_until(lambda: len(client.streams[stuck].body) == 10)
        started = trio.current_time()
        await client.run_until(lambda: client.streams[stuck].done, timeout=30)
        assert client.streams[stuck].reset == ErrorCodes.CANCEL
        assert trio.current_time() - started == pytest.approx(10, abs=0.5)
        # The connection itself is fine: a short response fits in a fresh window.
        result = await client.get("/x")
        assert bytes(result.body) == b"ok /x"
        assert client.goaways == []


async def test_keep_alive_timeout_sends_goaway_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    async with serving(app, timeout_keep_alive=7) as served, h2_connect(served.srv) as client:
        await client.get("/one")
        done_at = trio.current_time()
        await client.until_closed(timeout=30)
        assert trio.current_time() - done_at == pytest.approx(7, abs=1)
        assert client.goaway_codes() == [ErrorCodes.NO_ERROR]
        assert client.goaways[-1].last_stream_id == 1
        await assert_h2_serving(served.srv)


async def test_idle_connection_without_request_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    async with (
        serving(app, timeout_request_header=4, timeout_keep_alive=100) as served,
        h2_connect(served.srv) as client,
    ):
        opened = trio.current_time()
        await client.until_closed(timeout=30)
        assert trio.current_time() - opened == pytest.approx(4, abs=1)
        assert client.goaway_codes() == [ErrorCodes.NO_ERROR]
        assert client.goaways[-1].last_stream_id == 0


async def test_request_body_timeout_is_408(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    async with (
        serving(app, timeout_request_body=6, timeout_keep_alive=100) as served,
        h2_connect(served.srv) as client,
    ):
        stalled = client.request(get_headers("/read", method="POST"), b"part", end=False)
        result = await client.response(stalled, timeout=30)
        assert result.status == 408
        assert bytes((await client.get("/after")).body) == b"ok /after"


# Graceful shutdown.


async def test_shutdown_sends_goaway_to_an_idle_connection() -> None:
    app = App()
    async with serving(app, timeout_keep_alive=60) as served, h2_connect(served.srv) as client:
        assert bytes((await client.get("/one")).body) == b"ok /one"
        served.srv.shutdown()
        await client.until_closed()
        # Two-step GOAWAY (RFC 9113 §6.8): the first names the highest stream id, the
        # last (once the PING came back) the last stream served.
        assert client.goaway_codes()[-1] == ErrorCodes.NO_ERROR
        assert client.goaways[0].last_stream_id == MAX_STREAM_ID
        assert client.goaways[-1].last_stream_id == 1
        await served.wait_finished()


async def test_shutdown_lets_the_busy_stream_finish() -> None:
    app = App()
    async with serving(app) as served, h2_connect(served.srv) as client:
        busy = client.request(get_headers("/slow"))
        await client.run_until(lambda: app.started == ["/slow"])
        served.srv.shutdown()
        await client.run_until(lambda: any(g.last_stream_id == 1 for g in client.goaways))
        # A stream opened after the final GOAWAY is not served.
        late = client.request(get_headers("/late"))
        await client.run_until(lambda: client.streams[late].done, timeout=0.5, eof_ok=True)
        assert not client.closed
        app.release.set()
        result = await client.response(busy)
        assert result.ended
        assert bytes(result.body) == b"slow done"
        await client.until_closed()
        assert app.started == ["/slow"]
        assert client.streams[late].status is None
        assert client.goaway_codes()[-1] == ErrorCodes.NO_ERROR
        await served.wait_finished()


async def test_shutdown_deadline_with_a_client_that_never_opens_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    grace = 3.0
    async with (
        serving(app, timeout_graceful_shutdown=grace, timeout_send=600) as served,
        h2_connect(
            served.srv, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, window="none"
        ) as client,
    ):
        stuck = client.request(get_headers(f"/bytes/{MiB}"))
        await client.run_until(lambda: client.streams[stuck].headers is not None)
        asked = trio.current_time()
        served.srv.shutdown()
        await served.wait_finished(timeout=grace + WAIT)
        assert trio.current_time() - asked == pytest.approx(grace, abs=0.5)
        assert app.cancelled == [f"/bytes/{MiB}"]
        await client.until_closed()
        assert not client.streams[stuck].ended
        assert ErrorCodes.NO_ERROR in client.goaway_codes()


# Limits.


async def test_header_list_over_the_limit_is_431_and_the_connection_goes_on() -> None:
    app = App()
    async with (
        serving(app, h2_max_header_list_size=1024) as served,
        h2_connect(served.srv) as client,
    ):
        await client.run_until(lambda: client.settings_acked)
        big = get_headers("/big", extra=[(b"x-big", b"v" * 2000)])
        result = await client.response(client.request(big))
        assert result.status == 431
        assert bytes((await client.get("/after")).body) == b"ok /after"
        assert client.goaways == []
        assert app.started == ["/after"]


async def test_header_list_far_over_the_limit_ends_the_connection() -> None:
    app = App()
    async with serving(app, h2_max_header_list_size=1024) as served:
        async with h2_connect(served.srv) as client:
            await client.run_until(lambda: client.settings_acked)
            client.request(get_headers("/huge", extra=[(b"x-big", b"v" * 8000)]))
            await client.until_closed()
            assert client.goaways and client.goaways[-1].error_code != ErrorCodes.NO_ERROR
        assert app.started == []
        await assert_h2_serving(served.srv)


async def test_limit_concurrency_answers_503_per_stream() -> None:
    app = App()
    async with serving(app, limit_concurrency=1) as served, h2_connect(served.srv) as client:
        slow = client.request(get_headers("/slow"))
        await client.run_until(lambda: app.started == ["/slow"])
        refused = await client.response(client.request(get_headers("/second")))
        assert refused.status == 503
        assert refused.ended
        app.release.set()
        assert bytes((await client.response(slow)).body) == b"slow done"
        assert bytes((await client.get("/third")).body) == b"ok /third"


async def test_limit_request_body_is_413() -> None:
    app = App()
    async with serving(app, limit_request_body=1000) as served, h2_connect(served.srv) as client:
        result = await client.response(
            client.request(get_headers("/read", method="POST"), b"x" * 5000)
        )
        assert result.status == 413
        ok = await client.response(client.request(get_headers("/read", method="POST"), b"x" * 1000))
        assert bytes(ok.body) == b"read 1000"
        assert client.goaways == []


async def test_streams_over_max_concurrent_streams_are_refused() -> None:
    """A stream over ``h2_max_concurrent_streams`` gets RST_STREAM REFUSED_STREAM (a stream
    error, RFC 9113 §5.1.2), even before the client acknowledged the SETTINGS that announced
    the limit: the limit is kept out of h2, which would make it a connection error. The
    connection goes on, and the slot is free again once a stream ends."""
    app = App()
    async with (
        serving(app, h2_max_concurrent_streams=2) as served,
        h2_connect(served.srv, raw=True) as client,
    ):
        # Sent right after the preface, before the server's SETTINGS were even read.
        ids = [client.request(get_headers("/slow")) for _ in range(3)]
        await client.run_until(lambda: client.streams[ids[2]].done)
        assert client.streams[ids[2]].reset == ErrorCodes.REFUSED_STREAM
        assert client.server_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 2
        assert app.started == ["/slow", "/slow"]
        app.release.set()
        await client.run_until(lambda: client.streams[ids[0]].done and client.streams[ids[1]].done)
        assert [client.streams[i].status for i in ids[:2]] == [200, 200]
        result = await client.response(client.request(get_headers("/after")))
        assert bytes(result.body) == b"ok /after"
        assert client.goaways == []


async def test_shutdown_serves_streams_sent_before_the_goaway_ping_was_answered() -> None:
    """Two-step GOAWAY: a request that crossed the first GOAWAY (sent before the client
    answered its PING) is served, and the final GOAWAY names it."""
    app = App()
    async with serving(app) as served, h2_connect(served.srv, raw=True) as client:
        await client.run_until(lambda: client.settings_acked)
        client.answer_control = False
        served.srv.shutdown()
        await client.run_until(lambda: client.goaways)
        assert client.goaways[0].last_stream_id == MAX_STREAM_ID
        crossing = client.request(get_headers("/crossing"))
        result = await client.response(crossing)
        assert bytes(result.body) == b"ok /crossing"
        ping = next(f for f in client.frames if type(f).__name__ == "PingFrame")
        client.queue_frame(type(ping)(0, opaque_data=ping.opaque_data, flags={"ACK"}))
        await client.until_closed()
        assert client.goaways[-1].last_stream_id == crossing
        assert client.goaway_codes()[-1] == ErrorCodes.NO_ERROR


async def test_keep_alive_timeout_does_not_cut_a_long_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    async with serving(app, timeout_keep_alive=2) as served, h2_connect(served.srv) as client:
        slow = client.request(get_headers("/slow"))
        await client.run_until(lambda: app.started == ["/slow"])
        with trio.move_on_after(20):
            await client.run_until(lambda: client.closed, timeout=30)
        assert not client.closed
        assert client.goaways == []
        app.release.set()
        assert bytes((await client.response(slow)).body) == b"slow done"
        # Then the idle deadline applies again.
        done_at = trio.current_time()
        await client.until_closed(timeout=30)
        assert trio.current_time() - done_at == pytest.approx(2, abs=1)


async def test_limit_max_requests_counts_streams() -> None:
    app = App()
    async with serving(app, limit_max_requests=3) as served, h2_connect(served.srv) as client:
        ids = [client.request(get_headers(f"/{index}")) for index in range(3)]
        await client.run_until(lambda: all(client.streams[i].done for i in ids))
        assert [client.streams[i].status for i in ids] == [200] * 3
        await client.until_closed()
        assert client.goaway_codes()[-1] == ErrorCodes.NO_ERROR
        await served.wait_finished()
