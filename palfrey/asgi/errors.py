"""Exceptions the bridge raises into applications."""

from __future__ import annotations


class ClientDisconnected(OSError):
    """``send()`` was called after the client went away (ASGI spec 2.4)."""
