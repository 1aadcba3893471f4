"""WebSockets over HTTP/2 streams (RFC 8441): placeholder while in progress."""

from __future__ import annotations

from typing import Any


async def h2_websocket(stream: Any, scope: dict[str, Any]) -> None:
    return None
