"""The bundled demo app: shows what the server saw of the request."""

from __future__ import annotations

import html
import json
from typing import Any

from palfrey.asgi.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _echo_websocket(receive, send)
        return
    body_size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body_size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    info: dict[str, Any] = {
        "method": scope["method"],
        "path": scope["path"],
        "query_string": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "client": scope["client"],
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        "body_bytes": body_size,
    }
    wants_json = any(
        name == b"accept" and b"application/json" in value for name, value in scope["headers"]
    )
    if wants_json:
        body = json.dumps(info, indent=2).encode()
        content_type = b"application/json"
    else:
        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in info.items()
        )
        body = (
            f"<!doctype html><title>Palfrey</title><h1>Hello from Palfrey</h1><table>{rows}</table>"
        ).encode()
        content_type = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _echo_websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")}
        )
