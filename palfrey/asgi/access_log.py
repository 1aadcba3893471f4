"""The ``palfrey.access`` log: one line per HTTP request or WebSocket handshake.

Callers check :func:`enabled` first, so a server with the access log off
builds none of these strings.
"""

from __future__ import annotations

import logging
from typing import Any

access_logger = logging.getLogger("palfrey.access")


def enabled() -> bool:
    return access_logger.isEnabledFor(logging.INFO)


def log_http(scope: dict[str, Any], status: int, size: int, duration: float) -> None:
    client, target = _client_and_target(scope)
    access_logger.info(
        '%s - "%s %s HTTP/%s" %d %d %.1fms',
        client,
        scope.get("method", "GET"),
        target,
        scope["http_version"],
        status,
        size,
        duration * 1000,
    )


def log_websocket(scope: dict[str, Any], status: int) -> None:
    client, target = _client_and_target(scope)
    access_logger.info('%s - "WebSocket %s" %d', client, target, status)


def _client_and_target(scope: dict[str, Any]) -> tuple[str, str]:
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    target = scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    return address, target
