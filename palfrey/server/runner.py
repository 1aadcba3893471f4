"""Running a server in this process: load the app, serve it, turn failures into exit statuses.

User mistakes (bad app, port in use, failed startup) end with one line on
stderr and a non-zero exit status, never a traceback. The command line uses
:func:`run_config` for a single process; a supervisor's worker uses
:func:`serve_process` with the sockets it inherited.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Awaitable, Callable

import trio

from palfrey.asgi.interfaces import AppInterfaceError, prepare_loop, wrap_app
from palfrey.asgi.lifespan import LifespanFailure
from palfrey.config.errors import ConfigError
from palfrey.config.importer import load_app
from palfrey.config.schema import Config
from palfrey.server.logging import configure_logging
from palfrey.server.pidfile import pid_file
from palfrey.server.server import Server
from palfrey.transport.errors import ServeError

logger = logging.getLogger("palfrey.error")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STARTUP_FAILED = 3
#: A second Ctrl+C cut the graceful shutdown short: 128 + SIGINT, as a shell reports it.
EXIT_FORCED = 130


def run_config(config: Config) -> int:
    """Load the app named by ``config`` and serve it in this process; returns the exit status."""
    configure_logging(config)
    try:
        with pid_file(config.pid):
            return serve_process(config, _serve_with_signals)
    except ServeError as exc:
        logger.error("%s", exc)
        return EXIT_ERROR


def serve_process(
    config: Config,
    main: Callable[[Server], Awaitable[None]],
    *,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Import the app, then ``trio.run(main, server)``; returns the exit status."""
    try:
        prepare_loop(config.loop)
        app, interface = wrap_app(
            load_app(config),
            config.interface,
            loop=config.loop,
            wsgi_threads=config.wsgi_threads,
            name=config.app if isinstance(config.app, str) else None,
        )
    except (ConfigError, AppInterfaceError) as exc:
        print(f"palfrey: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    logger.info("Application interface: %s", interface)
    server = Server(app, config, sockets=sockets)
    try:
        trio.run(main, server)
    except LifespanFailure as exc:
        logger.error("Application startup failed: %s", exc)
        return EXIT_STARTUP_FAILED
    except ServeError as exc:
        logger.error("%s", exc)
        return EXIT_ERROR
    return EXIT_FORCED if server.forced else EXIT_OK


async def _serve_with_signals(server: Server) -> None:
    await server.serve(handle_signals=True)
