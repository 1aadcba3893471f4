"""Apps imported by the subprocess tests (``--app-dir tests``)."""

from __future__ import annotations

import os
import time

import trio


async def slow(scope, receive, send):
    """Answers after 0.5 s, so a signal can arrive while the request is in flight."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        print("lifespan shutdown ran", flush=True)
        await send({"type": "lifespan.shutdown.complete"})
        return
    await trio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"finished"})


async def stuck(scope, receive, send):
    """Never answers HTTP requests."""
    if scope["type"] == "lifespan":
        return
    await trio.sleep_forever()


async def failing_startup(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})


not_an_app = "I am a string"


_held: list[bytes] = []


async def pid(scope, receive, send):
    """Answers with the serving process's pid, so tests can tell the workers apart.

    ``/hold?SECONDS`` first blocks the worker's event loop (``time.sleep``), so that
    the connections that follow are accepted by the other workers.
    """
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/hold":
        time.sleep(float(scope["query_string"] or b"0.3"))
    if scope["path"] == "/grow":
        # Resident memory (written bytes, not calloc'd zeros) held until the worker exits.
        _held.append(b"x" * (int(scope["query_string"]) * 1024 * 1024))
    body = str(os.getpid()).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
