"""``--metrics-bind``: the numbers after known traffic, health and readiness, and workers.

The exposition is read back with ``prometheus_client``'s own parser, so a
format mistake fails here before it fails a real Prometheus.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio
from h1_client import connect, no_connection_crashes, request
from h3_client import h3_client
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, palfrey_command
from ws_client import upgrade

import palfrey
from palfrey.asgi.interfaces import wrap_app
from palfrey.observability.metrics import (
    DURATION_BUCKETS,
    Metrics,
    merge,
    render,
    retire,
)
from palfrey.server.server import Server
from palfrey.supervisor.control import METRICS, WorkerMessages, encode_metrics

__all__ = ["no_connection_crashes"]

WAIT = 10.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, labels), through the official parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# The sans-I/O parts.


def test_a_request_lands_in_every_family_it_belongs_to() -> None:
    metrics = Metrics()
    metrics.request_done("1.1", 200, 10, 20, 0.003)
    metrics.request_done("1.1", 404, 0, 5, 0.2)
    metrics.request_done("2", 503, 0, 0, 0.0001)
    samples = parse(render(metrics.snapshot()))
    assert value(samples, "palfrey_requests_total", protocol="http/1.1", status="2xx") == 1
    assert value(samples, "palfrey_requests_total", protocol="http/1.1", status="4xx") == 1
    assert value(samples, "palfrey_requests_total", protocol="h2", status="5xx") == 1
    assert value(samples, "palfrey_request_body_bytes_total", protocol="http/1.1") == 10
    assert value(samples, "palfrey_response_body_bytes_total", protocol="http/1.1") == 25
    name = "palfrey_request_duration_seconds"
    assert value(samples, f"{name}_count", protocol="http/1.1") == 2
    assert value(samples, f"{name}_sum", protocol="http/1.1") == pytest.approx(0.203)
    assert value(samples, f"{name}_bucket", protocol="http/1.1", le="0.0025") == 0
    assert value(samples, f"{name}_bucket", protocol="http/1.1", le="0.005") == 1
    assert value(samples, f"{name}_bucket", protocol="http/1.1", le="0.25") == 2
    assert value(samples, f"{name}_bucket", protocol="h2", le="0.001") == 1
    assert value(samples, f"{name}_bucket", protocol="h2", le="+Inf") == 1


@pytest.mark.parametrize(
    ("duration", "first_bucket"),
    [(0.0, 0.001), (0.001, 0.001), (0.0010001, 0.0025), (60.0, 60.0), (61.0, float("inf"))],
)
def test_a_bucket_holds_durations_up_to_its_bound(duration: float, first_bucket: float) -> None:
    metrics = Metrics()
    metrics.request_done("1.1", 200, 0, 0, duration)
    text = render(metrics.snapshot())
    buckets = {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }
    assert sorted(buckets) == [*DURATION_BUCKETS, float("inf")]
    assert all(count == (bound >= first_bucket) for bound, count in buckets.items()), buckets


def test_every_family_is_listed_before_any_traffic() -> None:
    text = render(Metrics().snapshot())
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"palfrey_requests", "palfrey_request_duration_seconds", "palfrey_timeouts"} <= names


def test_snapshots_add_up_and_a_retired_one_keeps_only_its_counters() -> None:
    one, two = Metrics(), Metrics()
    one.request_done("1.1", 200, 1, 2, 0.01)
    two.request_done("1.1", 200, 3, 4, 0.02)
    two.websockets_open = 2
    total = merge([one.snapshot(), two.snapshot()])
    samples = parse(render(total))
    assert value(samples, "palfrey_requests_total", protocol="http/1.1", status="2xx") == 2
    assert value(samples, "palfrey_request_body_bytes_total", protocol="http/1.1") == 4
    assert value(samples, "palfrey_websockets_open") == 2
    assert value(samples, "palfrey_request_duration_seconds_count", protocol="http/1.1") == 2
    left = parse(render(retire(two.snapshot())))
    assert value(left, "palfrey_requests_total", protocol="http/1.1", status="2xx") == 1
    assert ("palfrey_websockets_open", frozenset()) not in left


def test_server_responses_and_timeouts_have_bounded_labels() -> None:
    metrics = Metrics()
    for status in (400, 408, 413, 414, 431, 500, 503, 418):
        metrics.server_response(status)
    metrics.timeout("keep_alive")
    samples = parse(render(metrics.snapshot()))
    name = "palfrey_server_responses_total"
    assert value(samples, name, status="414", reason="target_too_long") == 1
    assert value(samples, name, status="503", reason="overloaded") == 1
    assert value(samples, name, status="418", reason="other") == 1
    assert value(samples, "palfrey_timeouts_total", kind="keep_alive") == 1


def test_worker_messages_are_split_whatever_the_reads() -> None:
    snapshot = Metrics().snapshot()
    data = b"o" + encode_metrics(snapshot) + b"rs"
    for size in (1, 3, len(data)):
        messages = WorkerMessages()
        received: list[Any] = []
        for start in range(0, len(data), size):
            received.extend(messages.feed(data[start : start + size]))
        assert received == [b"o", snapshot, b"r", b"s"]


def test_an_absurd_snapshot_length_is_refused() -> None:
    with pytest.raises(ValueError, match="metrics snapshot"):
        WorkerMessages().feed(METRICS + (2**31).to_bytes(4, "big"))


@pytest.mark.parametrize("bind", ["unix:/tmp/metrics.sock", "fd://3", "nonsense", "host:99999"])
def test_metrics_bind_must_be_host_and_port(bind: str) -> None:
    with pytest.raises(ValueError, match="metrics_bind must look like 'HOST:PORT'"):
        palfrey.Config(app="x:y", metrics_bind=bind)


# Through a real server.


@contextlib.asynccontextmanager
async def metrics_server(app: Any, **options: Any) -> AsyncIterator[tuple[Server, list[str]]]:
    """A server with ``--metrics-bind`` on a free port; yields it and its addresses."""
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    config = palfrey.Config(app=app, metrics_bind="127.0.0.1:0", **options)
    asgi_app, _ = wrap_app(app, config.interface)
    server = Server(asgi_app, config)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(lambda task_status: server.serve(task_status=task_status))
        yield server, addresses
        server.request_shutdown()


async def scrape(server: Server) -> Samples:
    assert server.metrics_url is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(server.metrics_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def probe(server: Server, path: str) -> int:
    assert server.metrics_url is not None
    async with httpx.AsyncClient() as client:
        return (await client.get(server.metrics_url + path)).status_code


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/crash":
        raise RuntimeError("boom")
    if scope["path"] == "/hold":
        await trio.sleep(0.5)
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 10})


async def test_http11_traffic_is_counted() -> None:
    async with metrics_server(app, lifespan="off") as (server, addresses):
        assert server.metrics_url is not None
        assert server.metrics_url != addresses[0]
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                assert (await client.get(addresses[0] + "/")).status_code == 200
            assert (await client.post(addresses[0] + "/", content=b"y" * 1000)).status_code == 200
            assert (await client.get(addresses[0] + "/missing")).status_code == 404
            assert (await client.get(addresses[0] + "/crash")).status_code == 500
        samples = await scrape(server)
    http11 = {"protocol": "http/1.1"}
    assert value(samples, "palfrey_requests_total", status="2xx", **http11) == 4
    assert value(samples, "palfrey_requests_total", status="4xx", **http11) == 1
    assert value(samples, "palfrey_requests_total", status="5xx", **http11) == 1
    assert value(samples, "palfrey_request_duration_seconds_count", **http11) == 6
    assert value(samples, "palfrey_request_body_bytes_total", **http11) == 1000
    # Five bodies of 10 bytes, and the 500's "Internal Server Error".
    assert value(samples, "palfrey_response_body_bytes_total", **http11) == 50 + 21
    assert (
        value(samples, "palfrey_server_responses_total", status="500", reason="application_error")
        == 1
    )
    assert value(samples, "palfrey_connections_total") == 1
    assert value(samples, "palfrey_connections_open", **http11) == 0


async def test_a_head_response_counts_no_body_bytes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="palfrey.access"):
        async with metrics_server(app, lifespan="off") as (server, addresses):
            async with httpx.AsyncClient() as client:
                response = await client.head(addresses[0] + "/")
            samples = await scrape(server)
    assert response.status_code == 200
    assert value(samples, "palfrey_response_body_bytes_total", protocol="http/1.1") == 0
    [line] = [r.getMessage() for r in caplog.records if r.name == "palfrey.access"]
    assert '"HEAD / HTTP/1.1" 200 0 ' in line, line


async def test_palfreys_own_answers_and_timeouts_are_counted() -> None:
    async with metrics_server(
        app, lifespan="off", timeout_request_header=0.3, timeout_keep_alive=0.3
    ) as (server, addresses):
        url = addresses[0]
        async with connect(_Address(url)) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            assert (await client.read_response()).status == 400
        async with connect(_Address(url)) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            assert (await client.read_response()).status == 408
        async with connect(_Address(url)) as client:
            await client.send(request())
            assert (await client.read_response()).status == 200
            await client.assert_closed()
        samples = await scrape(server)
    responses = "palfrey_server_responses_total"
    assert value(samples, responses, status="400", reason="bad_request") == 1
    assert value(samples, responses, status="408", reason="timeout") == 1
    assert value(samples, "palfrey_timeouts_total", kind="request_head") == 1
    assert value(samples, "palfrey_timeouts_total", kind="keep_alive") == 1


async def test_a_tls_handshake_timeout_is_counted(certificate: Any) -> None:
    tls = {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile}
    async with metrics_server(app, lifespan="off", timeout_tls_handshake=0.2, **tls) as (
        server,
        addresses,
    ):
        async with connect(_Address(addresses[0].replace("https://", "http://"))) as client:
            await client.assert_closed()
        samples = await scrape(server)
    assert value(samples, "palfrey_timeouts_total", kind="tls_handshake") == 1


async def test_overload_is_counted() -> None:
    async with metrics_server(app, lifespan="off", limit_concurrency=1) as (server, addresses):
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            nursery.start_soon(client.get, addresses[0] + "/hold")
            await trio.sleep(0.2)
            assert (await client.get(addresses[0] + "/")).status_code == 503
        samples = await scrape(server)
    assert value(samples, "palfrey_server_responses_total", status="503", reason="overloaded") == 1


async def test_websockets_are_counted_while_open_and_when_done() -> None:
    async with metrics_server(app, lifespan="off") as (server, addresses):
        address = _Address(addresses[0])
        stream = await trio.open_tcp_stream(address.host, address.port)
        await upgrade(stream)
        samples = await scrape(server)
        assert value(samples, "palfrey_websockets_open") == 1
        assert value(samples, "palfrey_connections_open", protocol="websocket") == 1
        await stream.aclose()
        with trio.fail_after(WAIT):
            while value(samples, "palfrey_requests_total", protocol="ws", status="1xx") != 1:
                await trio.sleep(0.05)
                samples = await scrape(server)
        assert value(samples, "palfrey_websockets_open") == 0
        assert value(samples, "palfrey_request_duration_seconds_count", protocol="ws") == 1


async def test_http2_streams_are_counted() -> None:
    async with metrics_server(app, lifespan="off") as (server, addresses):
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            for _ in range(2):
                response = await client.get(addresses[0] + "/")
                assert response.http_version == "HTTP/2"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.get, addresses[0] + "/hold")
                await trio.sleep(0.2)
                during = await scrape(server)
        samples = await scrape(server)
    assert value(during, "palfrey_streams_open", protocol="h2") == 1
    assert value(during, "palfrey_connections_open", protocol="h2") == 1
    assert value(samples, "palfrey_requests_total", protocol="h2", status="2xx") == 3
    assert value(samples, "palfrey_response_body_bytes_total", protocol="h2") == 30


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_http3_requests_are_counted(certificate: Any) -> None:
    tls = {"ssl_certfile": certificate.certfile, "ssl_keyfile": certificate.keyfile}
    async with metrics_server(app, lifespan="off", http="h3", **tls) as (server, addresses):
        [quic] = [address for address in addresses if address.startswith("quic://")]
        async with h3_client(int(quic.rsplit(":", 1)[1])) as client:
            for _ in range(2):
                assert (await client.request("GET", "/")).status == 200
            during = await scrape(server)
        samples = await scrape(server)
    assert value(during, "palfrey_connections_open", protocol="h3") == 1
    assert value(samples, "palfrey_requests_total", protocol="h3", status="2xx") == 2
    assert value(samples, "palfrey_response_body_bytes_total", protocol="h3") == 20
    assert value(samples, "palfrey_connections_total") == 1


async def test_the_endpoint_answers_only_its_paths() -> None:
    async with metrics_server(app, lifespan="off") as (server, _):
        assert server.metrics_url is not None
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.metrics_url + "/")).status_code == 404
            assert (await client.post(server.metrics_url + "/metrics")).status_code == 405
            head = await client.head(server.metrics_url + "/metrics")
            assert head.status_code == 200
            assert head.content == b""
            assert (await client.get(server.metrics_url + "/healthz")).text == "ok\n"


async def test_readyz_follows_lifespan_and_the_graceful_shutdown() -> None:
    startup_may_finish = trio.Event()
    request_may_finish = trio.Event()
    request_started = trio.Event()

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await startup_may_finish.wait()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        request_started.set()
        await request_may_finish.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    config = palfrey.Config(app=slow_app, host="127.0.0.1", port=0, metrics_bind="127.0.0.1:0")
    server = Server(slow_app, config)
    started: list[list[str]] = []

    async def serve() -> None:
        started.append(
            await nursery.start(lambda task_status: server.serve(task_status=task_status))
        )

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            while server.metrics_url is None:
                await trio.sleep(0.01)
            assert await probe(server, "/readyz") == 503  # lifespan startup still running
            assert await probe(server, "/healthz") == 200
            startup_may_finish.set()
            while not started:
                await trio.sleep(0.01)
            assert await probe(server, "/readyz") == 200
            responses: list[httpx.Response] = []

            async def in_flight() -> None:
                async with httpx.AsyncClient() as client:
                    responses.append(await client.get(started[0][0] + "/"))

            nursery.start_soon(in_flight)
            await request_started.wait()
            server.request_shutdown()
            await trio.sleep(0.05)
            assert await probe(server, "/readyz") == 503  # draining
            assert await probe(server, "/healthz") == 200
            request_may_finish.set()
    assert [response.status_code for response in responses] == [200]


class _Address:
    """What ``h1_client.connect`` needs of a server: its host and port."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)


# Across workers (subprocesses).

METRICS_URL = re.compile(r"Metrics on (http://\S+)/metrics")
BANNER = re.compile(r"Palfrey running on (http://\S+)")
SERVING_WITH = re.compile(r"Serving with \d+ worker process(?:es)?: ([\d, ]+)")


@contextlib.contextmanager
def workers(count: int, app: str = "process_apps:pid") -> Iterator[tuple[ServerProcess, str, str]]:
    command = palfrey_command(
        app,
        "--app-dir",
        "tests",
        "--port",
        "0",
        "--workers",
        str(count),
        "--metrics-bind",
        "127.0.0.1:0",
        "--no-access-log",
    )
    server = ServerProcess(command)
    try:
        metrics_url = server.wait_for(METRICS_URL).group(1)
        url = server.wait_for(BANNER).group(1)
        server.wait_for(SERVING_WITH)
        yield server, url, metrics_url
    finally:
        server.cleanup()


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, timeout=WAIT, headers={"connection": "close"})


def test_numbers_add_up_across_workers_and_survive_a_rolling_restart() -> None:
    with workers(2) as (server, url, metrics_url):
        pids = set()
        for _ in range(20):
            response = fetch(url + "/")
            assert response.status_code == 200
            pids.add(int(response.text))
        samples = parse(fetch(metrics_url + "/metrics").text)
        assert value(samples, "palfrey_requests_total", protocol="http/1.1", status="2xx") == 20
        assert value(samples, "palfrey_request_duration_seconds_count", protocol="http/1.1") == 20
        assert value(samples, "palfrey_workers") == 2
        assert fetch(metrics_url + "/readyz").status_code == 200
        mark = server.mark()
        server.signal(signal.SIGHUP)
        server.wait_for(r"Finished server process", count=2, after=mark)
        server.wait_for(r"Worker \[\d+\] is serving", count=2, after=mark)
        samples = parse(fetch(metrics_url + "/metrics").text)
        # The replaced workers' requests are still counted: counters never go down.
        assert value(samples, "palfrey_requests_total", protocol="http/1.1", status="2xx") == 20
        assert value(samples, "palfrey_worker_restarts_total", cause="restart") == 2
        assert value(samples, "palfrey_workers") == 2
        assert server.stop() == 0


def test_readyz_turns_503_when_the_supervisor_begins_to_drain() -> None:
    with workers(2, "process_apps:slow") as (server, url, metrics_url):
        assert fetch(metrics_url + "/readyz").status_code == 200
        answers: list[int] = []
        client = threading.Thread(target=lambda: answers.append(fetch(url + "/").status_code))
        client.start()
        time.sleep(0.2)
        server.signal(signal.SIGTERM)
        server.wait_for("shutting down the workers gracefully")
        assert fetch(metrics_url + "/readyz").status_code == 503
        assert fetch(metrics_url + "/healthz").status_code == 200
        client.join(WAIT)
        assert answers == [200]
        assert server.wait_exit() == 0


def test_a_killed_worker_counts_as_a_crash() -> None:
    with workers(2) as (server, url, metrics_url):
        pid = int(fetch(url + "/").text)
        mark = server.mark()
        os.kill(pid, signal.SIGKILL)
        server.wait_for(r"Worker \[\d+\] is serving", after=mark)
        samples = parse(fetch(metrics_url + "/metrics").text)
        assert value(samples, "palfrey_worker_restarts_total", cause="crashed") == 1
        assert server.stop() == 0


def test_the_metrics_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = palfrey_command(
            "process_apps:pid",
            "--app-dir",
            "tests",
            "--port",
            "0",
            "--metrics-bind",
            f"127.0.0.1:{port}",
        )
        server = ServerProcess(command)
        try:
            assert server.wait_exit() == 1
        finally:
            server.cleanup()
    assert f"could not bind the metrics listener 127.0.0.1:{port}" in server.output
    assert "Traceback" not in server.output
