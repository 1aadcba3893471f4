"""The ceiling: the least a trio HTTP/1.1 server can do per request.

Answers every request with the same fixed ``/plaintext`` response, with no
ASGI, no routing and no per-request objects, so the gap between this and
Palfrey is what Palfrey's layers cost on the same event loop. ``--parse none``
only counts blank lines; ``--parse httptools`` runs llhttp over the bytes as
Palfrey's fast parser does (one parser per connection, one callback per request);
``--parse h11`` runs h11's server state machine for every request, reading
events until it pauses, and writes the fixed answer through it.

Usage: ``python benchmarks/bare_trio.py --port 8000 [--parse httptools|h11]``
"""

from __future__ import annotations

import argparse
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


async def main(port: int, parse: str) -> None:
    serve = {"httptools": serve_parsing, "h11": serve_h11}.get(parse, serve_counting)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    await trio.serve_tcp(handler, port, host="127.0.0.1", backlog=4096)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--parse", choices=("none", "httptools", "h11"), default="none")
    arguments = parser.parse_args()
    trio.run(partial(main, arguments.port, arguments.parse))
