"""The lifespan protocol around serving: order, state, failures and the three modes."""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from h1_client import WAIT, ok_app

import palfrey
from palfrey.asgi.lifespan import LifespanFailure
from palfrey.transport.errors import BindError

Scope = dict[str, Any]

#: ``--timeout-lifespan``'s default; tests that wait for it run on the autojumping mock clock.
LIFESPAN_TIMEOUT = 60.0


def lifespan_app(
    events: list[str],
    *,
    startup: str = "lifespan.startup.complete",
    shutdown: str = "lifespan.shutdown.complete",
    message: str | None = None,
) -> Any:
    """An app that records lifespan and request events and answers ``startup``/``shutdown``."""

    def reply(kind: str) -> dict[str, str]:
        return {"type": kind} if message is None else {"type": kind, "message": message}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            events.append(f"scope {scope['asgi']['version']} {scope['asgi'].get('spec_version')}")
            assert (await receive())["type"] == "lifespan.startup"
            scope["state"]["greeting"] = "hello"
            events.append("startup")
            await send(reply(startup))
            if startup != "lifespan.startup.complete":
                return
            assert (await receive())["type"] == "lifespan.shutdown"
            events.append("shutdown")
            await send(reply(shutdown))
            return
        events.append("request")
        body = scope["state"].get("greeting", "-").encode()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": body})

    return app


async def get(url: str) -> httpx.Response:
    with trio.fail_after(WAIT):
        async with httpx.AsyncClient() as client:
            return await client.get(url)


async def serve_directly(app: Any, *, wait: float = WAIT, **options: Any) -> None:
    """Run :func:`palfrey.serve` to completion (it must fail or be shut down within ``wait``)."""
    config = palfrey.Config(app=app, host="127.0.0.1", port=0, **options)
    with trio.fail_after(wait):
        await palfrey.serve(app, config)


async def test_startup_before_serving_and_shutdown_after(serve: Any) -> None:
    events: list[str] = []
    async with serve(lifespan_app(events)) as srv:
        assert events == ["scope 3.0 2.0", "startup"]
        response = await get(srv.url)
        assert response.text == "hello"
    assert events == ["scope 3.0 2.0", "startup", "request", "shutdown"]


async def test_shutdown_waits_for_in_flight_requests(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    inner = lifespan_app(events)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await trio.sleep(0.2)
            events.append("request done")
        await inner(scope, receive, send)

    async with serve(app) as srv, trio.open_nursery() as nursery:
        nursery.start_soon(get, srv.url)
        # The mock clock moves only when every task waits: the request is in the app by then.
        await trio.sleep(0.05)
        srv.shutdown()
    assert events[-3:] == ["request done", "request", "shutdown"]


async def test_startup_failed_raises(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    app = lifespan_app(events, startup="lifespan.startup.failed", message="database down")
    with pytest.raises(LifespanFailure, match="database down"):
        await serve_directly(app)
    assert "request" not in events


async def test_startup_timeout_raises(autojump_clock: trio.testing.MockClock) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await trio.sleep_forever()

    start = trio.current_time()
    with pytest.raises(LifespanFailure, match="timed out after 60"):
        await serve_directly(app, timeout_lifespan=LIFESPAN_TIMEOUT, wait=LIFESPAN_TIMEOUT + WAIT)
    assert trio.current_time() - start == pytest.approx(LIFESPAN_TIMEOUT)


async def test_auto_serves_an_app_that_rejects_lifespan(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http here")
        await ok_app(scope, receive, send)

    with caplog.at_level(logging.INFO, logger="palfrey"):
        async with serve(app, lifespan="auto") as srv:
            assert (await get(srv.url)).text == "ok"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("unsupported" in r.getMessage() for r in caplog.records)


async def test_on_fails_for_an_app_that_rejects_lifespan() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("only http here")

    with pytest.raises(LifespanFailure):
        await serve_directly(app, lifespan="on")


async def test_on_fails_for_an_app_that_returns_without_answering() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(LifespanFailure):
        await serve_directly(app, lifespan="on")


async def test_off_never_calls_the_app_for_lifespan(serve: Any) -> None:
    scopes: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        await ok_app(scope, receive, send)

    async with serve(app, lifespan="off") as srv:
        await get(srv.url)
    assert scopes == ["http"]


async def test_shutdown_failed_is_logged(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    app = lifespan_app(events, shutdown="lifespan.shutdown.failed", message="flush failed")
    with caplog.at_level(logging.ERROR, logger="palfrey"):
        async with serve(app):
            pass
    assert events[-1] == "shutdown"
    assert any("flush failed" in r.getMessage() for r in caplog.records)


async def test_exception_during_shutdown_is_logged(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("shutdown exploded")

    with caplog.at_level(logging.INFO, logger="palfrey"):
        async with serve(app):
            pass
    assert any("shutdown exploded" in str(r.exc_info) for r in caplog.records)
    assert not any("shutdown complete" in r.getMessage() for r in caplog.records)


async def test_bind_failure_still_runs_lifespan_shutdown() -> None:
    events: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = palfrey.Config(host="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(BindError, match="address already in use"), trio.fail_after(WAIT):
            await palfrey.serve(lifespan_app(events), config)
    assert events[-2:] == ["startup", "shutdown"]


async def test_shutdown_timeout_does_not_hang(
    serve: Any, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await trio.sleep_forever()

    with (
        trio.fail_after(LIFESPAN_TIMEOUT + WAIT),
        caplog.at_level(logging.ERROR, logger="palfrey"),
    ):
        async with serve(app, timeout_lifespan=LIFESPAN_TIMEOUT):
            stopping = trio.current_time()
        stopped = trio.current_time()
    assert stopped - stopping == pytest.approx(LIFESPAN_TIMEOUT)
    assert any("timed out after 60" in r.getMessage() for r in caplog.records)


async def test_unexpected_lifespan_message_raises_in_the_app() -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "lifespan.startup.done"})
        except RuntimeError as exc:
            raised.append(exc)
            raise

    with pytest.raises(LifespanFailure):
        await serve_directly(app, lifespan="on")
    assert len(raised) == 1
