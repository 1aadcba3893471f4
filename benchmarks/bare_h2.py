"""The HTTP/2 ceiling: the least a trio + h2 server can do per stream.

Speaks cleartext HTTP/2 with prior knowledge (h2c, as ``h2load`` does) and
answers every stream with the same fixed ``/plaintext`` response: no ASGI, no
routing, no task per stream. One task per connection feeds what it reads to
the ``h2`` state machine, answers each stream that has ended, and sends
everything that batch produced in one write. The gap between this and Palfrey
is what Palfrey's layers cost over the same event loop and HTTP/2 library.

Incoming headers are validated and normalised by ``h2`` as any server must;
the outgoing ones are constants, so their checks are switched off.

Usage: ``python benchmarks/bare_h2.py --port 8000``
"""

from __future__ import annotations

import argparse
import contextlib
from email.utils import formatdate
from functools import partial

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

BODY = b"Hello, world!"
HEADERS = [
    (b":status", b"200"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"13"),
    (b"server", b"bare"),
    (b"date", formatdate(usegmt=True).encode()),
]
CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


async def serve(stream: trio.SocketStream) -> None:
    conn = h2.connection.H2Connection(config=CONFIG)
    conn.initiate_connection()
    async with stream:
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            try:
                events = conn.receive_data(data)
                for event in events:
                    kind = type(event)
                    if kind is h2.events.StreamEnded:
                        try:
                            conn.send_headers(event.stream_id, HEADERS)
                            conn.send_data(event.stream_id, BODY, end_stream=True)
                        except h2.exceptions.StreamClosedError:  # reset by the client meanwhile
                            continue
                    elif kind is h2.events.DataReceived and (size := event.flow_controlled_length):
                        conn.acknowledge_received_data(size, event.stream_id)  # keep bodies flowing
            except h2.exceptions.ProtocolError:  # bad input, or after GOAWAY: the end
                await stream.send_all(conn.data_to_send())
                return
            if out := conn.data_to_send():
                await stream.send_all(out)


async def main(port: int) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    await trio.serve_tcp(handler, port, host="127.0.0.1", backlog=4096)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C (SIGINT) is how it is stopped
        trio.run(partial(main, parser.parse_args().port))
