"""Palfrey's socket stream and listener keep trio's stream contract."""

from __future__ import annotations

import socket

import pytest
import trio

from palfrey.transport.socket_stream import SocketListener, SocketStream


def stream_pair() -> tuple[SocketStream, SocketStream]:
    left, right = socket.socketpair()
    return SocketStream(left), SocketStream(right)


async def test_bytes_round_trip_both_ways() -> None:
    left, right = stream_pair()
    await left.send_all(b"ping")
    assert await right.receive_some(100) == b"ping"
    await right.send_all(bytearray(b"pong"))
    assert await left.receive_some() == b"pong"
    await left.send_eof()
    assert await right.receive_some() == b""


async def test_a_write_larger_than_the_socket_buffer_arrives_whole() -> None:
    left, right = stream_pair()
    payload = bytes(range(256)) * 32 * 1024  # 8 MiB, far beyond any socket buffer
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            received.extend(await right.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await left.send_all(payload)
    assert received == payload


async def test_a_second_writer_during_a_parked_write_is_refused() -> None:
    left, _right = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, b"x" * 8 * 1024 * 1024)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await left.send_all(b"y")
        nursery.cancel_scope.cancel()


async def test_sending_after_eof_is_a_closed_resource() -> None:
    left, _right = stream_pair()
    await left.send_eof()
    await left.send_eof()  # idempotent, as trio's is
    with pytest.raises(trio.ClosedResourceError):
        await left.send_all(b"late")


async def test_closing_wakes_a_parked_reader_with_closed_resource() -> None:
    left, _right = stream_pair()
    outcome: list[type[BaseException]] = []

    async def reader() -> None:
        try:
            await left.receive_some()
        except trio.ClosedResourceError as exc:
            outcome.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await left.aclose()
    assert outcome == [trio.ClosedResourceError]
    with pytest.raises(trio.ClosedResourceError):
        await left.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await left.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await left.wait_send_all_might_not_block()


async def test_a_reset_peer_breaks_the_stream() -> None:
    left, right = stream_pair()
    right.socket.close()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):
            await left.send_all(b"x" * 65536)


async def test_a_cancelled_read_consumes_nothing() -> None:
    left, right = stream_pair()
    await left.send_all(b"kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await right.receive_some()
    assert scope.cancelled_caught
    assert await right.receive_some() == b"kept"


async def test_a_cancelled_write_sends_nothing() -> None:
    left, right = stream_pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await left.send_all(b"dropped")
    assert scope.cancelled_caught
    await left.send_all(b"sent")
    assert await right.receive_some() == b"sent"


async def test_ready_data_still_yields_to_other_tasks() -> None:
    """A connection whose socket always has data must not starve the rest."""
    left, right = stream_pair()
    await left.send_all(b"x" * 1000)
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        for _ in range(100):
            await right.receive_some(10)
        nursery.cancel_scope.cancel()
    assert ticks >= 10


async def test_listener_accepts_tcp_connections_with_nodelay() -> None:
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    listener = SocketListener(raw)
    client = await trio.open_tcp_stream(*raw.getsockname())
    server = await listener.accept()
    assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await client.send_all(b"hello")
    assert await server.receive_some() == b"hello"
    await server.aclose()
    await client.aclose()
    await listener.aclose()


async def test_closing_the_listener_wakes_accept() -> None:
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    raw.listen()
    listener = SocketListener(raw)
    outcome: list[type[BaseException]] = []

    async def accept() -> None:
        try:
            await listener.accept()
        except trio.ClosedResourceError as exc:
            outcome.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    assert outcome == [trio.ClosedResourceError]
