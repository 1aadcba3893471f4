"""trio's own stream conformance suite, run on Palfrey's socket stream over real sockets.

With ``skip_redundant_yields`` off the stream must pass it unchanged. With it
on, the suite is run with its checkpoint assertion narrowed to the one clause
the relaxation keeps (every call is a cancel point), so everything else the
suite checks still holds, and the test confirms that calls did skip a yield.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing
import trio.testing._check_streams as check_streams

from palfrey.transport.socket_stream import SocketStream

Pair = tuple[SocketStream, SocketStream]
PairMaker = Callable[[], Awaitable[Pair]]

CHUNK = b"x" * 65536


def socketpair_maker(*, skip_redundant_yields: bool) -> PairMaker:
    async def make() -> Pair:
        left, right = socket.socketpair()
        return (
            SocketStream(left, skip_redundant_yields=skip_redundant_yields),
            SocketStream(right, skip_redundant_yields=skip_redundant_yields),
        )

    return make


def tcp_maker(*, skip_redundant_yields: bool) -> PairMaker:
    async def make() -> Pair:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        return (
            SocketStream(server, skip_redundant_yields=skip_redundant_yields),
            SocketStream(client, skip_redundant_yields=skip_redundant_yields),
        )

    return make


def clogged(make: PairMaker) -> PairMaker:
    """Pairs in which neither stream can send until the other one reads.

    Both directions, because the suite also runs every check on the pair reversed.
    """

    async def make_clogged() -> Pair:
        left, right = await make()
        await fill(left.socket)
        await fill(right.socket)
        return left, right

    return make_clogged


async def fill(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        while True:
            sock.send(CHUNK)


def makers(kind: str, *, skip_redundant_yields: bool) -> tuple[PairMaker, PairMaker | None]:
    """The suite's two makers; TCP has no clogged one.

    A full TCP send buffer does not stay full: the kernel keeps moving bytes to
    the peer and freeing room as ACKs arrive, some of them delayed, so the
    suite's "blocks until the peer reads" checks would race it. A Unix socket
    pair's buffer changes only when a side reads, and those checks run there.
    """
    if kind == "tcp":
        return tcp_maker(skip_redundant_yields=skip_redundant_yields), None
    make = socketpair_maker(skip_redundant_yields=skip_redundant_yields)
    return make, clogged(make)


@pytest.mark.parametrize("kind", ["socketpair", "tcp"])
async def test_strict_stream_passes_trios_conformance_suite(kind: str) -> None:
    await trio.testing.check_half_closeable_stream(*makers(kind, skip_redundant_yields=False))


@pytest.mark.parametrize("kind", ["socketpair", "tcp"])
async def test_relaxed_stream_fails_only_the_schedule_point_check(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipped_yields = 0

    @contextmanager
    def assert_cancel_point() -> Iterator[None]:
        # The counters trio.testing.assert_checkpoints itself compares.
        nonlocal skipped_yields
        task = trio.lowlevel.current_task()
        cancel_points, schedule_points = task._cancel_points, task._schedule_points
        yield
        assert task._cancel_points != cancel_points, "the call was not a cancel point"
        if task._schedule_points == schedule_points:
            skipped_yields += 1

    monkeypatch.setattr(check_streams, "assert_checkpoints", assert_cancel_point)
    await trio.testing.check_half_closeable_stream(*makers(kind, skip_redundant_yields=True))
    assert skipped_yields > 0
