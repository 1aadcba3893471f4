"""The ceiling: the least a trio HTTP/1.1 server can do per request.

Answers every request with the same fixed ``/plaintext`` response, with no
ASGI, no routing and no per-request objects, so the gap between this and
Palfrey is what Palfrey's layers cost on the same event loop. ``--parse none``
only counts blank lines; ``--parse httptools`` runs llhttp over the bytes as
Palfrey's fast parser does (one parser per connection, one callback per request);
``--parse h11`` runs h11's server state machine for every request, reading
events until it pauses, and writes the fixed answer through it.

``--parse asgi`` is the least an ASGI server on trio can do while keeping
Palfrey's contracts, on Palfrey's own socket layer (its listener and
``SocketStream``, with the same yield-skipping reads): llhttp parses, each
request gets a scope dict and runs ``apps.app`` in its own copy of the
connection's context, and every ``receive()`` and ``send()`` is a trio
checkpoint. It validates nothing and serves only well-formed, unpipelined
requests with a known body length, answered with a ``content-length`` (a
response without one, such as ``apps.py``'s 404, never ends), so it is a
ceiling, not a server.

Usage: ``python benchmarks/bare_trio.py --port 8000 [--parse httptools|h11|asgi]``
"""

from __future__ import annotations

import argparse
import contextvars
import socket
from email.utils import formatdate
from functools import partial
from typing import Any

import trio

BODY = b"Hello, world!"


def response(extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n"
        b"server: bare\r\ndate: "
        + formatdate(usegmt=True).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + BODY
    )


RESPONSE = response()
#: The last answer before closing says so, as clients (wrk) otherwise count the close as an error.
RESPONSE_CLOSE = response(b"connection: close\r\n")


def answers(count: int, close: bool) -> bytes:
    return RESPONSE * (count - 1) + (RESPONSE_CLOSE if close else RESPONSE)


async def serve_counting(stream: trio.SocketStream) -> None:
    """Answer once per blank line seen; good enough for well-formed GETs."""
    async with stream:
        pending = b""
        while data := await stream.receive_some(65536):
            pending += data
            count = pending.count(b"\r\n\r\n")
            if not count:
                continue
            close = b"onnection: close" in pending
            pending = pending[pending.rfind(b"\r\n\r\n") + 4 :]
            await stream.send_all(answers(count, close))
            if close:
                return


class _Counter:
    """httptools callbacks: count complete requests, note whether the client wants to close."""

    __slots__ = ("close", "complete", "parser")

    def __init__(self) -> None:
        self.complete = 0
        self.close = False
        self.parser: Any = None

    def on_message_complete(self) -> None:
        # llhttp resets its keep-alive flags right after this callback, so ask now.
        self.complete += 1
        self.close = self.close or not self.parser.should_keep_alive()


async def serve_parsing(stream: trio.SocketStream) -> None:
    """Parse with httptools, answer each complete request, honour keep-alive."""
    import httptools  # noqa: PLC0415 - only this mode needs it

    counter = _Counter()
    counter.parser = httptools.HttpRequestParser(counter)
    async with stream:
        while data := await stream.receive_some(65536):
            try:
                counter.parser.feed_data(data)
            except httptools.HttpParserError:
                return
            if counter.complete:
                await stream.send_all(answers(counter.complete, counter.close))
                counter.complete = 0
                if counter.close:
                    return


async def serve_h11(stream: trio.SocketStream) -> None:
    """Parse and frame with h11: the least any h11 server does per request."""
    import h11  # noqa: PLC0415 - only this mode needs it

    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"13"),
        (b"server", b"bare"),
        (b"date", formatdate(usegmt=True).encode()),
    ]
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif type(event) is h11.Request:
                continue
            elif type(event) is h11.EndOfMessage:
                out = conn.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
                out += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:  # ConnectionClosed, PAUSED with a closing peer, or anything unexpected
                return


class _Request:
    """httptools callbacks for the ASGI ceiling: one request's head and body."""

    __slots__ = ("body", "complete", "headers", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.parser: Any = None
        self.reset()

    def reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False
        self.keep_alive = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        # llhttp resets its keep-alive flags right after this callback, so ask now.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


async def serve_asgi(stream: Any) -> None:
    """Parse with httptools and run each request through ``apps.app``."""
    import httptools  # noqa: PLC0415 - only this mode needs it
    from apps import app  # noqa: PLC0415 - benchmarks/ is on the path, as for every server

    # The context copy per request that Palfrey pays, stepped the same way.
    from palfrey.transport.request_context import run_in_context  # noqa: PLC0415

    date = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"
    address = stream.local_address
    server = (address[0], address[1])
    peer = stream.peer_address
    client = (peer[0], peer[1])
    request = _Request()
    parser = request.parser = httptools.HttpRequestParser(request)
    async with stream:
        while data := await stream.receive_some(65536):
            try:
                parser.feed_data(data)
            except httptools.HttpParserError:
                return
            if not request.complete:
                continue
            keep_alive = request.keep_alive
            path, _, query = request.url.partition(b"?")
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.4"},
                "http_version": parser.get_http_version(),
                "method": parser.get_method().decode("ascii"),
                "scheme": "http",
                "path": path.decode("ascii"),
                "raw_path": path,
                "query_string": query,
                "root_path": "",
                "headers": request.headers,
                "client": client,
                "server": server,
                "extensions": {},
            }
            body = request.body
            head: list[bytes] = []

            async def receive(body: bytes = body) -> dict[str, Any]:
                await trio.lowlevel.checkpoint()
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(
                message: dict[str, Any], head: list[bytes] = head, keep_alive: bool = keep_alive
            ) -> None:
                if message["type"] == "http.response.start":
                    await trio.lowlevel.checkpoint()
                    head.append(b"HTTP/1.1 %d OK\r\n" % message["status"])
                    head.extend(b"%s: %s\r\n" % field for field in message["headers"])
                    head.append(b"server: bare\r\n" + date)
                    if not keep_alive:
                        head.append(b"connection: close\r\n")
                    head.append(b"\r\n")
                    return
                out = message.get("body", b"")
                if head:
                    out = b"".join(head) + out
                    head.clear()
                await stream.send_all(out)

            request.reset()
            await run_in_context(contextvars.copy_context(), app(scope, receive, send))
            if not keep_alive:
                return


async def main(port: int, parse: str) -> None:
    serve = {"httptools": serve_parsing, "h11": serve_h11, "asgi": serve_asgi}.get(
        parse, serve_counting
    )

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    if parse != "asgi":
        await trio.serve_tcp(handler, port, host="127.0.0.1", backlog=4096)
        return
    from palfrey.transport.socket_stream import SocketListener  # noqa: PLC0415

    sock = socket.create_server(("127.0.0.1", port), backlog=4096)
    await trio.serve_listeners(handler, [SocketListener(sock, skip_redundant_yields=True)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--parse", choices=("none", "httptools", "h11", "asgi"), default="none")
    arguments = parser.parse_args()
    trio.run(partial(main, arguments.port, arguments.parse))
