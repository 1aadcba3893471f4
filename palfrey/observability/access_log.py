"""The ``palfrey.access`` log: one line per HTTP request or WebSocket handshake.

Callers check :func:`enabled` first, so a server with the access log off
builds none of this. Each record's message is the line (Palfrey's own, or the
``--access-log-format`` chosen with :func:`use_format`), and its ``extra``
carries the request's fields (:data:`FIELDS`) for JSON lines and for
``--log-config`` formatters. The line itself is rendered only when a handler
formats the record: its arguments are computed lazily.
"""

from __future__ import annotations

import logging
from typing import Any

from palfrey.observability.access_format import (
    WEBSOCKET_METHOD,
    AccessEntry,
    AccessFormat,
    client,
    compile_format,
    protocol,
    target,
)

access_logger = logging.getLogger("palfrey.access")

#: The ``extra`` keys of every access record, in the order JSON lines show them.
FIELDS = (
    "method",
    "path",
    "query",
    "status",
    "bytes",
    "duration",
    "protocol",
    "client",
    "user_agent",
    "request_id",
)

_HTTP_LINE = '%s - "%s %s HTTP/%s" %d %d %.1fms'
_WEBSOCKET_LINE = '%s - "WebSocket %s" %d'

#: The ``--access-log-format`` in use; None for Palfrey's own lines.
_format: AccessFormat | None = None
#: Whether records carry :data:`FIELDS`: off only when Palfrey's own text
#: handler, which never reads them, is the only one (they cost about 2 µs a line).
_with_fields = True


def use_format(text: str | None, *, fields: bool = True) -> None:
    """Write access lines in ``text`` (gunicorn atoms) from now on; None for the default line.

    ``fields=False`` leaves the structured ``extra`` off the records.
    """
    global _format, _with_fields  # noqa: PLW0603 - the access log is process-wide, as logging is
    _format = None if text is None else compile_format(text)
    _with_fields = fields


def enabled() -> bool:
    return access_logger.isEnabledFor(logging.INFO)


def log_http(
    scope: dict[str, Any],
    status: int,
    size: int,
    duration: float,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Log one HTTP request; ``headers`` are the response's, for ``%({name}o)s``."""
    method = scope.get("method", "GET")
    extra = _fields(scope, method, status, size, duration) if _with_fields else None
    if _format is None:
        access_logger.info(
            _HTTP_LINE,
            client(scope) or "-",
            method,
            target(scope),
            scope["http_version"],
            status,
            size,
            duration * 1000,
            extra=extra,
        )
    else:
        entry = AccessEntry(scope, status, size, duration, headers)
        access_logger.info(_format.text, _format.atoms(entry), extra=extra)


def log_websocket(scope: dict[str, Any], status: int) -> None:
    """Log a WebSocket handshake's answer (101 accepted, or the HTTP status of a refusal).

    The line is written when the handshake is answered, so ``bytes`` and
    ``duration`` are 0, and the method is ``WebSocket``.
    """
    extra = _fields(scope, WEBSOCKET_METHOD, status, 0, 0.0) if _with_fields else None
    if _format is None:
        access_logger.info(
            _WEBSOCKET_LINE, client(scope) or "-", target(scope), status, extra=extra
        )
    else:
        entry = AccessEntry(scope, status, 0, 0.0)
        access_logger.info(_format.text, _format.atoms(entry), extra=extra)


def _fields(
    scope: dict[str, Any], method: str, status: int, size: int, duration: float
) -> dict[str, Any]:
    """The structured ``extra`` of an access record: one pass over the request headers."""
    user_agent = request_id = None
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"x-request-id":
            request_id = value.decode("latin-1")
    return {
        "method": method,
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "status": status,
        "bytes": size,
        "duration": duration,
        "protocol": protocol(scope),
        "client": client(scope),
        "user_agent": user_agent,
        "request_id": request_id,
    }
