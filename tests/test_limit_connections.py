"""``--limit-connections``: at the cap the server stops accepting, through real sockets.

Clients beyond the cap complete their TCP handshake into the kernel's listen
queue, so the process spends no descriptor on them; each is accepted, in
order, once a connection closes.
"""

from __future__ import annotations

import pytest
import trio
from conftest import RunningServer, run_server
from h1_client import (
    WAIT,
    RawClient,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    ok_app,
    open_fd_count,
    request,
)

import palfrey

#: Descriptors the server may open beyond its connections while the flood arrives.
SLACK = 3
#: How long the server gets to accept whatever it is going to accept.
SETTLE = 0.3


async def open_client(srv: RunningServer) -> RawClient:
    with trio.fail_after(WAIT):
        return RawClient(await trio.open_tcp_stream(srv.host, srv.port))


async def accepted(srv: RunningServer, count: int) -> None:
    """Wait until the server holds ``count`` connections, then a moment for any more."""
    with trio.fail_after(WAIT):
        while len(srv.server.state.connections) < count:
            await trio.sleep(0.01)  # polls the server's count; nothing to wait on instead
    await trio.sleep(SETTLE)


async def test_a_flood_of_idle_sockets_does_not_raise_the_descriptor_count_past_the_cap() -> None:
    cap, flood = 4, 64
    async with run_server(ok_app, limit_connections=cap) as srv:
        before = open_fd_count()
        clients = [await open_client(srv) for _ in range(flood)]
        try:
            await accepted(srv, cap)
            assert len(srv.server.state.connections) == cap
            # This process is both ends: the clients' own sockets are not the server's.
            server_descriptors = open_fd_count() - before - flood
            assert server_descriptors <= cap + SLACK
        finally:
            for client in clients:
                await client.aclose()


async def test_a_waiting_client_is_served_once_a_slot_frees() -> None:
    cap = 2
    async with run_server(ok_app, limit_connections=cap) as srv:
        idle = [await open_client(srv) for _ in range(cap)]
        await accepted(srv, cap)
        waiting = await open_client(srv)
        try:
            await waiting.send(request(target="/waiting"))
            # In the listen queue: connected, but nobody reads the request yet.
            await waiting.assert_silent(SETTLE)
            await idle.pop().aclose()
            response = await waiting.read_response()
            assert response.status == 200
            assert response.body == b"ok"
        finally:
            for client in [*idle, waiting]:
                await client.aclose()


async def test_slots_come_back_after_served_connections_close() -> None:
    """Every closed connection returns its slot: many more clients than the cap, one by one."""
    cap = 2
    async with run_server(ok_app, limit_connections=cap) as srv:
        for number in range(5 * cap):
            client = await open_client(srv)
            await client.send(request(target=f"/{number}", headers=[("Connection", "close")]))
            assert (await client.read_response()).status == 200
            await client.aclose()


@pytest.mark.parametrize("value", [0, -1])
def test_the_limit_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="limit_connections must be >= 1"):
        palfrey.Config(app=ok_app, limit_connections=value)
