"""``--metrics-bind``: ``/metrics``, ``/healthz`` and ``/readyz`` on a listener of their own.

Never on the application's port: a probe must not queue behind application
traffic or count in its metrics, and the app's routes must not be shadowed.
The listener serves one request per connection with h11, under a short
deadline and a small cap on clients, so a misbehaving scraper can cost the
server little. The single-process server and the supervisor each provide a
:class:`MetricsSource`.
"""

from __future__ import annotations

import logging
from typing import Protocol

import h11
import trio

from palfrey.config.binds import TCPAddress, parse_bind
from palfrey.observability.metrics import Snapshot, render
from palfrey.transport.errors import BindError

logger = logging.getLogger("palfrey.error")

#: Scrapes and probes served at once; further connections wait in the listen backlog.
MAX_CLIENTS = 16
#: The whole exchange (request head in, response out) must fit in this many seconds.
EXCHANGE_TIMEOUT = 10.0
MAX_HEAD_SIZE = 8192
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """Where the numbers and the health come from."""

    async def collect(self) -> Snapshot: ...

    def healthy(self) -> bool:
        """Whether the process can serve at all (``/healthz``)."""
        ...

    def ready(self) -> bool:
        """Whether traffic should be sent to it now (``/readyz``)."""
        ...


async def serve_metrics(
    bind: str,
    source: MetricsSource,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``bind`` (``HOST:PORT``) and answer until cancelled; reports ``http://...``."""
    address = parse_bind(bind)
    assert isinstance(address, TCPAddress)  # the configuration checked it
    try:
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as exc:
        raise BindError(
            f"could not bind the metrics listener {bind}: {exc.strerror or exc}"
        ) from None
    host, port = listeners[0].socket.getsockname()[:2]
    shown = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    logger.info("Metrics on %s/metrics (health: /healthz, readiness: /readyz)", shown)
    limiter = trio.CapacityLimiter(MAX_CLIENTS)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept, listener, source, limiter, nursery)
        task_status.started(shown)


async def _accept(
    listener: trio.SocketListener,
    source: MetricsSource,
    limiter: trio.CapacityLimiter,
    nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            # The slot is taken before accepting, so excess clients wait in the kernel.
            token = object()
            await limiter.acquire_on_behalf_of(token)
            try:
                stream = await listener.accept()
            except OSError as exc:
                limiter.release_on_behalf_of(token)
                logger.warning("Metrics listener accept() failed: %s", exc)
                await trio.sleep(0.1)
                continue
            except BaseException:
                limiter.release_on_behalf_of(token)
                raise
            nursery.start_soon(_exchange, stream, source, limiter, token)


async def _exchange(
    stream: trio.SocketStream, source: MetricsSource, limiter: trio.CapacityLimiter, token: object
) -> None:
    try:
        with trio.move_on_after(EXCHANGE_TIMEOUT):
            await _answer(stream, source)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass
    finally:
        limiter.release_on_behalf_of(token)
        await trio.aclose_forcefully(stream)


async def _answer(stream: trio.SocketStream, source: MetricsSource) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(MAX_HEAD_SIZE)
            if not data:
                return
            connection.receive_data(data)
            continue
        break
    if not isinstance(event, h11.Request):
        return
    status, body = await _route(event.method, event.target.partition(b"?")[0], source)
    headers = [
        (b"content-type", CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    data = connection.send(h11.Response(status_code=status, headers=headers))
    if event.method != b"HEAD":
        data += connection.send(h11.Data(data=body))
    data += connection.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _route(method: bytes, path: bytes, source: MetricsSource) -> tuple[int, bytes]:
    if path not in (b"/metrics", b"/healthz", b"/readyz"):
        return 404, b"not found: try /metrics, /healthz or /readyz\n"
    if method not in (b"GET", b"HEAD"):
        return 405, b"method not allowed\n"
    if path == b"/metrics":
        return 200, render(await source.collect()).encode()
    if path == b"/healthz":
        return (200, b"ok\n") if source.healthy() else (503, b"unhealthy\n")
    return (200, b"ready\n") if source.ready() else (503, b"not ready\n")
