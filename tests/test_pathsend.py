"""File responses: ``http.response.pathsend`` and ``http.response.zerocopysend``.

Over cleartext HTTP/1.1 the kernel copies the file (``os.sendfile``, counted
here by wrapping it, while ``os.pread`` is made to fail so the bytes provably
never pass through Python); over TLS and HTTP/2 the file is read in chunks.
Either way memory stays bounded with a slow client, the ASGI rules
(content-length, HEAD, order) hold, and the connection stays reusable.
"""

from __future__ import annotations

import errno
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from conftest import run_server
from h1_client import (
    WAIT,
    RawClient,
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    open_small_buffer_stream,
    request,
)
from h2_client import h2_connect
from tls_cert import Certificate

from palfrey.asgi.headers import DefaultHeaders
from palfrey.asgi.http import HTTPCycle, Outcome
from palfrey.asgi.scope import http_scope

Scope = dict[str, Any]
KiB = 1024
MiB = 1024 * KiB


@attrs.define
class KernelCopies:
    """Counts ``os.sendfile`` calls and bytes; ``os.pread`` fails while it is installed."""

    calls: int = 0
    sent: int = 0


@pytest.fixture
def kernel_copies(monkeypatch: pytest.MonkeyPatch) -> KernelCopies:
    record = KernelCopies()
    real = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        record.calls += 1
        moved = real(out_fd, in_fd, offset, count)
        record.sent += moved
        return moved

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    return record


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's bytes must not be read into Python (the fallback's reads fail)."""

    def refuse(*args: Any) -> bytes:
        raise AssertionError("the file was read into Python")

    monkeypatch.setattr(os, "pread", refuse)
    monkeypatch.setattr(os, "preadv", refuse)


@pytest.fixture
def content(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    data = os.urandom(300 * KiB + 7)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    yield path, data


def pathsend_app(path: Path, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/small":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"small"})
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": headers or []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    return app


class TestPathsendOverCleartext:
    async def test_kernel_copies_the_file_and_the_connection_is_reused(
        self, serve: Any, content: tuple[Path, bytes], kernel_copies: KernelCopies, no_reads: None
    ) -> None:
        path, data = content
        async with serve(pathsend_app(path)) as srv, connect(srv) as client:
            await client.send(request() + request(target="/small"))
            response = await client.read_response()
            assert (await client.read_response()).body == b"small"
        assert response.status == 200
        # No length from the app: the file's, so no chunked framing.
        assert response.header(b"content-length") == b"%d" % len(data)
        assert response.header(b"transfer-encoding") is None
        assert response.body == data
        assert kernel_copies.sent == len(data)

    async def test_app_length_matching_the_file_is_kept(
        self, serve: Any, content: tuple[Path, bytes], kernel_copies: KernelCopies
    ) -> None:
        path, data = content
        app = pathsend_app(path, [(b"content-length", b"%d" % len(data))])
        async with serve(app) as srv, connect(srv) as client:
            await client.send(request())
            response = await client.read_response()
        assert response.header_list(b"content-length") == [b"%d" % len(data)]
        assert response.body == data

    async def test_head_sends_the_length_but_no_body(
        self, serve: Any, content: tuple[Path, bytes], kernel_copies: KernelCopies, no_reads: None
    ) -> None:
        path, data = content
        async with serve(pathsend_app(path)) as srv, connect(srv) as client:
            await client.send(request("HEAD") + request(target="/small"))
            response = await client.read_response(head_request=True)
            assert (await client.read_response()).body == b"small"
        assert response.header(b"content-length") == b"%d" % len(data)
        assert kernel_copies.calls == 0

    async def test_missing_file_is_a_500(self, serve: Any, tmp_path: Path) -> None:
        async with serve(pathsend_app(tmp_path / "absent")) as srv, connect(srv) as client:
            await client.send(request() + request(target="/small"))
            assert (await client.read_response()).status == 500
            assert (await client.read_response()).body == b"small"

    @pytest.mark.parametrize("bad", ["relative/path", "directory"])
    async def test_unusable_path_is_a_500(self, serve: Any, tmp_path: Path, bad: str) -> None:
        path = tmp_path if bad == "directory" else Path(bad)
        async with serve(pathsend_app(path)) as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 500

    async def test_length_that_does_not_match_the_file_is_a_500(
        self, serve: Any, content: tuple[Path, bytes]
    ) -> None:
        path, data = content
        app = pathsend_app(path, [(b"content-length", b"%d" % (len(data) + 1))])
        async with serve(app) as srv, connect(srv) as client:
            await client.send(request() + request(target="/small"))
            assert (await client.read_response()).status == 500
            assert (await client.read_response()).body == b"small"

    async def test_pathsend_after_a_body_message_is_an_error(
        self, serve: Any, content: tuple[Path, bytes]
    ) -> None:
        path, _ = content
        errors: list[BaseException] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            try:
                await send({"type": "http.response.pathsend", "path": str(path)})
            except RuntimeError as exc:
                errors.append(exc)
                raise

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            head = await client.read_head()
            # The response cannot be completed: the connection closes mid-body.
            body = await client.read_until_closed()
        assert head.status == 200
        assert b"0\r\n\r\n" not in body
        assert len(errors) == 1

    async def test_send_timeout_while_the_client_reads_nothing_closes_the_connection(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "big.bin"
        path.write_bytes(b"z" * (8 * MiB))
        outcome: list[BaseException] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/small":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"small"})
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                await send({"type": "http.response.pathsend", "path": str(path)})
            except BaseException as exc:
                outcome.append(exc)
                raise

        async with run_server(app, timeout_send=0.3) as srv:
            stalled = RawClient(await open_small_buffer_stream(srv, rcvbuf=16 * KiB))
            try:
                await stalled.send(request())
                with trio.fail_after(WAIT):
                    while not outcome:
                        await trio.sleep(0.05)
                received = await stalled.read_until_closed()
            finally:
                await stalled.aclose()
            async with connect(srv) as other:
                await other.send(request(target="/small"))
                assert (await other.read_response()).body == b"small"
        assert len(outcome) == 1
        assert len(received) < 8 * MiB


class TestZerocopysend:
    async def test_offsets_counts_and_body_messages_mix_in_one_chunked_response(
        self, serve: Any, content: tuple[Path, bytes], kernel_copies: KernelCopies, no_reads: None
    ) -> None:
        path, data = content

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/small":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"small"})
                return
            assert "http.response.zerocopysend" in scope["extensions"]
            await send({"type": "http.response.start", "status": 200, "headers": []})
            with path.open("rb") as file:
                file.seek(10)
                message = {"type": "http.response.zerocopysend", "file": file, "more_body": True}
                # From the file's position, which moves on past what was sent.
                await send({**message, "count": 5})
                await send({**message, "count": 5})
                assert file.tell() == 20
                await send({"type": "http.response.body", "body": b"|", "more_body": True})
                await send({**message, "offset": 1000, "count": 100 * KiB})
                # An explicit offset leaves the position alone; a count past the end stops there.
                assert file.tell() == 20
                await send({**message, "file": file.fileno(), "offset": len(data) - 3, "count": 99})
                await send({**message, "offset": 0, "more_body": False})

        expected = data[10:20] + b"|" + data[1000 : 1000 + 100 * KiB] + data[-3:] + data
        async with serve(app) as srv, connect(srv) as client:
            await client.send(request() + request(target="/small"))
            response = await client.read_response()
            assert (await client.read_response()).body == b"small"
        assert response.header(b"transfer-encoding") == b"chunked"
        assert response.body == expected
        assert kernel_copies.sent == len(expected) - 1

    async def test_app_length_is_held_to(self, serve: Any, content: tuple[Path, bytes]) -> None:
        path, _ = content

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            headers = [(b"content-length", b"10")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            with path.open("rb") as file:
                await send({"type": "http.response.zerocopysend", "file": file, "count": 11})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 500

    async def test_not_a_file_is_an_error(self, serve: Any) -> None:
        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.zerocopysend", "file": b"bytes"})

        async with serve(app, lifespan="off") as srv, connect(srv) as client:
            await client.send(request())
            assert (await client.read_response()).status == 500


class FakeStream:
    """An HTTPStream that records the head and body it is given."""

    supports_trailers = False
    supports_early_hints = False

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, bool]] = []

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append((status, body, end))

    async def send_body(self, body: bytes, end: bool) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append((0, body, end))


def bare_scope() -> Scope:
    """A scope offering no extension, as a stream without files would build it."""
    return http_scope(
        method=b"GET",
        target=b"/",
        headers=[],
        http_version="1.1",
        scheme="http",
        client=("127.0.0.1", 1),
        server=("127.0.0.1", 2),
        root_path="",
        state=None,
    )


@pytest.mark.parametrize("extension", ["http.response.pathsend", "http.response.zerocopysend"])
async def test_unoffered_extension_is_refused(
    extension: str, content: tuple[Path, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = content
    seen: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with path.open("rb") as file:
            try:
                await send({"type": extension, "path": str(path), "file": file})
            except RuntimeError as exc:
                seen.append(exc)
                raise

    stream = FakeStream()
    scope = bare_scope()
    outcome = await HTTPCycle(scope, stream, DefaultHeaders()).run(app)  # type: ignore[arg-type]
    assert "Expected ASGI message 'http.response.body'" in str(seen[0])
    assert stream.sent == [(500, b"Internal Server Error", True)]
    assert outcome is Outcome.COMPLETED


@pytest.mark.parametrize("cached", [True, False], ids=["page-cache", "worker-thread"])
async def test_fallback_reads_in_chunks_when_the_stream_cannot_send_files(
    content: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    """Cached bytes are read inline; a read that would wait for the disk goes to a thread."""
    path, data = content
    threads: list[Any] = []
    real_pread = os.pread

    def pread(*args: Any) -> bytes:
        threads.append(trio.lowlevel.current_trio_token)
        return real_pread(*args)

    def preadv(*args: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "not cached")

    monkeypatch.setattr(os, "pread", pread)
    if not cached:
        monkeypatch.setattr(os, "preadv", preadv)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    stream = FakeStream()
    scope = bare_scope()
    scope["extensions"]["http.response.pathsend"] = {}
    outcome = await HTTPCycle(scope, stream, DefaultHeaders()).run(app)  # type: ignore[arg-type]
    assert outcome is Outcome.COMPLETED
    assert stream.sent[0] == (200, b"", False)
    assert b"".join(body for _, body, _ in stream.sent) == data
    assert max(len(body) for _, body, _ in stream.sent) == 64 * KiB
    assert [end for _, _, end in stream.sent].count(True) == 1
    assert stream.sent[-1][2]
    assert len(threads) == (0 if cached else len(stream.sent) - 1)


async def test_pathsend_over_tls_reads_the_file(
    serve: Any, content: tuple[Path, bytes], certificate: Certificate, kernel_copies: KernelCopies
) -> None:
    path, data = content
    tls = {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile}
    async with serve(pathsend_app(path), **tls) as srv:
        with trio.fail_after(WAIT):
            async with httpx.AsyncClient(verify=certificate.client_context()) as client:
                response = await client.get(srv.url)
                small = await client.get(srv.url + "/small")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert small.text == "small"
    assert kernel_copies.calls == 0


async def test_pathsend_and_zerocopysend_over_http2(
    content: tuple[Path, bytes], kernel_copies: KernelCopies
) -> None:
    path, data = content

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/path":
            await send({"type": "http.response.pathsend", "path": str(path)})
            return
        with path.open("rb") as file:
            await send({"type": "http.response.zerocopysend", "file": file, "offset": 5})

    async with run_server(app) as srv, h2_connect(srv) as client:
        by_path = await client.get("/path")
        by_file = await client.get("/file")
        head = await client.get("/path", method="HEAD")
    assert by_path.status == 200
    assert bytes(by_path.body) == data
    assert by_path.header(b"content-length") == b"%d" % len(data)
    assert bytes(by_file.body) == data[5:]
    assert head.status == 200
    assert head.header(b"content-length") == b"%d" % len(data)
    assert bytes(head.body) == b""
    assert kernel_copies.calls == 0


@pytest.mark.parametrize("transport", ["cleartext", "tls"])
async def test_large_file_to_a_slow_client_keeps_memory_bounded(
    tmp_path: Path, certificate: Certificate, transport: str
) -> None:
    size = 32 * MiB
    path = tmp_path / "large.bin"
    with path.open("wb") as file:
        file.truncate(size)  # sparse: cheap to make, read as zeros
    options: dict[str, Any] = {"lifespan": "off"}
    if transport == "tls":
        options.update(ssl_certfile=certificate.certfile, ssl_keyfile=certificate.keyfile)
    async with run_server(pathsend_app(path), **options) as srv:
        with trio.fail_after(WAIT):
            stream: trio.abc.Stream = await trio.open_tcp_stream(srv.host, srv.port)
            if transport == "tls":
                stream = trio.SSLStream(
                    stream, certificate.client_context(), server_hostname="localhost"
                )
        tracemalloc.start()
        try:
            received = 0
            with trio.fail_after(60):
                await stream.send_all(request())
                while True:
                    data = await stream.receive_some(64 * KiB)
                    if not data:
                        break
                    received += len(data)
                    if received >= size:
                        break
                    await trio.sleep(0.0005)  # a slow reader: the server waits for room
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await stream.aclose()
    assert received > size
    # One 64 KiB chunk (plus TLS records) at a time, never the file.
    assert peak < 4 * MiB, peak


async def test_file_read_error_over_http2_resets_only_that_stream(
    content: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = content

    def failing_preadv(*args: Any) -> int:
        raise OSError(errno.EIO, "disk failure")

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/small":
            await send({"type": "http.response.body", "body": b"small"})
            return
        with path.open("rb") as file:
            await send({"type": "http.response.zerocopysend", "file": file, "more_body": True})
            monkeypatch.setattr(os, "preadv", failing_preadv)
            await send({"type": "http.response.zerocopysend", "file": file, "offset": 0})

    async with run_server(app) as srv, h2_connect(srv) as client:
        failed = await client.get("/")
        small = await client.get("/small")
    assert failed.reset is not None
    assert bytes(failed.body) == data
    assert bytes(small.body) == b"small"


async def test_file_that_ends_early_closes_the_connection(
    serve: Any, content: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head promised bytes the kernel could not find (the file shrank): the framing
    is broken, so nothing more is written on the connection."""
    path, _ = content
    monkeypatch.setattr(os, "sendfile", lambda *args: 0)
    async with serve(pathsend_app(path)) as srv, connect(srv) as client:
        await client.send(request() + request(target="/small"))
        head = await client.read_head()
        rest = await client.read_until_closed()
    assert head.status == 200
    assert rest == b""
