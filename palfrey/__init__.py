"""Palfrey: an ASGI server built natively on trio and structured concurrency.

``Config``, ``run`` and ``serve`` are resolved on first use (PEP 562) rather
than imported here: every ``import palfrey.<anything>`` runs this module first,
and an eager import of the server would make ``import palfrey.config`` pull in
trio, h11 and the whole server, and close an import cycle through the command
line's version flag.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from palfrey._version import __version__

if TYPE_CHECKING:
    from palfrey.cli import run
    from palfrey.config.schema import Config
    from palfrey.server.server import serve

__all__ = ["Config", "__version__", "run", "serve"]

#: Public name -> the module that defines it.
_LAZY = {
    "Config": "palfrey.config.schema",
    "run": "palfrey.cli",
    "serve": "palfrey.server.server",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the lazy names too, so completion and ``dir(palfrey)`` show the public API."""
    return sorted({*globals(), *__all__})
