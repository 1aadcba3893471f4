"""A small, bounded HTTP/3 load generator on aioquic (h2load has no HTTP/3 here).

    python benchmarks/h3_load.py --port 8443 -c 8 -m 16 -n 20000 --duration 30
    python benchmarks/h3_load.py --port 8443 -n 1 -c 1 -m 1          # one GET, as a check

``-c`` QUIC connections, each with ``-m`` request streams in flight, ask for ``-n``
requests in all (``GET --path``) and stop after ``--duration`` seconds at most,
whichever comes first; streams still open ``--grace`` seconds after the last
request was started count as timed out. Every connection is a client
``QuicConnection`` + ``H3Connection`` from aioquic on a UDP socket of its own,
and one thread drives them all with ``selectors`` (no asyncio, no trio: the
client's own overhead is aioquic's and little more). The certificate is not
verified (``CERT_NONE``), as the servers use a throwaway self-signed one.

The last line printed is one JSON object: requests asked for, started, done
(complete answers with the expected status and, if ``--expect`` is given,
body), failed (reset, wrong status or body, connection closed under it, timed
out), run time from the first request to the last answer, requests per second,
handshake time and latency (mean, p50, p99, max, in ms). The exit status is 0 if
every connection completed its handshake, else 1.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamReset

RECEIVE = 65536
SOCKET_BUFFER = 4 * 1024 * 1024


@dataclass
class Stream:
    started: float
    status: int = 0
    body: bytearray = field(default_factory=bytearray)


@dataclass
class Totals:
    asked: int
    started: int = 0
    done: int = 0
    failed: int = 0
    first: float = 0.0
    last: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str, count: int = 1) -> None:
        self.failed += count
        self.errors[why] = self.errors.get(why, 0) + count


class Client:
    """One QUIC connection and its streams in flight."""

    def __init__(self, address: tuple[str, int], args: argparse.Namespace, now: float) -> None:
        self.address = address
        self.args = args
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(address)
        self.sock.setblocking(False)
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            verify_mode=ssl.CERT_NONE,
            server_name=args.authority,
            idle_timeout=args.grace + 5,
        )
        self.quic = QuicConnection(configuration=configuration)
        self.h3 = H3Connection(self.quic)
        self.streams: dict[int, Stream] = {}
        self.ready = False
        self.closed = False
        self.handshake_ms = 0.0
        self.connect_at = now
        self.quic.connect(address, now=now)
        self.headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", args.authority.encode()),
            (b":path", args.path.encode()),
            (b"user-agent", b"palfrey-h3-load"),
        ]

    def start(self, now: float) -> None:
        stream_id = self.quic.get_next_available_stream_id()
        self.h3.send_headers(stream_id, self.headers, end_stream=True)
        self.streams[stream_id] = Stream(now)

    def events(self, totals: Totals, now: float) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.ready = True
                self.handshake_ms = (now - self.connect_at) * 1000
            elif isinstance(event, ConnectionTerminated):
                self.closed = True
                if self.streams:
                    totals.fail(f"connection closed: {event.reason_phrase or event.error_code}")
                    totals.failed += len(self.streams) - 1
                    self.streams.clear()
            elif (
                isinstance(event, StreamReset)
                and self.streams.pop(event.stream_id, None) is not None
            ):
                totals.fail(f"stream reset {event.error_code:#x}")
            for h3_event in self.h3.handle_event(event):
                stream = self.streams.get(h3_event.stream_id)
                if stream is None:
                    continue
                if isinstance(h3_event, HeadersReceived):
                    for name, value in h3_event.headers:
                        if name == b":status":
                            stream.status = int(value)
                elif isinstance(h3_event, DataReceived):
                    stream.body += h3_event.data
                if h3_event.stream_ended:
                    del self.streams[h3_event.stream_id]
                    self.finished(stream, totals, now)

    def finished(self, stream: Stream, totals: Totals, now: float) -> None:
        expect = self.args.expect
        if stream.status != self.args.status:
            totals.fail(f"status {stream.status}")
        elif expect is not None and bytes(stream.body) != expect:
            totals.fail("unexpected body")
        else:
            totals.done += 1
            totals.latencies.append(now - stream.started)
        totals.last = now

    def flush(self, now: float) -> None:
        for data, _addr in self.quic.datagrams_to_send(now):
            try:
                self.sock.send(data)
            except BlockingIOError:  # dropped: QUIC's loss recovery sends it again
                pass
            except OSError:  # ECONNREFUSED after the server went away, for one
                pass


def run(args: argparse.Namespace) -> dict:
    address = (args.host, args.port)
    selector = selectors.DefaultSelector()
    now = time.monotonic()
    clients = [Client(address, args, now) for _ in range(args.connections)]
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
        client.flush(now)
    totals = Totals(asked=args.requests)
    handshake_by = now + args.handshake_timeout
    stop_starting = None  # when requests began + duration
    give_up = None  # when no more answers are awaited
    while True:
        now = time.monotonic()
        dirty: set[Client] = set()
        # Start requests: only once every connection is ready, so that the clock does not
        # count handshakes and every connection gets the same share of the load.
        if stop_starting is None and all(c.ready or c.closed for c in clients):
            stop_starting = now + args.duration
            totals.first = now
        if stop_starting is not None:
            if now >= stop_starting:
                totals.asked = min(totals.asked, totals.started)
            for client in clients:
                if client.closed:
                    continue
                while len(client.streams) < args.streams and totals.started < totals.asked:
                    client.start(now)
                    totals.started += 1
                    dirty.add(client)
            in_flight = sum(len(c.streams) for c in clients)
            if totals.started >= totals.asked and not in_flight:
                break
            if totals.started >= totals.asked and give_up is None:
                give_up = now + args.grace
            if give_up is not None and now >= give_up:
                totals.fail("timed out", in_flight)
                break
        elif now >= handshake_by:  # go on with the connections that are ready, if any
            for client in clients:
                client.closed = client.closed or not client.ready
        if all(c.closed for c in clients):
            break
        for client in dirty:
            client.flush(now)
        timers = [t for c in clients if (t := c.quic.get_timer()) is not None]
        deadlines = [*timers, handshake_by if stop_starting is None else give_up or stop_starting]
        timeout = max(0.0, min(deadlines) - time.monotonic())
        ready = selector.select(timeout)
        now = time.monotonic()
        for key, _mask in ready:
            client = key.data
            sock = client.sock
            for _ in range(256):  # bounded, so no connection starves the others
                try:
                    data = sock.recv(RECEIVE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ECONNREFUSED: nobody listens there (yet)
                    break
                client.quic.receive_datagram(data, address, now)
            client.events(totals, now)
            client.flush(now)
        for client in clients:
            timer = client.quic.get_timer()
            if timer is not None and timer <= now:
                client.quic.handle_timer(now)
                client.events(totals, now)
                client.flush(now)
    now = time.monotonic()
    for client in clients:
        client.quic.close()
        client.flush(now)
        selector.unregister(client.sock)
        client.sock.close()
    handshakes = [c.handshake_ms for c in clients if c.ready]
    latencies = sorted(totals.latencies)
    seconds = max(1e-9, totals.last - totals.first) if totals.done else 0.0

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "asked": args.requests,
        "started": totals.started,
        "done": totals.done,
        "failed": totals.failed,
        "errors": totals.errors,
        "seconds": seconds,
        "rps": totals.done / seconds if seconds else 0.0,
        "connections": args.connections,
        "handshakes": len(handshakes),
        "handshake_ms": max(handshakes) if handshakes else None,
        "mean_ms": 1000 * sum(latencies) / len(latencies) if latencies else 0.0,
        "p50_ms": pick(0.5) if latencies else 0.0,
        "p99_ms": pick(0.99) if latencies else 0.0,
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/plaintext")
    parser.add_argument("--authority", default="localhost")
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("-m", "--streams", type=int, default=16, help="streams in flight each")
    parser.add_argument("-n", "--requests", type=int, default=10000, help="requests in all")
    parser.add_argument("--duration", type=float, default=30.0, help="stop starting after this")
    parser.add_argument("--grace", type=float, default=5.0, help="wait for answers this long")
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    parser.add_argument("--status", type=int, default=200, help="expected status")
    parser.add_argument(
        "--expect", type=lambda s: s.encode(), default=None, help="expected body (default: any)"
    )
    return parser


def main() -> int:
    args = parser().parse_args()
    result = run(args)
    print(json.dumps(result), flush=True)
    return 0 if result["handshakes"] == args.connections else 1


if __name__ == "__main__":
    sys.exit(main())
