"""A request that arrives in the scheduler pass in which its connection's wait is cancelled."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from palfrey.asgi.headers import DefaultHeaders
from palfrey.config.schema import Config
from palfrey.protocols.h11 import H1Protocol
from palfrey.transport.http11 import H1Connection
from palfrey.transport.state import ConnectionControl, ServerState


class CancelOnArrival(trio.abc.Stream):
    """Cancels the connection's wait while handing over the bytes that just arrived,
    as the timeout sweep (or shutdown) does when it runs between the wake-up and the read."""

    def __init__(self, stream: trio.abc.Stream, control: ConnectionControl) -> None:
        self.stream = stream
        self.control = control

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        self.control.waiting_scope.cancel()
        return data

    async def send_all(self, data: Any) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_the_app_does_not_start_in_a_cancelled_wait() -> None:
    started: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope)
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"too late"})

    config = Config(app=app, lifespan="off")
    state = ServerState(app=app, config=config, defaults=DefaultHeaders())
    control = ConnectionControl()
    client, server = trio.testing.memory_stream_pair()
    connection = H1Connection(
        CancelOnArrival(server, control),
        H1Protocol(),
        state,
        control,
        scheme="http",
        client=("127.0.0.1", 1),
        server=("127.0.0.1", 2),
    )
    await client.send_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    with trio.fail_after(5):
        await connection.run()
    assert started == []
