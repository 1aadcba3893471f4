"""Exceptions the bridge raises into applications."""

from __future__ import annotations


class ClientDisconnected(OSError):  # noqa: N818 - the name Uvicorn and Starlette users know
    """``send()`` was called after the client went away (ASGI spec 2.4)."""
