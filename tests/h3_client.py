"""A small HTTP/3 client for tests: aioquic's QuicConnection + H3Connection on a trio UDP socket."""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamReset


@attrs.define
class Response:
    """What the client got on one stream so far."""

    heads: list[list[tuple[bytes, bytes]]] = attrs.Factory(list)
    body: bytearray = attrs.Factory(bytearray)
    ended: bool = False
    reset: int | None = None
    changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def final_head(self) -> list[tuple[bytes, bytes]]:
        """The response head: not an interim (1xx) one, nor the trailers (no ``:status``)."""
        return next(h for h in self.heads if dict(h).get(b":status", b"1")[:1] != b"1")

    @property
    def status(self) -> int:
        return int(dict(self.final_head)[b":status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.final_head)


class H3Client:
    def __init__(self, sock: trio.socket.SocketType, address: tuple[str, int]) -> None:
        self.sock = sock
        self.address = address
        self.quic = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE
            )
        )
        self.h3 = H3Connection(self.quic)
        self.responses: dict[int, Response] = {}
        self.terminated: ConnectionTerminated | None = None
        self.closed = trio.Event()
        self._kick = trio.Event()
        self.stop_reading = False

    def kick(self) -> None:
        self._kick.set()

    async def _reader(self) -> None:
        while True:
            data, addr = await self.sock.recvfrom(65536)
            if self.stop_reading:
                continue
            self.quic.receive_datagram(data, addr, trio.current_time())
            self.kick()

    async def _driver(self) -> None:
        while True:
            self._kick = trio.Event()
            timer = self.quic.get_timer()
            now = trio.current_time()
            if timer is not None and timer <= now:
                self.quic.handle_timer(now)
            self._process_events()
            for data, addr in self.quic.datagrams_to_send(trio.current_time()):
                await self.sock.sendto(data, addr)
            if self.terminated is not None:
                self.closed.set()
            timer = self.quic.get_timer()
            with trio.move_on_at(math.inf if timer is None else timer):
                await self._kick.wait()

    def _process_events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                self.terminated = event
                for response in self.responses.values():
                    response.changed.set()
            if isinstance(event, StreamReset) and event.stream_id in self.responses:
                response = self.responses[event.stream_id]
                response.reset = event.error_code
                response.changed.set()
            for h3_event in self.h3.handle_event(event):
                response = self.responses.get(h3_event.stream_id)
                if response is None:
                    continue
                if isinstance(h3_event, HeadersReceived):
                    response.heads.append(h3_event.headers)
                elif isinstance(h3_event, DataReceived):
                    response.body += h3_event.data
                response.ended = response.ended or h3_event.stream_ended
                response.changed.set()

    def start(
        self,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        end: bool = True,
    ) -> int:
        stream_id = self.quic.get_next_available_stream_id()
        self.responses[stream_id] = Response()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.h3.send_headers(stream_id, fields, end_stream=end and not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=end)
        self.kick()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(stream_id, data, end_stream=end)
        self.kick()

    def reset(self, stream_id: int, code: int = 0x10C) -> None:
        self.quic.reset_stream(stream_id, code)
        self.quic.stop_stream(stream_id, code)
        self.kick()

    async def wait(
        self, stream_id: int, until=lambda r: r.ended or r.reset is not None
    ) -> Response:
        response = self.responses[stream_id]
        while not until(response):
            if self.terminated is not None:
                raise ConnectionError(f"connection terminated: {self.terminated}")
            response.changed = trio.Event()
            await response.changed.wait()
        return response

    async def request(self, *args, **kwargs) -> Response:
        return await self.wait(self.start(*args, **kwargs))


@asynccontextmanager
async def h3_client(port: int, host: str = "127.0.0.1") -> AsyncIterator[H3Client]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    client = H3Client(sock, (host, port))
    client.quic.connect((host, port), now=trio.current_time())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._reader)
        nursery.start_soon(client._driver)
        try:
            yield client
        finally:
            client.quic.close()
            client.kick()
            with trio.move_on_after(0.2):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    sock.close()
