"""Which HTTP/1.1 handler class serves connections, from the ``http`` option."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from palfrey.protocols.h11 import H1Protocol
from palfrey.transport.errors import ServeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from palfrey.protocols.base import ProtocolHandler

    HandlerFactory = Callable[..., ProtocolHandler]


@functools.cache
def h1_protocol_class(http: str) -> HandlerFactory:
    """``"h11"``, ``"httptools"`` (which must be installed) or ``"auto"`` (httptools if it imports).

    Cached, so the import is attempted once per process rather than per connection.
    Calling it at start-up makes a missing httptools fail before any connection.
    """
    if http == "h11":
        return H1Protocol
    try:
        from palfrey.protocols.httptools import H1HttpToolsProtocol  # noqa: PLC0415
    except ImportError as exc:
        if http == "httptools":
            raise ServeError(
                f"--http httptools needs the httptools package: pip install 'palfrey[fast]' ({exc})"
            ) from None
        return H1Protocol
    return H1HttpToolsProtocol


def parser_name(handler: HandlerFactory) -> str:
    """How the start-up banner names the handler class :func:`h1_protocol_class` chose."""
    return "h11" if handler is H1Protocol else "httptools"
