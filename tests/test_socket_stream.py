"""Palfrey's socket stream and listener keep trio's stream contract."""

from __future__ import annotations

import itertools
import math
import random
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
from tls_cert import Certificate

from palfrey.transport.socket_stream import (
    SocketListener,
    SocketStream,
    StreamTimeout,
)


def stream_pair(*, skip_redundant_yields: bool = False) -> tuple[SocketStream, SocketStream]:
    left, right = socket.socketpair()
    return (
        SocketStream(left, skip_redundant_yields=skip_redundant_yields),
        SocketStream(right, skip_redundant_yields=skip_redundant_yields),
    )


def small_buffer_pair() -> tuple[SocketStream, SocketStream]:
    """A pair whose kernel buffers fill after a few KiB, so that writes park early."""
    left, right = stream_pair()
    left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    right.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return left, right


class StepCounter(trio.abc.Instrument):
    """Counts each task's steps: a call during which the count moves let the scheduler run."""

    def __init__(self) -> None:
        self.steps: Counter[trio.lowlevel.Task] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1


@contextmanager
def counting_steps() -> Iterator[StepCounter]:
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


#: The two ways to write: whole buffers, and a head and body gathered by one ``sendmsg``.
SENDERS = {
    "send_all": lambda stream, data: stream.send_all(data),
    "send_all_parts": lambda stream, data: stream.send_all_parts(data[:1], data[1:]),
}
each_sender = pytest.mark.parametrize("send", SENDERS.values(), ids=list(SENDERS))


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


@each_sender
async def test_a_second_writer_during_a_parked_write_is_refused(send: Any) -> None:
    left, _right = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, left, b"x" * 8 * 1024 * 1024)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await send(left, b"yz")
        nursery.cancel_scope.cancel()


@each_sender
async def test_sending_after_eof_is_a_closed_resource(send: Any) -> None:
    left, _right = stream_pair()
    await left.send_eof()
    await left.send_eof()  # idempotent, as trio's is
    with pytest.raises(trio.ClosedResourceError):
        await send(left, b"late")


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


async def test_a_descriptor_closed_with_no_task_parked_can_be_waited_on_again() -> None:
    # Closed without notify_closing: a socket that reuses the descriptor is still
    # registered with trio afresh, and a wait on it sees what arrives.
    for _ in range(3):
        left, right = stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            await right.send_all(b"x")
        descriptor = left.socket.fileno()
        left.close()
        right.close()
        reused, peer = stream_pair()
        assert descriptor in (reused.socket.fileno(), peer.socket.fileno())
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reused.receive_some)
                nursery.start_soon(peer.receive_some)
                await trio.testing.wait_all_tasks_blocked()
                await reused.send_all(b"to peer")
                await peer.send_all(b"to reused")
        reused.close()
        peer.close()


async def test_closing_wakes_a_parked_writer_with_closed_resource() -> None:
    left, _right = small_buffer_pair()
    outcome: list[type[BaseException]] = []

    async def writer() -> None:
        try:
            await left.send_all(b"x" * 1_000_000)
        except trio.ClosedResourceError as exc:
            outcome.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        left.close()
    assert outcome == [trio.ClosedResourceError]


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


@each_sender
async def test_a_cancelled_write_sends_nothing(send: Any) -> None:
    left, right = stream_pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await send(left, b"dropped")
    assert scope.cancelled_caught
    await left.send_all(b"sent")
    assert await right.receive_some() == b"sent"


async def test_ready_data_still_yields_to_other_tasks() -> None:
    """A connection whose socket always has data must not starve the rest."""
    left, right = stream_pair(skip_redundant_yields=True)
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


@pytest.mark.parametrize("family", ["tcp", "tcp6", "unix"])
async def test_accepted_sockets_are_what_socket_accept_would_give(
    family: str, tmp_path: Any
) -> None:
    if family == "unix":
        raw = socket.socket(socket.AF_UNIX)
        raw.bind(str(tmp_path / "s"))
        address: Any = str(tmp_path / "s")
    else:
        raw = socket.socket(socket.AF_INET6 if family == "tcp6" else socket.AF_INET)
        raw.bind(("::1" if family == "tcp6" else "127.0.0.1", 0))
        address = raw.getsockname()[:2]
    raw.listen()
    listener = SocketListener(raw)
    client = socket.socket(raw.family)
    client.connect(address)
    server = await listener.accept()
    assert (server.socket.family, server.socket.type, server.socket.proto) == (
        raw.family,
        raw.type,
        raw.proto,
    )
    assert server.socket.getblocking() is False
    assert server.socket.getsockname() == client.getpeername()
    client.sendall(b"hello")
    assert await server.receive_some() == b"hello"
    server.close()
    client.close()
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


async def test_receive_sizes_below_one_are_refused() -> None:
    left, right = stream_pair()
    await left.send_all(b"kept")
    for size in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            await right.receive_some(size)
    assert await right.receive_some(None) == b"kept"


async def test_a_second_reader_during_a_parked_read_is_refused() -> None:
    _left, right = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(right.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await right.receive_some()
        nursery.cancel_scope.cancel()


async def test_receive_ready_returns_none_at_once_where_it_would_wait() -> None:
    left, right = stream_pair(skip_redundant_yields=True)
    task = trio.lowlevel.current_task()
    with counting_steps() as counter:
        assert await right.receive_ready(10) is None
    assert counter.steps[task] == 0  # neither parked nor yielded
    await left.send_all(b"ready")
    assert await right.receive_ready(10) == b"ready"
    left.close()
    assert await right.receive_ready(10) == b""


async def test_receive_ready_is_a_cancel_point_that_consumes_nothing() -> None:
    left, right = stream_pair()
    await left.send_all(b"kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await right.receive_ready(10)
    assert scope.cancelled_caught
    assert await right.receive_ready(10) == b"kept"


async def test_receive_ready_during_a_parked_read_is_refused() -> None:
    _left, right = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(right.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await right.receive_ready(10)
        nursery.cancel_scope.cancel()


# Scheduling: strict by default, relaxed with skip_redundant_yields.


def call_pattern(seed: int, length: int, calls: str = "rw") -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(calls) for _ in range(length)]


async def yields_per_call(stream: SocketStream, pattern: list[str]) -> list[bool]:
    """Run reads ("r", data always waiting; "q" the same by ``receive_ready``) and writes
    ("w") in this task; True where it yielded."""
    task = trio.lowlevel.current_task()
    yielded = []
    with counting_steps() as counter:
        for op in pattern:
            before = counter.steps[task]
            if op == "r":
                assert await stream.receive_some(1) == b"x"
            elif op == "q":
                assert await stream.receive_ready(1) == b"x"
            else:
                await stream.send_all(b"y")
            yielded.append(counter.steps[task] != before)
    return yielded


async def test_by_default_every_call_yields() -> None:
    left, right = stream_pair()
    await left.send_all(b"x" * 1000)
    assert all(await yields_per_call(right, call_pattern(0, 400)))


@pytest.mark.parametrize("calls", ["rw", "rqw"])
async def test_a_task_skips_only_the_documented_yields_and_never_two_in_a_row(calls: str) -> None:
    left, right = stream_pair(skip_redundant_yields=True)
    await left.send_all(b"x" * 1000)
    pattern = call_pattern(1, 400, calls)
    yielded = await yields_per_call(right, pattern)
    # A read skips after any call of this task that yielded; a write never skips.
    expected = [True]
    for op in pattern[1:]:
        expected.append(not (expected[-1] and op in "rq"))
    assert yielded == expected
    assert not any(not a and not b for a, b in itertools.pairwise(yielded))
    assert not all(yielded)


@pytest.mark.parametrize("second", ["r", "w"])
async def test_a_call_after_another_tasks_call_always_yields(second: str) -> None:
    """One task's yield must not let another task skip (a WebSocket's app and connection tasks)."""
    left, right = stream_pair(skip_redundant_yields=True)
    await left.send_all(b"x" * 1000)
    #: (task name, whether the call yielded), in the order the calls began.
    calls: list[list[object]] = []

    async def run(name: str, op: str) -> None:
        task = trio.lowlevel.current_task()
        with counting_steps() as counter:
            for _ in range(100):
                call = [name, None]
                calls.append(call)
                before = counter.steps[task]
                if op == "r":
                    await right.receive_some(1)
                else:
                    await right.send_all(b"y")
                call[1] = counter.steps[task] != before

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "first", "r")
        nursery.start_soon(run, "second", second)
    turns = [
        yielded for (previous, _), (name, yielded) in itertools.pairwise(calls) if previous != name
    ]
    assert len(turns) > 50
    assert all(turns)


# Slow-path deadlines.


@each_sender
async def test_a_write_nobody_reads_times_out_and_breaks_sending(
    autojump_clock: trio.testing.MockClock, send: Any
) -> None:
    left, right = small_buffer_pair()
    left.send_timeout = 10
    start = trio.current_time()
    with pytest.raises(StreamTimeout):
        await send(left, b"x" * 1024 * 1024)
    assert trio.current_time() - start == pytest.approx(10)
    # Part of the message is out: no later byte, and no EOF, may follow it.
    with pytest.raises(trio.BrokenResourceError):
        await left.send_all(b"y")
    with pytest.raises(trio.BrokenResourceError):
        await left.send_eof()
    with pytest.raises(trio.BrokenResourceError):
        await left.wait_send_all_might_not_block()
    # Receiving is unaffected.
    await right.send_all(b"still")
    assert await left.receive_some() == b"still"


async def test_each_byte_that_moves_renews_the_send_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = small_buffer_pair()
    left.send_timeout = 10
    payload = b"x" * 256 * 1024
    received = 0

    async def slow_reader() -> None:
        nonlocal received
        while received < len(payload):
            await trio.sleep(6)
            received += len(await right.receive_some())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_reader)
        await left.send_all(payload)
    assert trio.current_time() - start > 10 * 2


async def test_calls_that_do_not_park_read_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    left, right = stream_pair()
    left.send_timeout = 0

    def no_clock() -> float:
        raise AssertionError("the fast path read the clock")

    monkeypatch.setattr(trio, "current_time", no_clock)
    await left.send_all(b"quick")
    assert await right.receive_some() == b"quick"


async def test_timeouts_default_to_never() -> None:
    left, _right = stream_pair()
    assert left.send_timeout == math.inf


async def tls_pair(
    certificate: Certificate,
) -> tuple[trio.SSLStream[SocketStream], trio.SSLStream[SocketStream]]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate.certfile, certificate.keyfile)
    left, right = small_buffer_pair()
    server = trio.SSLStream(left, server_context, server_side=True)
    client = trio.SSLStream(right, certificate.client_context(), server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client


async def test_a_send_timeout_breaks_the_tls_stream_above(
    certificate: Certificate, autojump_clock: trio.testing.MockClock
) -> None:
    server, _client = await tls_pair(certificate)
    server.transport_stream.send_timeout = 5
    with pytest.raises(trio.BrokenResourceError) as caught:
        await server.send_all(b"x" * 1024 * 1024)
    assert isinstance(caught.value, StreamTimeout)
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"more")


@pytest.mark.parametrize(("bind", "known"), [("127.0.0.1", True), ("0.0.0.0", False)])
async def test_accepted_streams_carry_the_addresses_the_listener_knows(
    bind: str, known: bool
) -> None:
    """The peer comes from accept(); the local address only when the listener is bound to
    one address, since a wildcard listener's connections may each arrive on another."""
    raw = socket.socket()
    raw.bind((bind, 0))
    raw.listen()
    listener = SocketListener(raw)
    port = raw.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    assert server.peer_address == client.socket.getsockname()
    assert server.local_address == (("127.0.0.1", port) if known else None)
    await server.aclose()
    await client.aclose()
    await listener.aclose()


async def test_a_wildcard_listener_reports_the_address_each_connection_reached(
    serve: Any,
) -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["client"], scope["server"]))
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})

    async with serve(app, host="0.0.0.0", lifespan="off") as srv:
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        with trio.fail_after(5):
            while await stream.receive_some():
                pass
        client_address = stream.socket.getsockname()
        await stream.aclose()
    assert seen == [(client_address, ("127.0.0.1", srv.port))]


# Gathered writes: a head and a body in one sendmsg.


async def _read_exactly(stream: SocketStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        received.extend(await stream.receive_some(65536))
    return bytes(received)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"head", b"body"),
        (b"", b"only the second"),
        (bytes(range(256)) * 16 * 1024, b"after a first part larger than any buffer"),
        (b"short head", bytes(range(256)) * 16 * 1024),
        (bytes(range(256)) * 8 * 1024, bytes(range(255, -1, -1)) * 8 * 1024),
    ],
    ids=["small", "empty-first", "large-first", "large-second", "both-large"],
)
async def test_parts_arrive_whole_and_in_order(first: bytes, second: bytes) -> None:
    left, right = small_buffer_pair()
    received: list[bytes] = []

    async def read_all() -> None:
        received.append(await _read_exactly(right, len(first) + len(second)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await left.send_all_parts(first, second)
    assert received == [first + second]


async def test_parts_are_one_checkpoint_like_send_all() -> None:
    left, right = stream_pair()
    with trio.testing.assert_checkpoints():
        await left.send_all_parts(b"head", b"body")
    assert await right.receive_some() == b"headbody"


async def _context_of_cancelled_wait(wait: Any) -> list[BaseException | None]:
    contexts: list[BaseException | None] = []

    async def waiter() -> None:
        try:
            await wait()
        except trio.Cancelled as exc:
            contexts.append(exc.__context__)
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return contexts


async def test_what_interrupts_a_wait_is_not_raised_while_handling_blocking_io() -> None:
    # Ctrl+C or a cancel during an idle wait must not print "During handling of the
    # above exception (BlockingIOError)": the waits happen outside the except clauses.
    reader, _writer = stream_pair(skip_redundant_yields=True)
    assert await _context_of_cancelled_wait(lambda: reader.receive_some(10)) == [None]
    sock = socket.create_server(("127.0.0.1", 0))
    listener = SocketListener(sock)
    assert await _context_of_cancelled_wait(listener.accept) == [None]
    sock.close()
