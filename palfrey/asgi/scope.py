"""Building ASGI ``http`` and ``websocket`` scopes from a parsed request head."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

Address = tuple[str, int] | tuple[str, None] | None


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into (raw path, query string).

    Absolute-form targets (RFC 9112 §3.2.2) keep only their path; the
    asterisk-form ``*`` (OPTIONS) is kept as the path.
    """
    raw_path, _, query = target.partition(b"?")
    if raw_path[:1] not in (b"/", b"*"):
        scheme_end = raw_path.find(b"://")
        if scheme_end != -1:
            slash = raw_path.find(b"/", scheme_end + 3)
            raw_path = raw_path[slash:] if slash != -1 else b"/"
    return raw_path, query


def accepts_trailers(headers: Any) -> bool:
    """Whether the request's ``te`` field lists ``trailers`` (RFC 9110 §10.1.4)."""
    for name, value in headers:
        if name == b"te":
            for item in value.lower().split(b","):
                if item.partition(b";")[0].strip() == b"trailers":
                    return True
    return False


def http_scope(
    *,
    method: bytes,
    target: bytes,
    headers: Any,
    http_version: str,
    scheme: str,
    client: Address,
    server: Address,
    root_path: str,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """A fresh ``http`` scope; ``path`` includes ``root_path`` as Uvicorn does since 0.26.

    A WebSocket handshake starts as this scope too (see ``websocket_scope``).
    """
    raw_path, query = split_target(target)
    path = raw_path.decode("ascii")
    if "%" in path:
        path = unquote(path)
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root_path,
        "headers": list(headers),
        "client": client,
        "server": server,
        "method": method.decode("ascii"),
        "extensions": {},
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope
