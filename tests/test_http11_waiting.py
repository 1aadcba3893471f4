"""A request that arrives in the scheduler pass in which its connection's wait is cancelled."""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing

from palfrey.asgi.headers import DefaultHeaders
from palfrey.config.schema import Config
from palfrey.observability.metrics import Metrics
from palfrey.protocols.h11 import H1Protocol
from palfrey.transport.http11 import H1Connection
from palfrey.transport.socket_stream import SocketStream
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


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"hi"})


def socket_connection(
    control: ConnectionControl, **config: Any
) -> tuple[H1Connection, ServerState, socket.socket]:
    """An H1Connection on one end of a socket pair, as the server makes them; the other end."""
    server_side, client = socket.socketpair()
    client.settimeout(5)
    app_config = Config(app=hello, lifespan="off", **config)
    state = ServerState(app=hello, config=app_config, defaults=DefaultHeaders(), metrics=Metrics())
    stream = SocketStream(server_side, skip_redundant_yields=True)
    connection = H1Connection(
        stream,
        H1Protocol(),
        state,
        control,
        scheme="http",
        client=("127.0.0.1", 1),
        server=("127.0.0.1", 2),
        socket_stream=stream,
    )
    return connection, state, client


def was_entered(scope: trio.CancelScope) -> bool:
    """A cancel scope serves one ``with`` block: entering it again fails once it has."""
    try:
        with scope:
            pass
    except RuntimeError:
        return True
    return False


async def run_until_waiting_then_expire(
    connection: H1Connection, control: ConnectionControl
) -> None:
    """Run the connection until it waits for a request head, then end that wait as the
    timeout sweep would."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.testing.wait_all_tasks_blocked()
            assert control.idle
            control.expire()


async def test_a_request_that_arrives_with_its_connection_is_served_without_the_waiting_scope() -> (
    None
):
    control = ConnectionControl()
    connection, _, client = socket_connection(control)
    client.sendall(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
    with trio.fail_after(5):
        await connection.run()
    assert client.recv(65536).endswith(b"\r\n\r\nhi")
    assert not was_entered(control.waiting_scope)


async def test_the_waiting_scope_is_entered_for_the_first_wait_and_ends_it() -> None:
    control = ConnectionControl()
    connection, state, client = socket_connection(control)
    client.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await run_until_waiting_then_expire(connection, control)
    assert client.recv(65536).endswith(b"\r\n\r\nhi")
    assert was_entered(control.waiting_scope)
    assert state.metrics is not None
    assert state.metrics.timeouts == {"keep_alive": 1}


async def test_a_head_begun_without_a_wait_and_cut_off_gets_408() -> None:
    control = ConnectionControl()
    connection, state, client = socket_connection(control)
    client.sendall(b"GET / HTTP/1.1\r\nhost: te")
    await run_until_waiting_then_expire(connection, control)
    assert client.recv(65536).startswith(b"HTTP/1.1 408 ")
    assert state.metrics is not None
    assert state.metrics.timeouts == {"request_head": 1}


async def test_a_wait_ended_before_the_scope_is_entered_still_ends_it() -> None:
    # Shutdown or the sweep can cancel the scope while the connection is still
    # serving without it; the first wait then ends at once.
    control = ConnectionControl()
    connection, _, client = socket_connection(control)
    control.waiting_scope.cancel()
    client.sendall(b"GET / HTTP/1.1\r\nhost: te")
    with trio.fail_after(5):
        await connection.run()
    assert client.recv(65536).startswith(b"HTTP/1.1 408 ")


async def test_a_head_already_begun_waits_under_the_head_timeout_not_the_keep_alive_one() -> None:
    control = ConnectionControl()
    connection, _, client = socket_connection(
        control, timeout_keep_alive=1, timeout_request_header=30
    )
    client.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\nGET /next HTTP/1.1\r\nho")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.testing.wait_all_tasks_blocked()
            assert control.idle
            assert control.deadline - trio.current_time() > 20
            control.expire()
    received = b""
    while b"HTTP/1.1 408 " not in received:
        received += client.recv(65536)
    assert received.startswith(b"HTTP/1.1 200 ")
