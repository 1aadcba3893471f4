"""A deliberately dumb HTTP/1.1 client over raw trio sockets, for the HTTP/1.1 test suite.

httpx normalises too much to test malformed input, pipelining or exact status
lines, so these helpers send exactly the bytes a test gives and parse the
answer by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio

#: Upper bound for any single network wait in these tests.
WAIT = 5.0


@attrs.define
class Response:
    """One parsed response; ``head`` is the status line and headers exactly as received."""

    http_version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    head: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.header_list(name)
        return values[0] if values else None

    def header_list(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name.lower()]


class RawClient:
    """One TCP connection that sends raw bytes and parses responses from the buffer."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.eof = True
            raise EOFError("connection closed by the server")
        self.buffer += data

    async def _read_until(self, marker: bytes) -> bytes:
        while (index := self.buffer.find(marker)) == -1:
            await self._fill()
        data = bytes(self.buffer[: index + len(marker)])
        del self.buffer[: index + len(marker)]
        return data

    async def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_head(self, timeout: float = WAIT) -> Response:
        """Read a status line and headers only (also for ``100 Continue``)."""
        with trio.fail_after(timeout):
            head = await self._read_until(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        version, status, *reason = status_line.split(b" ", 2)
        headers = []
        for line in lines:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        return Response(version, int(status), reason[0] if reason else b"", headers, b"", head)

    async def read_response(self, *, head_request: bool = False, timeout: float = WAIT) -> Response:
        """Read one final response, skipping ``1xx`` interim responses."""
        with trio.fail_after(timeout):
            response = await self.read_head(timeout)
            while 100 <= response.status < 200:
                response = await self.read_head(timeout)
            if head_request or response.status in (204, 304):
                return response
            length = response.header(b"content-length")
            if response.header(b"transfer-encoding") == b"chunked":
                response.body = await self._read_chunked()
            elif length is not None:
                response.body = await self._read_exactly(int(length))
            else:
                response.body = await self.read_until_closed()
        return response

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self._read_until(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                # The trailer section, if any, up to its empty line.
                while await self._read_until(b"\r\n") != b"\r\n":
                    pass
                return bytes(body)
            body += await self._read_exactly(size)
            await self._read_exactly(2)

    async def read_exactly(self, size: int, timeout: float = WAIT) -> bytes:
        """The next ``size`` bytes, whatever they are (a body with its chunk framing)."""
        with trio.fail_after(timeout):
            return await self._read_exactly(size)

    async def read_until_closed(self, timeout: float = WAIT) -> bytes:
        """Everything the server sends until it closes the connection."""
        with trio.fail_after(timeout):
            while not self.eof:
                try:
                    await self._fill()
                except EOFError:
                    break
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def assert_closed(self, timeout: float = WAIT) -> None:
        """The server closes the connection without sending anything more."""
        assert await self.read_until_closed(timeout) == b""

    async def assert_silent(self, duration: float) -> None:
        """Nothing arrives and the connection stays open for ``duration`` seconds."""
        with trio.move_on_after(duration):
            await self._fill()
            raise AssertionError(f"unexpected data: {bytes(self.buffer)!r}")

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture(autouse=True)
def no_connection_crashes(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if a connection task died of an unexpected exception.

    Import it into a test module to apply it to every test there.
    """
    with caplog.at_level(logging.ERROR, logger="palfrey.error"):
        yield
    crashes = [r for r in caplog.records if r.getMessage().startswith("Unhandled error")]
    assert crashes == [], [r.exc_info for r in crashes]


@asynccontextmanager
async def connect(server: Any) -> AsyncIterator[RawClient]:
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(server.host, server.port)
    client = RawClient(stream)
    try:
        yield client
    finally:
        await client.aclose()


def request(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    """Bytes of a well-formed request; adds Host and Content-Length when needed."""
    lines = [f"{method} {target} HTTP/{version}"]
    headers = list(headers or [])
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        headers.insert(0, ("Host", "testserver"))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def assert_still_serving(server: Any) -> None:
    """A fresh connection still gets a normal answer (the server survived what came before)."""
    with trio.fail_after(WAIT):
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url + "/still-alive")
    assert response.status_code < 500, response


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``ok`` to every request and ignores lifespan."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


# Sockets with small, fixed buffers and abrupt disconnects, for tests that measure
# back-pressure, interrupted writes and resource leaks.


def small_buffer_listener(*, rcvbuf: int | None = None, sndbuf: int | None = None) -> int:
    """A listening socket on 127.0.0.1 for ``Config(fd=...)``; the server takes ownership.

    Buffer sizes set on a listening socket are inherited by every connection it
    accepts, and setting them turns off the kernel's autotuning, so the
    server's kernel buffers stay this small.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock.detach()


async def open_small_buffer_stream(
    server: Any, *, rcvbuf: int | None = None, sndbuf: int | None = None
) -> trio.SocketStream:
    """A client connection whose kernel buffers are fixed (set before connecting)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        with trio.fail_after(WAIT):
            await sock.connect((server.host, server.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make closing ``stream`` send RST instead of FIN (``SO_LINGER`` with a zero timeout)."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def open_fd_count() -> int:
    """File descriptors open in this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))
