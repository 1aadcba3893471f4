"""``--reload``: watch the source tree with watchfiles and ask for a rolling restart on changes.

The watcher runs in the supervisor's trio program (watchfiles speaks anyio,
which runs on trio); its blocking wait happens in one thread that a stop
event ends, so shutting down never waits for the next file event.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

try:
    import watchfiles
except ImportError:  # pragma: no cover - depends on the environment
    from palfrey.transport.errors import ServeError

    raise ServeError(
        "--reload needs the watchfiles package: pip install 'palfrey[reload]'"
    ) from None

from palfrey.config.schema import Config

logger = logging.getLogger("palfrey.error")

DEFAULT_INCLUDE = ("*.py",)
#: How long the watch thread may block before it looks at the stop event, in milliseconds.
WATCH_TIMEOUT_MS = 500


class ReloadFilter(watchfiles.DefaultFilter):
    """watchfiles' defaults (dot-directories, ``__pycache__``, editor files) plus the globs."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        super().__init__()
        self.include = tuple(include) or DEFAULT_INCLUDE
        self.exclude = tuple(exclude)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        parts = Path(path).parts
        name = parts[-1]
        if any(fnmatch.fnmatch(part, glob) for glob in self.exclude for part in parts):
            return False
        return any(fnmatch.fnmatch(name, glob) for glob in self.include)


def watched_directories(config: Config) -> list[str]:
    """``--reload-dir`` entries, else the app directory; each made absolute."""
    directories = config.reload_dir or [config.app_dir]
    return [os.path.abspath(directory) for directory in directories]


async def watch_for_changes(config: Config, restart: Callable[[], Awaitable[None]]) -> None:
    """Call ``restart`` after each burst of changes, until cancelled."""
    directories = watched_directories(config)
    logger.info("Watching for changes in: %s", ", ".join(directories))
    stop = threading.Event()
    quiet_ms = max(50, int(config.reload_delay * 1000))
    try:
        async for changes in watchfiles.awatch(
            *directories,
            watch_filter=ReloadFilter(config.reload_include, config.reload_exclude),
            step=quiet_ms,
            debounce=max(1600, quiet_ms * 4),
            rust_timeout=WATCH_TIMEOUT_MS,
            stop_event=stop,
        ):
            names = sorted({os.path.relpath(path) for _change, path in changes})
            logger.warning("Detected changes in %s; reloading", ", ".join(names))
            await restart()
    finally:
        stop.set()
