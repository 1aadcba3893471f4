"""HTTP/3 under abuse: handshakes that never finish, Initial floods, truncated packets,
unknown connection ids, and a connection that fails inside. The server keeps serving."""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from aioquic.h3.connection import ErrorCode
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from conftest import RunningServer, run_server
from h3_client import h3_client

import palfrey.server.server as server_module
from palfrey.protocols.events import RequestReceived
from palfrey.transport import quic
from palfrey.transport.quic import QuicConnectionTask, QuicEndpoint

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def app(scope, receive, send):
    while scope["path"] == "/in-flight" and (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


@asynccontextmanager
async def serve_h3(
    monkeypatch: pytest.MonkeyPatch, certificate, **options
) -> AsyncIterator[tuple[RunningServer, QuicEndpoint, int]]:
    """A server with ``--http h3``, its endpoint object, and its UDP port."""
    endpoints: list[QuicEndpoint] = []
    real_open = server_module.open_quic_endpoints

    async def capture(config, **options):
        opened = await real_open(config, **options)
        endpoints.extend(opened)
        return opened

    monkeypatch.setattr(server_module, "open_quic_endpoints", capture)
    options.setdefault("lifespan", "off")
    async with run_server(
        options.pop("app", app),
        http="h3",
        ssl_certfile=certificate.certfile,
        ssl_keyfile=certificate.keyfile,
        **options,
    ) as server:
        [endpoint] = endpoints
        yield server, endpoint, endpoint.address[1]


def client_initial(port: int) -> tuple[QuicConnection, bytes]:
    """A real client's first datagram (an Initial with a ClientHello, 1200 bytes)."""
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE
        )
    )
    client.connect(("127.0.0.1", port), now=trio.current_time())
    [(data, _)] = client.datagrams_to_send(now=trio.current_time())
    return client, data


def crafted_initial(rng: random.Random) -> bytes:
    """A long-header Initial of version 1 with a random destination id and garbage inside."""
    dcid = rng.randbytes(8)
    scid = rng.randbytes(8)
    header = b"\xc3\x00\x00\x00\x01" + b"\x08" + dcid + b"\x08" + scid + b"\x00"
    payload_length = 1200 - len(header) - 2
    return header + (0x4000 | payload_length).to_bytes(2, "big") + rng.randbytes(payload_length)


async def until(predicate, interval: float = 0.01) -> None:
    while not predicate():
        await trio.sleep(interval)


async def nothing_arrives(sock, seconds: float = 0.3) -> bool:
    with trio.move_on_after(seconds):
        await sock.recvfrom(65536)
        return False
    return True


def udp_socket() -> trio.socket.SocketType:
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def test_a_handshake_that_never_completes_is_dropped(monkeypatch, certificate) -> None:
    with trio.fail_after(10):
        async with serve_h3(
            monkeypatch, certificate, timeout_tls_handshake=0.5, timeout_keep_alive=30
        ) as (_, endpoint, port):
            with udp_socket() as sock:
                # The client's Initial and nothing more: the handshake never completes.
                _, data = client_initial(port)
                await sock.sendto(data, ("127.0.0.1", port))
                start = trio.current_time()
                await until(lambda: endpoint.handshakes == 1)
                assert len(endpoint.connections) == 1
                # The server answers (ServerHello and so on) and retransmits, then gives up.
                await sock.recvfrom(65536)
                await until(lambda: not endpoint.connections)
                elapsed = trio.current_time() - start
                assert 0.4 <= elapsed < 2.0
                assert endpoint.handshakes == 0
                assert endpoint.routes == {}
                # Nothing more is sent to that client once it was dropped.
                while not await nothing_arrives(sock, 0.3):
                    pass
            async with h3_client(port) as client:
                response = await client.request("GET", "/after")
    assert response.status == 200
    assert bytes(response.body) == b"/after"


async def test_an_initial_flood_leaves_bounded_state(monkeypatch, certificate) -> None:
    monkeypatch.setattr(quic, "MAX_HANDSHAKES", 40)
    peak = {"connections": 0, "handshakes": 0}
    real_new_connection = QuicEndpoint._new_connection

    def counting(self, original_cid, addr):
        connection = real_new_connection(self, original_cid, addr)
        peak["connections"] = max(peak["connections"], len(self.connections))
        peak["handshakes"] = max(peak["handshakes"], self.handshakes)
        return connection

    monkeypatch.setattr(QuicEndpoint, "_new_connection", counting)
    rng = random.Random(11)
    with trio.fail_after(30):
        async with serve_h3(monkeypatch, certificate, timeout_tls_handshake=1.0) as (
            _,
            endpoint,
            port,
        ):
            # Real ClientHellos (they hold a handshake slot until the handshake deadline)
            # and crafted Initials with random connection ids (undecryptable), from 250 ports.
            real = [client_initial(port)[1] for _ in range(250)]
            sockets = [udp_socket() for _ in range(250)]
            try:
                sent = 0
                for index, sock in enumerate(sockets):
                    await sock.bind(("127.0.0.1", 0))
                    for round_ in range(8):
                        data = real[index] if round_ == 0 else crafted_initial(rng)
                        await sock.sendto(data, ("127.0.0.1", port))
                        sent += 1
                    await trio.sleep(0.001)
                assert sent == 2000
                assert len(endpoint.connections) <= quic.MAX_HANDSHAKES
                # A real client gets in once the pending handshakes time out.
                async with h3_client(port) as client:
                    response = await client.request("GET", "/after-flood")
                assert response.status == 200
                # Every pending handshake ends at its deadline; only the real client's
                # connection (closing or idle) may remain.
                await until(lambda: endpoint.handshakes == 0 and len(endpoint.connections) <= 1)
                # No route is left behind by a connection that is gone.
                assert set(endpoint.routes.values()) <= endpoint.connections
            finally:
                for sock in sockets:
                    sock.close()
    assert peak["handshakes"] == quic.MAX_HANDSHAKES
    assert peak["connections"] <= quic.MAX_HANDSHAKES


async def test_h3_max_connections_turns_new_connections_away(monkeypatch, certificate) -> None:
    with trio.fail_after(15):
        async with serve_h3(monkeypatch, certificate, h3_max_connections=3) as (
            _,
            endpoint,
            port,
        ):
            async with h3_client(port) as one, h3_client(port) as two, h3_client(port) as three:
                for client in (one, two, three):
                    assert (await client.request("GET", "/in")).status == 200
                assert len(endpoint.connections) == 3
                with udp_socket() as sock:
                    _, data = client_initial(port)
                    await sock.sendto(data, ("127.0.0.1", port))
                    # Over the cap: the Initial is dropped, and nothing is answered.
                    assert await nothing_arrives(sock)
                assert len(endpoint.connections) == 3
            await until(lambda: not endpoint.connections)
            async with h3_client(port) as client:
                assert (await client.request("GET", "/later")).status == 200


async def test_truncated_packets_and_unknown_connection_ids_are_ignored(
    monkeypatch, certificate
) -> None:
    rng = random.Random(5)
    with trio.fail_after(15):
        async with serve_h3(monkeypatch, certificate) as (_, endpoint, port):
            async with h3_client(port) as client:
                assert (await client.request("GET", "/before")).status == 200
                live_cid = client.quic._peer_cid.cid
                with udp_socket() as sock:
                    _, initial = client_initial(port)
                    for cut in (1, 5, 6, 14, 15, 23, 24, 26, 100, 1199):
                        await sock.sendto(initial[:cut], ("127.0.0.1", port))
                    for _ in range(100):
                        # Short headers and Handshake packets for connections never made.
                        await sock.sendto(
                            b"\x40" + rng.randbytes(8) + rng.randbytes(40), ("127.0.0.1", port)
                        )
                        await sock.sendto(
                            b"\xe0\x00\x00\x00\x01\x08" + rng.randbytes(8) + b"\x00" + bytes(60),
                            ("127.0.0.1", port),
                        )
                    for cut in (1, 9, 10, 20, 30):
                        # Truncated and undecryptable packets for the live connection.
                        packet = b"\x40" + live_cid + os.urandom(40)
                        await sock.sendto(packet[:cut], ("127.0.0.1", port))
                    assert await nothing_arrives(sock)
                assert len(endpoint.connections) == 1
                assert endpoint.handshakes == 0
                response = await client.request("GET", "/after")
    assert response.status == 200
    assert bytes(response.body) == b"/after"


async def test_an_error_inside_one_connection_closes_only_that_one(
    monkeypatch, certificate, caplog
) -> None:
    real_dispatch = QuicConnectionTask._dispatch

    def failing_dispatch(self, events):
        for event in events:
            if type(event) is RequestReceived and event.target == b"/explode":
                raise RuntimeError("boom inside one connection")
        real_dispatch(self, events)

    monkeypatch.setattr(QuicConnectionTask, "_dispatch", failing_dispatch)
    with trio.fail_after(15), caplog.at_level(logging.DEBUG, logger="palfrey.error"):
        async with serve_h3(monkeypatch, certificate) as (_, endpoint, port):
            async with h3_client(port) as healthy, h3_client(port) as victim:
                assert (await healthy.request("GET", "/one")).status == 200
                assert (await victim.request("GET", "/one")).status == 200
                slow = healthy.start("GET", "/in-flight", end=False)
                victim.start("GET", "/explode")
                await victim.closed.wait()
                assert victim.terminated.error_code == ErrorCode.H3_INTERNAL_ERROR
                await until(lambda: len(endpoint.connections) == 1)
                healthy.send(slow, b"", end=True)
                assert (await healthy.wait(slow)).status == 200
                assert (await healthy.request("GET", "/two")).status == 200
            async with h3_client(port) as fresh:
                assert (await fresh.request("GET", "/three")).status == 200
    failures = [r for r in caplog.records if "HTTP/3 connection" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "RuntimeError: boom inside one connection" in caplog.text


async def test_small_datagrams_of_unknown_versions_get_no_answer(monkeypatch, certificate) -> None:
    """RFC 9000 §5.2.2: Version Negotiation only for a datagram that could open a connection,
    so a spoofed source gets no more back than it sent."""
    packet = b"\xc0\x1a\x2b\x3c\x4d" + b"\x08" + b"D" * 8 + b"\x08" + b"S" * 8
    with trio.fail_after(10):
        async with serve_h3(monkeypatch, certificate) as (_, endpoint, port):
            with udp_socket() as sock:
                for size in (len(packet), 100, 1199):
                    await sock.sendto(packet.ljust(size, b"\x00"), ("127.0.0.1", port))
                assert await nothing_arrives(sock)
                await sock.sendto(packet.ljust(1200, b"\x00"), ("127.0.0.1", port))
                data, _ = await sock.recvfrom(2048)
                assert data[1:5] == b"\x00\x00\x00\x00"
            assert not endpoint.connections


async def test_h3_receive_window_bounds_an_unread_body(monkeypatch, certificate) -> None:
    window = 64 * 1024
    body = os.urandom(1024 * 1024)
    release = trio.Event()
    started = trio.Event()

    async def slow_reader(scope, receive, send):
        started.set()
        await release.wait()
        size = 0
        while True:
            message = await receive()
            size += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    with trio.fail_after(15):
        async with serve_h3(
            monkeypatch, certificate, app=slow_reader, h3_receive_window=window
        ) as (_, endpoint, port):
            async with h3_client(port) as client:
                stream_id = client.start("POST", "/upload", body=body)
                await started.wait()
                await trio.sleep(0.3)
                [connection] = endpoint.connections
                buffered = sum(len(chunk) for chunk in connection._streams[stream_id].chunks)
                # The client may send one window ahead of the app, no more.
                assert window // 2 < buffered <= window
                assert client.quic._streams[stream_id].max_stream_data_remote == window
                release.set()
                response = await client.wait(stream_id)
    assert response.status == 200
    assert bytes(response.body) == str(len(body)).encode()


async def test_a_connection_queues_a_bounded_number_of_datagrams(monkeypatch, certificate) -> None:
    """Datagrams beyond :data:`MAX_QUEUED_DATAGRAMS` for one connection are dropped, as a
    full socket buffer would drop them; QUIC's loss recovery copes."""
    with trio.fail_after(10):
        async with serve_h3(monkeypatch, certificate) as (_, endpoint, port):
            async with h3_client(port) as client:
                assert (await client.request("GET", "/before")).status == 200
                [connection] = endpoint.connections
                packet = b"\x40" + client.quic._peer_cid.cid + bytes(60)
                # All at once, before the connection's task can run.
                for _ in range(4 * quic.MAX_QUEUED_DATAGRAMS):
                    endpoint.datagram_received(packet, ("127.0.0.1", 9))
                assert len(connection._queue) == quic.MAX_QUEUED_DATAGRAMS
                response = await client.request("GET", "/after")
    assert response.status == 200


async def test_h3_concurrent_streams_are_bounded_by_the_h2_limit(monkeypatch, certificate) -> None:
    """``--h2-max-concurrent-streams`` is also HTTP/3's ``initial_max_streams_bidi``: the
    client learns it in the handshake, and QUIC keeps it from opening more at once."""
    with trio.fail_after(15):
        async with serve_h3(monkeypatch, certificate, h2_max_concurrent_streams=7) as (
            _,
            _endpoint,
            port,
        ):
            async with h3_client(port) as client:
                assert (await client.request("GET", "/in")).status == 200
                assert client.quic._remote_max_streams_bidi == 7
