"""Shared fixtures: a real Palfrey server on 127.0.0.1 port 0, in the test's own nursery."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from tls_cert import Certificate, make_certificate

import palfrey
from palfrey.asgi.interfaces import wrap_app
from palfrey.observability import access_log
from palfrey.server.server import Server

#: The loggers ``configure_logging`` (and a ``--log-config`` file) set up; "" is the root.
LOGGERS = ("", "palfrey", "palfrey.access", "palfrey.error")


#: Variables outside Palfrey's own that change what a default means; a test that needs
#: one sets it itself, so none leaks in from the machine that runs the suite.
FOREIGN_VARIABLES = ("FORWARDED_ALLOW_IPS", "WEB_CONCURRENCY")


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in FOREIGN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Whatever configures logging in-process (``configure_logging``, ``run_config``)
    changes process-wide loggers: put them back, so no test sees another's set-up."""
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for logger in map(logging.getLogger, LOGGERS)
    ]
    yield
    for logger, handlers, level, propagate, disabled in saved:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled
    access_log.use_format(None)


@attrs.define
class RunningServer:
    """A server started by :func:`run_server`; ``url`` is its first address."""

    addresses: list[str]
    server: Server
    cancel_scope: trio.CancelScope

    @property
    def url(self) -> str:
        return self.addresses[0]

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def shutdown(self) -> None:
        self.server.request_shutdown()


@asynccontextmanager
async def run_server(app: Any, **options: Any) -> AsyncIterator[RunningServer]:
    """Serve ``app`` for the duration of the block; options are :class:`palfrey.Config` fields."""
    options.setdefault("port", 0)
    options.setdefault("host", "127.0.0.1")
    config = palfrey.Config(app=app, **options)
    asgi_app, _ = wrap_app(
        app, config.interface, loop=config.loop, wsgi_threads=config.wsgi_threads
    )
    server = Server(asgi_app, config)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(lambda task_status: server.serve(task_status=task_status))
        running = RunningServer(addresses, server, nursery.cancel_scope)
        yield running
        server.request_shutdown()


@pytest.fixture(params=["h11", "httptools"])
def serve(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``async with serve(app, **options) as srv:`` starts a real server on an ephemeral port.

    Every test using it runs once per HTTP/1.1 parser, so both handlers are held to
    the same behaviour; a test that passes ``http=`` itself picks one.
    """

    def serve_with_parser(app: Any, **options: Any) -> Any:
        options.setdefault("http", request.param)
        return run_server(app, **options)

    return serve_with_parser


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """One self-signed certificate for every TLS test in the run."""
    return make_certificate(tmp_path_factory.mktemp("tls"))
