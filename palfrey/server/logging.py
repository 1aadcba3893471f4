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


def configure_logging(level: str, *, access_log: bool) -> None:
    """Give the ``palfrey`` loggers a stderr handler unless the embedding program configured one."""
    palfrey = logging.getLogger("palfrey")
    palfrey.setLevel(_LEVELS[level])
    if not palfrey.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        palfrey.addHandler(handler)
        palfrey.propagate = False
    access = logging.getLogger("palfrey.access")
    access.disabled = not access_log
