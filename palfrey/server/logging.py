"""Logging set-up: stdlib ``logging``, synchronous, on ``palfrey.*`` loggers."""

from __future__ import annotations

import logging
import sys

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}


def configure_logging(level: str, *, access_log: bool, show_pid: bool = False) -> None:
    """Give the ``palfrey`` loggers a stderr handler unless the embedding program configured one.

    ``show_pid`` puts the process id on every line, so the lines of several
    workers (and their supervisor) can be told apart.
    """
    palfrey = logging.getLogger("palfrey")
    palfrey.setLevel(_LEVELS[level])
    if not palfrey.handlers:
        handler = logging.StreamHandler(sys.stderr)
        pid = "[%(process)d] " if show_pid else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {pid}%(message)s"))
        palfrey.addHandler(handler)
        palfrey.propagate = False
    access = logging.getLogger("palfrey.access")
    access.disabled = not access_log
