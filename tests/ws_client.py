"""Helpers shared by the WebSocket integration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from websockets.sync.client import connect as ws_connect

WAIT = 10.0


def ws_url(srv: Any, path: str = "/") -> str:
    return srv.url.replace("http://", "ws://") + path


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking websockets client; abandoned (not awaited) if the test times out."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def sync_client(url: str, **options: Any) -> Any:
    options.setdefault("open_timeout", WAIT)
    options.setdefault("close_timeout", WAIT)
    return ws_connect(url, proxy=None, **options)
