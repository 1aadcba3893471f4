"""What ``--loop asyncio`` costs per request: the trio-asyncio bridge against a direct call.

Two measurements, each run with the same trivial ASGI app:

* ``call``: the app called in-process N times with a one-message ``receive``
  and a two-message ``send`` — direct, then through :class:`AsyncioBridge`.
  This isolates the bridge (one asyncio task per call, one trio task per
  ``receive``/``send``).
* ``http``: N sequential keep-alive requests through a real Palfrey server on
  127.0.0.1 with a minimal raw-socket client — ``loop="trio"``, then
  ``loop="asyncio"``. This is what a client would see.

Usage: ``python benchmarks/asyncio_bridge.py [-n 5000]``. Needs trio-asyncio.

Measured (Python 3.11, trio 0.35, trio-asyncio 0.16, one x86-64 core, -n 5000):

    call  direct      0.5 us  bridged    168.8 us  overhead    168.2 us  ratio 315.11x
    http  direct    132.0 us  bridged    340.4 us  overhead    208.4 us  ratio  2.58x

That is about 40 us to enter the app (an asyncio task) plus about 40 us for
each ``receive()``/``send()`` (a trio task and an asyncio future each way):
roughly 0.2 ms per small request, which matters only for trivial handlers.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

import trio
import trio_asyncio

import palfrey
from palfrey.asgi.asyncio_bridge import AsyncioBridge

BODY = b"hello"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(BODY))],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


async def time_calls(target: Any, count: int) -> float:
    scope = {"type": "http"}
    started = time.perf_counter()
    for _ in range(count):
        await target(scope, _receive, _send)
    return (time.perf_counter() - started) / count


async def time_http(loop: str, count: int) -> float:
    config = palfrey.Config(
        app=app, port=0, loop=loop, lifespan="off", access_log=False, log_level="warning"
    )
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(partial(palfrey.serve, app, config))
        port = int(addresses[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        started = time.perf_counter()
        for _ in range(count):
            await stream.send_all(REQUEST)
            response = b""
            while not response.endswith(BODY):
                response += await stream.receive_some(65536)
        elapsed = time.perf_counter() - started
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return elapsed / count


def report(label: str, direct: float, bridged: float) -> None:
    print(
        f"{label:5} direct {direct * 1e6:8.1f} us  bridged {bridged * 1e6:8.1f} us"
        f"  overhead {(bridged - direct) * 1e6:8.1f} us  ratio {bridged / direct:5.2f}x"
    )


async def main(count: int) -> None:
    await time_calls(app, count // 10)  # warm-up
    direct = await time_calls(app, count)
    async with trio_asyncio.open_loop():
        bridge = AsyncioBridge(app)
        await time_calls(bridge, count // 10)
        bridged = await time_calls(bridge, count)
    report("call", direct, bridged)
    direct = await time_http("trio", count)
    bridged = await time_http("asyncio", count)
    report("http", direct, bridged)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", "--requests", type=int, default=5000)
    trio.run(main, parser.parse_args().requests)
