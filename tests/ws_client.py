"""Helpers shared by the WebSocket integration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from websockets.sync.client import connect as ws_connect

WAIT = 10.0


class Recorder:
    """Collects what an app saw; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = trio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[list[Any]], bool]) -> list[Any]:
        while not predicate(self.items):
            await self._changed.wait()
        return self.items


def ws_url(srv: Any, path: str = "/") -> str:
    return srv.url.replace("http://", "ws://") + path


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking websockets client; abandoned (not awaited) if the test times out."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def sync_client(url: str, **options: Any) -> Any:
    options.setdefault("open_timeout", WAIT)
    options.setdefault("close_timeout", WAIT)
    return ws_connect(url, proxy=None, **options)
