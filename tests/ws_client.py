"""Helpers shared by the WebSocket tests: clients, a recorder and a raw frame builder."""

from __future__ import annotations

import os
import struct
from collections.abc import Awaitable, Callable
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


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """A hand-built frame (RFC 6455 §5.2), for what wsproto refuses to produce."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    mask_bytes = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(mask_bytes, "big")
    return head + key + masked.to_bytes(length, "big")


async def neighbour_turns(action: Callable[[], Awaitable[Any]], times: int) -> int:
    """How many turns a neighbour task gets while ``action`` runs ``times`` in a row:
    zero means the loop never let anything else run."""
    turns = 0

    async def neighbour() -> None:
        nonlocal turns
        while True:
            await trio.sleep(0)
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(neighbour)
        await trio.sleep(0)
        start = turns
        for _ in range(times):
            await action()
        turns -= start
        nursery.cancel_scope.cancel()
    return turns


def handshake_request(path: bytes = b"/") -> bytes:
    """A valid WebSocket handshake request for ``path``, byte for byte."""
    return (
        b"GET " + path + b" HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\n"
        b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"sec-websocket-version: 13\r\n\r\n"
    )


async def upgrade(stream: trio.abc.Stream, path: bytes = b"/", extra: bytes = b"") -> bytes:
    """Send the handshake (and ``extra`` right behind it), read through the ``101``;
    return the bytes that followed the response head in the same reads."""
    await stream.send_all(handshake_request(path) + extra)
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        assert data, "closed during the handshake"
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return rest
