"""Exceptions the bridge raises into applications."""

from __future__ import annotations


class ClientDisconnected(OSError):
    """The client is gone, or the server stopped serving this request (ASGI spec 2.4).

    Raised by ``send()`` (and by a WSGI app's reads and writes) so the
    application unwinds; it is an ``OSError`` as the spec requires.
    """
