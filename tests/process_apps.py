"""Apps imported by the subprocess tests (``--app-dir tests``)."""

from __future__ import annotations

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
