"""Soak test: mixed HTTP/1.1, HTTP/2, HTTP/3 and WebSocket traffic for N minutes.

Not part of the test run. A leak that costs a few bytes or one file descriptor per
connection passes every unit test and only shows after hours in production, so this script
keeps one Palfrey process busy with every protocol at once and watches whether its
resources level off::

    .venv/bin/python benchmarks/soak.py                       # 10 minutes -> results/soak.md
    .venv/bin/python benchmarks/soak.py --minutes 1 --output /tmp/soak.md

Palfrey runs as a subprocess on 127.0.0.1 with a throwaway self-signed certificate: TLS on
TCP (HTTP/1.1 and HTTP/2 by ALPN, WebSocket over ``wss``), HTTP/3 on the same port number
over UDP, and the metrics endpoint on a port of its own. It serves :func:`app` from this
file: ``apps.py`` for HTTP plus a WebSocket echo. Clients (all in this process, on trio,
bounded in number, each pausing ``--pause`` seconds between requests so a benchmark run
beside it is not starved):

* HTTP/1.1 (httpx): keep-alive clients, and one client that opens a new connection per
  request; GET ``/plaintext``, POST 1 KiB to ``/echo``, now and then GET ``/stream`` (1 MiB).
* HTTP/2 (httpx ``http2=True``): clients with several streams in flight, reconnecting now
  and then, so connections are opened and closed too.
* HTTP/3 (aioquic's sans-I/O client on a trio UDP socket): connections of 40 requests
  each, four streams in flight.
* WebSocket (trio-websocket): short sessions of 20 echoes, and one that stays open for the
  whole run.

Every ``--interval`` seconds the script samples the server's RSS, threads and open file
descriptors (``/proc``) and, from ``/metrics``, open connections, open streams and open
WebSockets. A series "grows" when the median of its last third is above the median of its
middle third by more than its tolerance *and* the least-squares slope over the last two
thirds, times that span, is too; the first third is the warm-up. Any growing series or any
client error fails the run (exit status 1). The markdown report (``--output``) has the
counts, the series one row a minute, and the verdict per series.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from apps import app as http_app  # noqa: E402 (after the path insert, for the subprocess too)
from ws_echo import app as websocket_echo  # noqa: E402

ECHO_BODY = os.urandom(1024)
PAGE = 4096


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``apps.app`` for lifespan and HTTP, and a WebSocket echo, which ``apps.app`` lacks."""
    if scope["type"] == "http" and scope["path"] == OBJECTS_PATH and os.environ.get(DEBUG_ENV):
        body = json.dumps(object_counts()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "websocket":
        await websocket_echo(scope, receive, send)
    else:
        await http_app(scope, receive, send)


OBJECTS_PATH = "/_soak/objects"
DEBUG_ENV = "PALFREY_SOAK_OBJECTS"


def object_counts() -> dict[str, int]:
    """Live objects per type in the server (``--objects``): what grows when the RSS does."""
    gc.collect()  # count what is still referenced, not cycles waiting for the collector
    objects = gc.get_objects()
    counts = Counter(type(o).__qualname__ for o in objects)
    counts["<all gc objects>"] = sum(counts.values())
    for context in (o for o in objects if isinstance(o, ssl.SSLContext)):
        # OpenSSL's session cache lives outside the Python heap: count it too.
        counts["<ssl sessions cached>"] += context.session_stats()["number"]
    return dict(counts)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    """A port number free for both TCP and UDP, since HTTP/3 shares the TCP port's number."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


def wait_for_metrics_url(log: Path, process: subprocess.Popen[bytes], timeout: float) -> str:
    """The metrics endpoint's URL from the server's log: it binds port 0, so only it knows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        text = log.read_text(errors="replace")
        match = re.search(r"Metrics on (http://\S+/metrics)", text)
        if match and "Application startup complete" in text:
            return match.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")


# --------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    t: float
    rss_kib: int
    threads: int
    fds: int
    connections: float
    streams: float
    websockets: float
    requests: float


SERIES = {
    # name: (label in the report, absolute tolerance, relative tolerance)
    "rss_kib": ("RSS (KiB)", 4096.0, 0.05),
    "fds": ("open fds", 8.0, 0.0),
    "threads": ("threads", 2.0, 0.0),
    "connections": ("open connections", 8.0, 0.0),
    "streams": ("open streams", 16.0, 0.0),
    "websockets": ("open WebSockets", 4.0, 0.0),
}


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def parse_metrics(text: str) -> dict[str, float]:
    """Each metric summed over its labels: the soak cares about totals, not per protocol."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def metrics_get(url: str) -> str:
    """A plain HTTP GET on its own short connection, so httpx's pools are not involved."""
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match is not None
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        body = dechunk(body)
    return body.decode()


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def take_sample(pid: int, url: str, started: float) -> Sample:
    status = proc_status(pid)
    metrics = parse_metrics(metrics_get(url))
    return Sample(
        t=time.monotonic() - started,
        rss_kib=int(status["VmRSS"].split()[0]),
        threads=int(status["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        connections=metrics.get("palfrey_connections_open", 0.0),
        streams=metrics.get("palfrey_streams_open", 0.0),
        websockets=metrics.get("palfrey_websockets_open", 0.0),
        requests=metrics.get("palfrey_requests_total", 0.0),
    )


@dataclass
class Verdict:
    name: str
    middle: float
    last: float
    slope_per_min: float
    allowed: float
    grows: bool


def judge(samples: list[Sample]) -> list[Verdict]:
    """Steady growth, not noise: the later level *and* the trend must both exceed tolerance."""
    n = len(samples)
    middle, last = samples[n // 3 : 2 * n // 3], samples[2 * n // 3 :]
    tail = samples[n // 3 :]
    verdicts = []
    for name, (_label, absolute, relative) in SERIES.items():
        mid_values = [float(getattr(s, name)) for s in middle]
        last_values = [float(getattr(s, name)) for s in last]
        xs = [s.t for s in tail]
        ys = [float(getattr(s, name)) for s in tail]
        m_mid, m_last = statistics.median(mid_values), statistics.median(last_values)
        slope = statistics.linear_regression(xs, ys).slope if len(set(xs)) > 1 else 0.0
        allowed = absolute + relative * m_mid
        span = xs[-1] - xs[0] if xs else 0.0
        grows = m_last - m_mid > allowed and slope * span > allowed
        verdicts.append(Verdict(name, m_mid, m_last, slope * 60, allowed, grows))
    return verdicts


# --------------------------------------------------------------------------- clients


@dataclass
class Tally:
    """Requests (or echoes, for WebSocket) and errors per protocol."""

    done: Counter[str] = field(default_factory=Counter)
    errors: dict[str, Counter[str]] = field(default_factory=dict)
    connections: Counter[str] = field(default_factory=Counter)
    tracebacks: dict[str, str] = field(default_factory=dict)

    def error(self, protocol: str, what: str, exc: BaseException | None = None) -> None:
        """Count one error; keep the first traceback of each kind, to explain it later."""
        key = what[:160]
        self.errors.setdefault(protocol, Counter())[key] += 1
        if exc is not None and key not in self.tracebacks:
            self.tracebacks[key] = "".join(traceback.format_exception(exc))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Target:
    """What every client needs: the server's port, its certificate, the options, the tally."""

    port: int
    certfile: str
    args: Any
    tally: Tally
    objects: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def tls(self, alpn: list[str]) -> ssl.SSLContext:
        """A context of its own per client: httpx sets ALPN on the context it is given, so a
        shared one once made the WebSocket client offer h2 and get an HTTP/2 SETTINGS frame
        back (the server was right to answer that way)."""
        context = ssl.create_default_context(cafile=self.certfile)
        context.set_alpn_protocols(alpn)
        return context


async def http_worker(target: Target, http2: bool, fresh: bool, seed: int) -> None:
    """httpx over TLS: a keep-alive client replaced every 200 requests, or one per request."""
    import httpx  # noqa: PLC0415
    import trio  # noqa: PLC0415

    tally, args = target.tally, target.args
    protocol = "HTTP/2" if http2 else "HTTP/1.1"
    base = f"https://127.0.0.1:{target.port}"
    i = seed
    while True:
        async with httpx.AsyncClient(
            base_url=base,
            verify=target.tls(["h2"] if http2 else ["http/1.1"]),
            http2=http2,
            http1=not http2,
            timeout=30,
        ) as client:
            tally.connections[protocol] += 1
            for _ in range(1 if fresh else 200):
                i += 1
                if http2:
                    async with trio.open_nursery() as nursery:
                        for j in range(4):
                            nursery.start_soon(one_request, client, tally, protocol, i + j)
                else:
                    await one_request(client, tally, protocol, i)
                await trio.sleep(args.pause)


async def one_request(client: Any, tally: Tally, protocol: str, i: int) -> None:
    """Mostly small GETs and 1 KiB echoes, one in 50 a 1 MiB streamed response."""
    if i % 50 == 0:
        response = await client.get("/stream")
        ok = response.status_code == 200 and len(response.content) == 1 << 20
    elif i % 2:
        response = await client.post("/echo", content=ECHO_BODY)
        ok = response.status_code == 200 and response.content == ECHO_BODY
    else:
        response = await client.get("/plaintext")
        ok = response.status_code == 200 and response.content == b"Hello, world!"
    want = "http/2" if protocol == "HTTP/2" else "http/1.1"
    if response.http_version.lower() != want:
        tally.error(protocol, f"spoke {response.http_version}")
    elif ok:
        tally.done[protocol] += 1
    else:
        tally.error(protocol, f"bad answer: {response.status_code}, {len(response.content)} B")


async def h3_worker(target: Target) -> None:
    """Connections of 40 requests, four streams in flight each, then a clean close."""
    import trio  # noqa: PLC0415

    i = 0
    while True:
        with trio.fail_after(60):
            async with H3Client.connect(target.port) as client:
                target.tally.connections["HTTP/3"] += 1
                for _ in range(10):
                    async with trio.open_nursery() as nursery:
                        for _ in range(4):
                            i += 1
                            nursery.start_soon(h3_request, client, target.tally, i)
                    await trio.sleep(target.args.pause)


async def h3_request(client: H3Client, tally: Tally, i: int) -> None:
    if i % 2:
        status, body = await client.request("POST", "/echo", ECHO_BODY)
        ok = status == 200 and body == ECHO_BODY
    else:
        status, body = await client.request("GET", "/plaintext")
        ok = status == 200 and body == b"Hello, world!"
    if ok:
        tally.done["HTTP/3"] += 1
    else:
        tally.error("HTTP/3", f"bad answer: {status}, {len(body)} B")


class H3Client:
    """aioquic's QuicConnection + H3Connection on a trio UDP socket (after tests/h3_client.py)."""

    def __init__(self, sock: Any, address: tuple[str, int]) -> None:
        import trio  # noqa: PLC0415
        from aioquic.h3.connection import H3Connection  # noqa: PLC0415
        from aioquic.quic.configuration import QuicConfiguration  # noqa: PLC0415
        from aioquic.quic.connection import QuicConnection  # noqa: PLC0415

        self.sock = sock
        self.address = address
        self.quic = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True,
                alpn_protocols=["h3"],
                verify_mode=ssl.CERT_NONE,
                server_name="localhost",
            )
        )
        self.h3 = H3Connection(self.quic)
        self.waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self.terminated: str | None = None
        self.kicked = trio.Event()

    @classmethod
    def connect(cls, port: int) -> Any:
        from contextlib import asynccontextmanager  # noqa: PLC0415

        import trio  # noqa: PLC0415

        @asynccontextmanager
        async def connected() -> Any:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                await sock.bind(("127.0.0.1", 0))
                client = cls(sock, ("127.0.0.1", port))
                client.quic.connect(client.address, now=trio.current_time())
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.reader)
                    nursery.start_soon(client.driver)
                    try:
                        yield client
                    finally:
                        client.quic.close()
                        client.kicked.set()
                        await trio.sleep(0.05)  # let the driver send CONNECTION_CLOSE
                        nursery.cancel_scope.cancel()

        return connected()

    async def reader(self) -> None:
        import trio  # noqa: PLC0415

        while True:
            data, addr = await self.sock.recvfrom(65536)
            self.quic.receive_datagram(data, addr, trio.current_time())
            self.kicked.set()

    async def driver(self) -> None:
        import trio  # noqa: PLC0415

        while True:
            self.kicked = trio.Event()
            now = trio.current_time()
            timer = self.quic.get_timer()
            if timer is not None and timer <= now:
                self.quic.handle_timer(now)
            self.process_events()
            for data, addr in self.quic.datagrams_to_send(trio.current_time()):
                await self.sock.sendto(data, addr)
            timer = self.quic.get_timer()
            with trio.move_on_at(math.inf if timer is None else timer):
                await self.kicked.wait()

    def process_events(self) -> None:
        from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: PLC0415
        from aioquic.quic.events import ConnectionTerminated, StreamReset  # noqa: PLC0415

        while (event := self.quic.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                self.terminated = f"{event.error_code:#x} {event.reason_phrase}"
                for done, _state in self.waiting.values():
                    done.set()
            elif isinstance(event, StreamReset) and event.stream_id in self.waiting:
                done, state = self.waiting[event.stream_id]
                state[2] = f"stream reset {event.error_code:#x}"
                done.set()
            for h3_event in self.h3.handle_event(event):
                if h3_event.stream_id not in self.waiting:
                    continue
                done, state = self.waiting[h3_event.stream_id]
                if isinstance(h3_event, HeadersReceived):
                    state[0] = int(dict(h3_event.headers).get(b":status", b"0"))
                elif isinstance(h3_event, DataReceived):
                    state[1] += h3_event.data
                if h3_event.stream_ended:
                    done.set()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        import trio  # noqa: PLC0415

        stream_id = self.quic.get_next_available_stream_id()
        done, state = trio.Event(), [0, bytearray(), None]
        self.waiting[stream_id] = (done, state)
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.kicked.set()
        try:
            with trio.fail_after(30):
                await done.wait()
        finally:
            del self.waiting[stream_id]
        if state[2] is not None:
            raise ConnectionError(state[2])
        if self.terminated is not None and state[0] == 0:
            raise ConnectionError(f"connection terminated: {self.terminated}")
        return int(state[0]), bytes(state[1])


async def ws_worker(target: Target, long: bool) -> None:
    """Sessions of 20 echoes (text and binary), or one session for the whole run."""
    import trio  # noqa: PLC0415
    from trio_websocket import open_websocket  # noqa: PLC0415

    tally, args = target.tally, target.args
    i = 0
    while True:
        async with open_websocket(
            "127.0.0.1", target.port, "/ws", use_ssl=target.tls(["http/1.1"]), message_queue_size=4
        ) as ws:
            tally.connections["WebSocket"] += 1
            for _ in range(10**9 if long else 20):
                i += 1
                message: str | bytes = f"hello {i}" if i % 2 else ECHO_BODY[: i % 1024]
                await ws.send_message(message)
                with trio.fail_after(30):
                    answer = await ws.get_message()
                if answer == message:
                    tally.done["WebSocket"] += 1
                else:
                    tally.error("WebSocket", "echo differs")
                await trio.sleep(args.pause * (20 if long else 1))


async def fetch_objects(target: Target) -> dict[str, int]:
    import httpx  # noqa: PLC0415

    async with httpx.AsyncClient(verify=target.tls(["http/1.1"]), timeout=60) as client:
        response = await client.get(f"https://127.0.0.1:{target.port}{OBJECTS_PATH}")
    return response.json()


def object_growth(objects: list[tuple[float, dict[str, int]]]) -> list[str]:
    """The types whose live count grew most from a third of the run to its end."""
    if len(objects) < 2:
        return []
    t0, first = objects[len(objects) // 3]
    t1, last = objects[-1]
    growth = {name: last.get(name, 0) - first.get(name, 0) for name in last}
    top = sorted(growth.items(), key=lambda item: -item[1])[:15]
    return [
        f"live objects from {t0 / 60:.1f} to {t1 / 60:.1f} min, largest growth:",
        *(f"  {delta:+8d}  {name} (now {last[name]})" for name, delta in top),
    ]


async def guarded(tally: Tally, protocol: str, worker: Any, *args: Any) -> None:
    """Run a client worker forever: an error is counted, then the worker starts afresh.

    Workers raise on any failure (a bad connection is dropped, not reused), so one error
    never ends the soak, and each is counted once per worker restart.
    """
    import trio  # noqa: PLC0415

    while True:
        try:
            await worker(*args)
        except Exception as exc:  # an ExceptionGroup too, from a nursery; not Cancelled
            for leaf in flatten(exc):
                tally.error(protocol, describe(leaf), leaf)
        await trio.sleep(1)


def flatten(exc: BaseException) -> list[BaseException]:
    inner = getattr(exc, "exceptions", None)  # an exception group (3.10 has no builtin name)
    if isinstance(inner, (list, tuple)):
        return [leaf for one in inner for leaf in flatten(one)]
    return [exc]


async def drive(target: Target, pid: int, url: str) -> list[Sample]:
    """All the clients for ``--minutes``, and the sampler beside them."""
    import trio  # noqa: PLC0415

    tally, args = target.tally, target.args
    samples: list[Sample] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    async with trio.open_nursery() as nursery:
        h1, h2, h3, ws = PROTOCOLS
        for k in range(2):
            nursery.start_soon(guarded, tally, h1, http_worker, target, False, False, k)
            nursery.start_soon(guarded, tally, h2, http_worker, target, True, False, k)
            nursery.start_soon(guarded, tally, h3, h3_worker, target)
            nursery.start_soon(guarded, tally, ws, ws_worker, target, False)
        nursery.start_soon(guarded, tally, h1, http_worker, target, False, True, 3)
        nursery.start_soon(guarded, tally, h2, http_worker, target, True, True, 5)
        nursery.start_soon(guarded, tally, ws, ws_worker, target, True)
        next_sample = started
        while time.monotonic() < end:
            sample = await trio.to_thread.run_sync(take_sample, pid, url, started)
            samples.append(sample)
            if len(samples) % max(1, round(60 / args.interval)) == 1:
                if args.objects:
                    target.objects.append((sample.t, await fetch_objects(target)))
                print(
                    f"{sample.t / 60:5.1f} min  RSS {sample.rss_kib / 1024:6.1f} MiB  "
                    f"fds {sample.fds:4d}  threads {sample.threads:3d}  "
                    f"connections {sample.connections:4.0f}  requests {sample.requests:9.0f}  "
                    f"client errors {sum(sum(c.values()) for c in tally.errors.values())}",
                    flush=True,
                )
            next_sample += args.interval
            await trio.sleep(max(0.0, next_sample - time.monotonic()))
        nursery.cancel_scope.cancel()
    return samples


# --------------------------------------------------------------------------- report


PROTOCOLS = ["HTTP/1.1", "HTTP/2", "HTTP/3", "WebSocket"]


def report(
    args: Any,
    *,
    command: list[str],
    server_command: list[str],
    samples: list[Sample],
    verdicts: list[Verdict],
    tally: Tally,
    seconds: float,
    server_log: str,
) -> str:
    failed = any(v.grows for v in verdicts) or bool(tally.errors)
    lines = [
        "# Soak: mixed HTTP/1.1, HTTP/2, HTTP/3 and WebSocket traffic",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        "client and server on one machine over loopback (127.0.0.1), other processes may "
        "have been running",
        f"- Command: `{shlex.join(command)}`",
        f"- Server: `{shlex.join(server_command)}`",
        f"- Duration: {seconds / 60:.1f} min, a sample every {args.interval:g} s "
        f"({len(samples)} samples), clients pause {args.pause:g} s between requests",
        "",
        f"**Verdict: {'FAIL' if failed else 'PASS'}**"
        + (" (see below)" if failed else ": no series grows, no client errors"),
        "",
        "## Traffic",
        "",
        "| protocol | clients | connections opened | requests / echoes | errors |",
        "|---|---|---|---:|---:|",
    ]
    clients = {
        "HTTP/1.1": "2 keep-alive (new connection every 200 requests) + 1 new connection per "
        "request; httpx over TLS",
        "HTTP/2": "2 keep-alive (4 streams in flight, new connection every 200 rounds) + 1 "
        "new connection per round; httpx over TLS",
        "HTTP/3": "2 (4 streams in flight, new connection every 40 requests); aioquic",
        "WebSocket": "2 with sessions of 20 echoes + 1 session for the whole run; "
        "trio-websocket over TLS",
    }
    for protocol in PROTOCOLS:
        errors = sum(tally.errors.get(protocol, Counter()).values())
        lines.append(
            f"| {protocol} | {clients[protocol]} | {tally.connections[protocol]:,} | "
            f"{tally.done[protocol]:,} | {errors} |"
        )
    lines.append("")
    lines.append(
        "Requests are GET `/plaintext` and POST `/echo` (1 KiB) alternately, with one HTTP/1.1 "
        "or HTTP/2 request in 50 a GET `/stream` (1 MiB); every answer's status and body are "
        "checked. The server counted "
        f"{samples[-1].requests:,.0f} requests in `palfrey_requests_total`."
    )
    if tally.errors:
        lines += ["", "### Client errors", "", "| protocol | error | count |", "|---|---|---:|"]
        for protocol, counter in tally.errors.items():
            for what, count in counter.most_common():
                cell = what.replace("|", "\\|")
                lines.append(f"| {protocol} | {cell} | {count} |")
    lines += [
        "",
        "## Growth verdict per series",
        "",
        "Median of the middle third of the samples against the median of the last third, and "
        "the least-squares slope over the last two thirds (the first third is warm-up). A "
        "series grows when both the rise of the median and the slope times that span exceed "
        "the allowance.",
        "",
        "| series | middle third | last third | slope per minute | allowance | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for v in verdicts:
        label = SERIES[v.name][0]
        lines.append(
            f"| {label} | {v.middle:,.1f} | {v.last:,.1f} | {v.slope_per_min:+,.2f} | "
            f"{v.allowed:,.1f} | {'GROWS' if v.grows else 'flat'} |"
        )
    lines += [
        "",
        "## Series (one sample a minute)",
        "",
        "| minute | RSS (MiB) | open fds | threads | open connections | open streams "
        "| open WebSockets | requests (server total) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    minute = -1
    for sample in samples:
        if int(sample.t // 60) > minute or sample is samples[-1]:
            minute = int(sample.t // 60)
            lines.append(
                f"| {sample.t / 60:.1f} | {sample.rss_kib / 1024:.1f} | {sample.fds} | "
                f"{sample.threads} | {sample.connections:.0f} | {sample.streams:.0f} | "
                f"{sample.websockets:.0f} | {sample.requests:,.0f} |"
            )
    tracebacks = server_log.count("Traceback")
    errors = [line for line in server_log.splitlines() if " ERROR " in line]
    lines += [
        "",
        "## Server log",
        "",
        f"{tracebacks} tracebacks and {len(errors)} ERROR lines in the server's log "
        "(access log off, log level info).",
    ]
    lines += [f"    {line}" for line in errors[:10]]
    lines += [
        "",
        "Trio tasks cannot be counted from outside the process; open connections, streams and "
        "WebSockets (from `/metrics`) stand in for them, since every one owns tasks.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between requests")
    parser.add_argument(
        "--objects",
        action="store_true",
        help="to investigate growth: count the server's live objects per type once a minute "
        "(a full gc.get_objects() pass inside the server, so it skews the series)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "soak.md")
    args = parser.parse_args()

    import trio  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="palfrey-soak-") as tmp:
        directory = Path(tmp)
        from h3 import make_certificate  # noqa: PLC0415 (not needed by the server process)

        certfile, keyfile = make_certificate(directory)
        port = free_port()
        server_command = [
            sys.executable, "-m", "palfrey", "soak:app",
            "--app-dir", str(HERE),
            "--port", str(port),
            "--quic-bind", f"127.0.0.1:{port}",
            "--ssl-certfile", str(certfile),
            "--ssl-keyfile", str(keyfile),
            "--metrics-bind", "127.0.0.1:0",
            "--no-access-log",
        ]  # fmt: skip
        log = directory / "server.log"
        with log.open("wb") as out:
            env = {**os.environ, DEBUG_ENV: "1"} if args.objects else None
            process = subprocess.Popen(
                server_command, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        tally = Tally()
        try:
            url = wait_for_metrics_url(log, process, timeout=30)
            print(f"Palfrey pid {process.pid} on 127.0.0.1:{port} (TCP+UDP), metrics {url}")
            started = time.monotonic()
            target = Target(port, str(certfile), args, tally)
            samples = trio.run(drive, target, process.pid, url)
            for line in object_growth(target.objects):
                print(line)
            seconds = time.monotonic() - started
            if process.poll() is not None:
                tally.error("server", f"exited with {process.returncode} during the run")
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server_log = log.read_text(errors="replace")
    verdicts = judge(samples)
    shown = [*(c.replace("cert.pem", "CERT").replace("key.pem", "KEY") for c in server_command)]
    shown = [re.sub(r"/tmp/palfrey-soak-[^/]+/", "", c) for c in shown]
    shown = [os.path.relpath(c) if c == str(HERE) else c for c in shown]
    shown[0] = "python"
    command = ["python", "benchmarks/soak.py", *sys.argv[1:]]
    text = report(
        args,
        command=command,
        server_command=shown,
        samples=samples,
        verdicts=verdicts,
        tally=tally,
        seconds=seconds,
        server_log=server_log,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    for v in verdicts:
        print(
            f"{SERIES[v.name][0]:>17}: middle {v.middle:10.1f}  last {v.last:10.1f}  "
            f"slope {v.slope_per_min:+9.2f}/min  allowance {v.allowed:8.1f}  "
            f"{'GROWS' if v.grows else 'flat'}"
        )
    for protocol in PROTOCOLS:
        errors = tally.errors.get(protocol, Counter())
        print(f"{protocol:>9}: {tally.done[protocol]:8d} done, {sum(errors.values())} errors")
        for what, count in errors.most_common(5):
            print(f"           {count} x {what}")
    for what, text in tally.tracebacks.items():
        print(f"\nFirst traceback of {what}:\n{text}", file=sys.stderr)
    failed = any(v.grows for v in verdicts) or bool(tally.errors)
    print(f"{'FAIL' if failed else 'PASS'}; report written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
