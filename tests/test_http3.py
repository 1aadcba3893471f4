"""HTTP/3 end to end: a real server on UDP, aioquic's client on a trio socket."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from aioquic.h3.connection import ErrorCode
from conftest import run_server
from h3_client import h3_client

from palfrey.transport.h3_stream import SEND_HIGH_WATER

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def h3_port(server) -> int:
    [quic] = [a for a in server.addresses if a.startswith("quic://")]
    return int(quic.rsplit(":", 1)[1])


def tls(certificate) -> dict:
    """TLS options, and no lifespan: the test apps serve ``http`` scopes only."""
    return {
        "ssl_certfile": certificate.certfile,
        "ssl_keyfile": certificate.keyfile,
        "lifespan": "off",
    }


async def echo_app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = f"{size} {digest.hexdigest()}".encode()
    else:
        body = repr(
            (
                scope["http_version"],
                scope["scheme"],
                scope["method"],
                scope["path"],
                scope["query_string"],
                scope["headers"][0],
                scope["client"][0],
            )
        ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": body})


async def test_get(certificate) -> None:
    with trio.fail_after(10):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                response = await client.request("GET", "/hello?x=1", [(b"accept", b"*/*")])
    assert response.status == 200
    assert response.headers[b"x-app"] == b"1"
    assert b"server" in response.headers
    assert b"alt-svc" not in response.headers
    assert (
        bytes(response.body)
        == repr(
            ("3", "https", "GET", "/hello", b"x=1", (b"host", b"localhost"), "127.0.0.1")
        ).encode()
    )


async def test_post_5_mib_echoed(certificate) -> None:
    body = os.urandom(5 * 1024 * 1024)
    with trio.fail_after(20):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                response = await client.request("POST", "/echo", body=body)
    assert response.status == 200
    assert bytes(response.body) == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


async def test_50_concurrent_streams_on_one_connection(certificate) -> None:
    with trio.fail_after(10):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                ids = [client.start("GET", f"/n{i}") for i in range(50)]
                responses = [await client.wait(stream_id) for stream_id in ids]
    for i, response in enumerate(responses):
        assert response.status == 200
        assert f"'/n{i}'".encode() in response.body


async def test_several_connections_at_once(certificate) -> None:
    results: list[int] = []

    async def one(port: int, i: int) -> None:
        async with h3_client(port) as client:
            response = await client.request("GET", f"/c{i}")
            assert f"'/c{i}'".encode() in response.body
            results.append(response.status)

    with trio.fail_after(10):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(one, h3_port(server), i)
    assert results == [200] * 8


async def test_streaming_response_is_read_incrementally(certificate) -> None:
    release = trio.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"second"})

    with trio.fail_after(10):
        async with run_server(app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                stream_id = client.start("GET", "/")
                response = await client.wait(stream_id, lambda r: bytes(r.body) == b"first")
                assert not response.ended
                release.set()
                response = await client.wait(stream_id)
    assert bytes(response.body) == b"firstsecond"


async def test_request_body_streams_to_the_app(certificate) -> None:
    chunks: list[bytes] = []
    got_first = trio.Event()

    async def app(scope, receive, send):
        while True:
            message = await receive()
            chunks.append(message["body"])
            got_first.set()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    with trio.fail_after(10):
        async with run_server(app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                stream_id = client.start("POST", "/", body=b"part one", end=False)
                await got_first.wait()
                assert b"".join(chunks) == b"part one"
                client.send(stream_id, b" and two", end=True)
                response = await client.wait(stream_id)
    assert response.status == 204
    assert b"".join(chunks) == b"part one and two"


async def test_client_reset_gives_the_app_a_disconnect(certificate) -> None:
    started = trio.Event()
    received: list[dict] = []
    send_error: list[BaseException] = []
    done = trio.Event()

    async def app(scope, receive, send):
        await receive()
        started.set()
        received.append(await receive())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as exc:
            send_error.append(exc)
        done.set()

    with trio.fail_after(10):
        async with run_server(app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                stream_id = client.start("POST", "/", body=b"x", end=False)
                await started.wait()
                client.reset(stream_id)
                await done.wait()
    assert received == [{"type": "http.disconnect"}]
    assert len(send_error) == 1


async def test_limit_request_body_gives_413(certificate) -> None:
    with trio.fail_after(10):
        async with run_server(
            echo_app, http="h3", limit_request_body=1000, **tls(certificate)
        ) as server:
            async with h3_client(h3_port(server)) as client:
                response = await client.request("POST", "/echo", body=b"x" * 5000)
                assert response.status == 413
                again = await client.request("GET", "/")
    assert again.status == 200


async def test_garbage_datagrams_then_a_working_request(certificate) -> None:
    rng = random.Random(7)
    with trio.fail_after(15):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            port = h3_port(server)
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                for i in range(500):
                    size = rng.choice((0, 1, 20, 100, 1200, 1300))
                    data = bytes(rng.getrandbits(8) for _ in range(size))
                    if i % 3 == 0 and size >= 1200:
                        # Long header, Initial type bits, version 1: parsed, then rejected.
                        data = b"\xc0\x00\x00\x00\x01" + data[5:]
                    elif i % 3 == 1 and size >= 20:
                        data = b"\xc0\x1a\x2b\x3c\x4d" + data[5:]  # unknown version
                    await sock.sendto(data, ("127.0.0.1", port))
                    if i % 50 == 0:
                        await trio.sleep(0.01)
            async with h3_client(port) as client:
                response = await client.request("GET", "/after")
    assert response.status == 200
    assert b"'/after'" in response.body


async def test_version_negotiation_for_unknown_versions(certificate) -> None:
    with trio.fail_after(10):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                packet = b"\xc0\x1a\x2b\x3c\x4d" + b"\x08" + b"D" * 8 + b"\x08" + b"S" * 8
                await sock.sendto(packet + bytes(1200), ("127.0.0.1", h3_port(server)))
                data, _ = await sock.recvfrom(2048)
    # Version 0 marks Version Negotiation (RFC 9000 §17.2.1); our ids are swapped back.
    assert data[1:5] == b"\x00\x00\x00\x00"
    assert data[5:6] == b"\x08" and data[6:14] == b"S" * 8
    assert b"\x00\x00\x00\x01" in data[14 + 9 :]


async def test_shutdown_lets_an_in_flight_request_finish(certificate) -> None:
    started = trio.Event()
    release = trio.Event()

    async def app(scope, receive, send):
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    with trio.fail_after(10):
        async with run_server(app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                stream_id = client.start("GET", "/")
                await started.wait()
                server.shutdown()
                await trio.sleep(0.2)
                release.set()
                response = await client.wait(stream_id)
                assert bytes(response.body) == b"finished"
                # Then CONNECTION_CLOSE, with no error (RFC 9114 §8.1).
                await client.closed.wait()
                assert client.terminated.error_code == ErrorCode.H3_NO_ERROR


async def test_quic_bind_beside_tcp_with_alt_svc(certificate) -> None:
    async def app(scope, receive, send):
        headers = [(b"alt-svc", b"custom")] if scope["path"] == "/own" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": scope["http_version"].encode()})

    with trio.fail_after(15):
        async with run_server(
            app, http="auto", quic_bind=["127.0.0.1:0"], **tls(certificate)
        ) as server:
            port = h3_port(server)
            context = ssl.create_default_context(cafile=certificate.certfile)
            async with httpx.AsyncClient(verify=context) as http1:
                r1 = await http1.get(f"https://127.0.0.1:{server.port}/")
                own = await http1.get(f"https://127.0.0.1:{server.port}/own")
            async with httpx.AsyncClient(verify=context, http1=False, http2=True) as http2:
                r2 = await http2.get(f"https://127.0.0.1:{server.port}/")
            async with h3_client(port) as client:
                r3 = await client.request("GET", "/")
    assert (r1.http_version, r1.text) == ("HTTP/1.1", "1.1")
    assert r1.headers["alt-svc"] == f'h3=":{port}"; ma=86400'
    assert own.headers.get_list("alt-svc") == ["custom"]
    assert (r2.http_version, r2.text) == ("HTTP/2", "2")
    assert r2.headers["alt-svc"] == f'h3=":{port}"; ma=86400'
    assert bytes(r3.body) == b"3"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--http", "h3"], "http = 'h3' needs ssl_certfile and ssl_keyfile"),
        (["--quic-bind", "127.0.0.1:4433"], "quic_bind needs ssl_certfile and ssl_keyfile"),
        (["--http", "h3", "--uds", "/tmp/x.sock", "CERT"], "cannot use uds"),
        (["--http", "h3", "--fd", "3", "CERT"], "cannot use fd"),
        (["--quic-bind", "nonsense", "CERT"], "HOST:PORT"),
    ],
)
def test_configuration_errors(certificate, extra, message) -> None:
    if "CERT" in extra:
        extra = [a for a in extra if a != "CERT"]
        extra += ["--ssl-certfile", certificate.certfile, "--ssl-keyfile", certificate.keyfile]
    result = subprocess.run(
        [sys.executable, "-m", "palfrey", "palfrey.demo:app", *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_client_that_stops_reading_holds_bounded_memory(certificate) -> None:
    outcome: list[object] = []
    sent = 0

    async def app(scope, receive, send):
        nonlocal sent
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(200):  # 12.5 MiB if nothing pushed back
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
                sent += 65536
        except OSError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with run_server(app, http="h3", timeout_send=0.5, **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                stream_id = client.start("GET", "/")
                await client.wait(stream_id, lambda r: len(r.body) > 0)
                client.stop_reading = True
                while not outcome:
                    await trio.sleep(0.05)
                response = client.responses[stream_id]
    assert isinstance(outcome[0], OSError)
    # What the client never acknowledged stayed below the stream's high-water mark
    # (plus the client's window in flight, which it took before it stopped).
    assert sent - len(response.body) <= SEND_HIGH_WATER + 2 * 1024 * 1024
    assert sent < 8 * 1024 * 1024


async def extensions_app(scope, receive, send):
    extensions = scope["extensions"]
    if scope["path"] == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
        return
    assert "http.response.early_hint" in extensions
    await send(
        {
            "type": "http.response.early_hint",
            "links": [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"],
        }
    )
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hinted"})


async def test_trailers_when_the_client_accepts_them(certificate) -> None:
    with trio.fail_after(10):
        async with run_server(extensions_app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                with_te = await client.request("GET", "/trailers", [(b"te", b"trailers")])
                without = await client.request("GET", "/trailers")
    assert with_te.status == 200
    assert bytes(with_te.body) == b"body"
    assert len(with_te.heads) == 2
    assert with_te.heads[1] == [(b"x-checksum", b"abc")]
    assert with_te.ended
    # Without ``te: trailers`` the app may still send them; they are not put on the wire.
    assert bytes(without.body) == b"body"
    assert len(without.heads) == 1
    assert without.ended


async def test_early_hints_are_a_103_with_link_headers(certificate) -> None:
    with trio.fail_after(10):
        async with run_server(extensions_app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                response = await client.request("GET", "/hints")
    interim, final = response.heads
    assert interim[0] == (b":status", b"103")
    assert [value for name, value in interim if name == b"link"] == [
        b"</style.css>; rel=preload; as=style",
        b"</app.js>; rel=preload",
    ]
    assert dict(final)[b":status"] == b"200"
    assert response.status == 200
    assert bytes(response.body) == b"hinted"


async def test_access_log_says_http_3(certificate, caplog) -> None:
    with trio.fail_after(10), caplog.at_level(logging.INFO, logger="palfrey.access"):
        async with run_server(echo_app, http="h3", **tls(certificate)) as server:
            async with h3_client(h3_port(server)) as client:
                await client.request("GET", "/logged?n=1")
                await client.request("POST", "/echo", body=b"abc")
    lines = [r.getMessage() for r in caplog.records if r.name == "palfrey.access"]
    assert len(lines) == 2, lines
    assert sum('"GET /logged?n=1 HTTP/3" 200' in line for line in lines) == 1
    assert sum('"POST /echo HTTP/3" 200' in line for line in lines) == 1
    assert all(line.startswith("127.0.0.1:") for line in lines)


async def test_signal_during_an_http3_request_exits_0_after_it_finishes(certificate) -> None:
    """The whole process: SIGTERM while an HTTP/3 request is in flight lets it finish
    (GOAWAY, then CONNECTION_CLOSE) and the process exits with status 0."""
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "palfrey",
            "process_apps:slow",
            "--app-dir",
            "tests",
            "--http",
            "h3",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--ssl-certfile",
            certificate.certfile,
            "--ssl-keyfile",
            certificate.keyfile,
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = None
        with trio.fail_after(15):
            while port is None:
                line = await trio.to_thread.run_sync(process.stdout.readline)
                assert line, "the server exited before it started"
                match = re.search(r"Palfrey running on https://127\.0\.0\.1:(\d+) \(HTTP/3", line)
                if match:
                    port = int(match.group(1))
            async with h3_client(port) as client:
                stream_id = client.start("GET", "/")
                await trio.sleep(0.2)
                process.send_signal(signal.SIGTERM)
                response = await client.wait(stream_id)
            assert bytes(response.body) == b"finished"
            status = await trio.to_thread.run_sync(process.wait)
        assert status == 0
    finally:
        process.kill()
        process.wait()
