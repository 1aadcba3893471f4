"""The ASGI lifespan protocol (spec 2.0): startup before serving, shutdown after."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

from palfrey.asgi.types import ASGIApp, Message

logger = logging.getLogger("palfrey.error")


class LifespanFailure(Exception):
    """Startup failed or timed out; the server must not serve (exit status 3)."""


class Lifespan:
    """Runs the app's lifespan task in the server's root nursery.

    Under ``auto`` an app that raises before completing startup is taken not
    to support lifespan and is served without it, as Uvicorn does.
    """

    def __init__(self, app: ASGIApp, *, mode: str, timeout: float, state: dict[str, Any]) -> None:
        self._app = app
        self._mode = mode
        self._timeout = timeout
        self._state = state
        self._send_channel, self._receive_channel = trio.open_memory_channel[Message](1)
        self._replies_send, self._replies = trio.open_memory_channel[Message | None](4)
        self._app_done = trio.Event()
        self._startup_done = False

    async def startup(self, nursery: trio.Nursery) -> None:
        if self._mode == "off":
            return
        logger.info("Waiting for application startup.")
        nursery.start_soon(self._main)
        await self._send_channel.send({"type": "lifespan.startup"})
        reply = await self._reply("startup")
        if reply is None:
            return
        if reply["type"] == "lifespan.startup.failed":
            raise LifespanFailure(reply.get("message") or "application startup failed")
        logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        if not self._startup_done or self._app_done.is_set():
            return
        logger.info("Waiting for application shutdown.")
        await self._send_channel.send({"type": "lifespan.shutdown"})
        reply = await self._reply("shutdown")
        if reply is None:
            return
        if reply["type"] == "lifespan.shutdown.failed":
            logger.error("Application shutdown failed: %s", reply.get("message", ""))
        else:
            logger.info("Application shutdown complete.")

    async def _reply(self, phase: str) -> Message | None:
        """The app's answer to ``phase``, or None if it returned without one under ``auto``."""
        with trio.move_on_after(self._timeout):
            reply = await self._replies.receive()
            if reply is None and self._mode == "on" and phase == "startup":
                raise LifespanFailure("the application does not support the lifespan protocol")
            return reply
        if phase == "startup":
            raise LifespanFailure(f"application startup timed out after {self._timeout}s")
        logger.error("Application shutdown timed out after %ss", self._timeout)
        return None

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as exc:
            if self._startup_done or self._mode == "on":
                logger.exception("Exception in 'lifespan' protocol")
                if not self._startup_done:
                    await self._replies_send.send(
                        {"type": "lifespan.startup.failed", "message": repr(exc)}
                    )
            else:
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
        finally:
            self._app_done.set()
            with contextlib.suppress(trio.WouldBlock):
                self._replies_send.send_nowait(None)

    async def _receive(self) -> Message:
        return await self._receive_channel.receive()

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind not in (
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            raise RuntimeError(f"Unexpected ASGI lifespan message {kind!r}")
        if kind == "lifespan.startup.complete":
            # Set before the reply is read, so a crash right after it counts as a crash.
            self._startup_done = True
        await self._replies_send.send(message)
