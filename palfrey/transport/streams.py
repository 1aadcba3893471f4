"""One request on one stream, whatever the HTTP version: the path every request takes.

An HTTP/1.1 connection carries one stream at a time; HTTP/2 and HTTP/3
connections carry many. Each version parses its own framing into a
:class:`~palfrey.protocols.events.RequestReceived` and supplies an
:class:`~palfrey.asgi.http.HTTPStream`; from there :func:`serve_request`
does what every version shares — count the request, build the scope (with
the extensions the stream can carry), borrow
a concurrency slot for the stream, hand an upgrade (WebSocket) its turn,
run the :class:`~palfrey.asgi.http.HTTPCycle` — and returns the
:class:`~palfrey.asgi.http.Outcome`. Connection policy (keep-alive,
``100-continue``, draining, resets, GOAWAY) stays with each version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from palfrey.asgi.http import HTTPCycle, HTTPStream, Outcome
from palfrey.asgi.proxy_headers import ProxyHeadersMiddleware
from palfrey.asgi.scope import Address, accepts_trailers, http_scope
from palfrey.asgi.types import ASGIApp

if TYPE_CHECKING:
    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.state import ServerState

#: Takes over a request that asked to switch protocols; returns how the stream
#: ended, or None when it declined (the request is then served as plain HTTP).
UpgradeHandler = Callable[[dict[str, Any]], Awaitable[Outcome | None]]


class RequestOrigin(Protocol):
    """The connection a request arrived on: what every request on it shares.

    ``tls`` is the connection's ``tls`` scope extension (TLS connections only).
    ``app`` and ``proxy`` come from :func:`connection_app`.
    """

    scheme: str
    client: Address
    server: Address
    tls: dict[str, Any] | None
    app: ASGIApp
    proxy: ProxyHeadersMiddleware | None


def connection_app(
    state: ServerState, client: Address
) -> tuple[ASGIApp, ProxyHeadersMiddleware | None]:
    """The app the HTTP requests of a connection from ``client`` run, and the proxy-header
    middleware whose ``rewrite`` each of their scopes gets first (None: the peer is
    not a trusted proxy).

    Whether the peer is a trusted proxy cannot change while it stays connected,
    so it is decided once, when the connection opens, instead of by
    :class:`ProxyHeadersMiddleware` around every request. WebSocket sessions
    still run ``state.app``, the middleware included.
    """
    app = state.app
    if not isinstance(app, ProxyHeadersMiddleware):
        return app, None
    return app.app, app if app.trusted.peer_trusted(client) else None


async def serve_request(
    state: ServerState,
    request: RequestReceived,
    stream: HTTPStream,
    origin: RequestOrigin,
    upgrade: UpgradeHandler | None = None,
) -> Outcome:
    """Serve ``request`` on ``stream`` through the app and say how the stream ended."""
    state.count_request()
    scope = http_scope(
        method=request.method,
        target=request.target,
        headers=request.headers,
        http_version=request.http_version,
        scheme=origin.scheme if request.scheme is None else _scheme(request.scheme, origin.scheme),
        client=origin.client,
        server=origin.server,
        root_path=state.config.root_path,
        state=state.lifespan_state,
    )
    extensions = scope["extensions"]
    tls = origin.tls
    if tls is not None:
        extensions["tls"] = tls
    # Files go out on every stream: by os.sendfile where the stream can, otherwise
    # read in chunks through send_body (palfrey/asgi/file_body.py).
    extensions["http.response.pathsend"] = {}
    extensions["http.response.zerocopysend"] = {}
    if stream.supports_early_hints:
        extensions["http.response.early_hint"] = {}
    # The trailers go out only if the client said it reads them (ASGI, RFC 9110 §6.5).
    if stream.supports_trailers and accepts_trailers(request.headers):
        extensions["http.response.trailers"] = {}
    limiter = state.limiter
    if limiter is not None:
        # The stream is the borrower: a connection with many streams holds many slots.
        try:
            limiter.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:
            await stream.refuse()
            return Outcome.RESET_STREAM
    try:
        if upgrade is not None:
            outcome = await upgrade(scope)
            if outcome is not None:
                return outcome
        proxy = origin.proxy
        if proxy is not None:
            proxy.rewrite(scope)
        return await HTTPCycle(scope, stream, state.defaults, metrics=state.metrics).run(origin.app)
    finally:
        if limiter is not None:
            limiter.release_on_behalf_of(stream)


def _scheme(claimed: bytes, connection: str) -> str:
    """The request's ``:scheme`` (HTTP/2 and 3, RFC 9113 §8.3.1) when it is one an ASGI
    scope can carry, otherwise the connection's own."""
    if claimed == b"https":
        return "https"
    if claimed == b"http":
        return "http"
    return connection
