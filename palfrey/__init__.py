"""Palfrey: an ASGI server built natively on trio and structured concurrency."""

from __future__ import annotations

from palfrey.config.schema import Config
from palfrey.server.runner import run
from palfrey.server.server import serve

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "run", "serve"]
