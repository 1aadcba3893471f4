"""The one ASGI app every server in the HTTP benchmarks serves.

Plain ASGI 3 with no library calls, so it runs unchanged on trio (Palfrey,
Hypercorn ``-k trio``) and asyncio (Uvicorn, Hypercorn ``-k asyncio``):

* ``GET /plaintext``: 13 bytes with ``content-length`` (the TechEmpower shape).
* ``POST /echo``: reads the whole body and sends it back.
* ``GET /stream``: 1 MiB as 16 body messages of 64 KiB, with ``content-length``.
"""

from __future__ import annotations

from typing import Any

HELLO = b"Hello, world!"
STREAM_CHUNK = b"x" * (64 * 1024)
STREAM_CHUNKS = 16
PLAIN_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
STREAM_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", b"%d" % (len(STREAM_CHUNK) * STREAM_CHUNKS)),
]
NOT_FOUND = {"type": "http.response.start", "status": 404, "headers": PLAIN_HEADERS[:1]}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/plaintext":
        await send({"type": "http.response.start", "status": 200, "headers": PLAIN_HEADERS})
        await send({"type": "http.response.body", "body": HELLO})
    elif path == "/echo":
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(b"content-type", b"application/octet-stream")]
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        for _ in range(STREAM_CHUNKS - 1):
            await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": STREAM_CHUNK})
    else:
        await send(NOT_FOUND)
        await send({"type": "http.response.body", "body": b""})
