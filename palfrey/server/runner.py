"""Running a server as a process: the CLI's ``run_config`` and the scripting ``palfrey.run``.

User mistakes (bad app, port in use, failed startup) end with one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import trio

from palfrey.asgi.interfaces import AppInterfaceError, prepare_loop, wrap_app
from palfrey.asgi.lifespan import LifespanFailure
from palfrey.config.errors import ConfigError
from palfrey.config.importer import load_app
from palfrey.config.schema import Config
from palfrey.server.logging import configure_logging
from palfrey.server.server import Server
from palfrey.transport.errors import ServeError

logger = logging.getLogger("palfrey.error")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STARTUP_FAILED = 3


def run_config(config: Config) -> int:
    """Load the app named by ``config`` and serve it until shutdown; returns the exit status."""
    configure_logging(config.log_level, access_log=config.access_log)
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
    server = Server(app, config)
    try:
        trio.run(_serve_with_signals, server)
    except LifespanFailure as exc:
        logger.error("Application startup failed: %s", exc)
        return EXIT_STARTUP_FAILED
    except ServeError as exc:
        logger.error("%s", exc)
        return EXIT_ERROR
    return EXIT_OK


async def _serve_with_signals(server: Server) -> None:
    await server.serve(handle_signals=True)


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an object or an import string) with Uvicorn-style keyword options.

    Exits the process with a non-zero status if serving could not start.
    """
    try:
        config = Config(app=app, **options)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"palfrey: error: {exc}") from None
    status = run_config(config)
    if status != EXIT_OK:
        raise SystemExit(status)
