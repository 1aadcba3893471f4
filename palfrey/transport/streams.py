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
from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.http import HTTPCycle, HTTPStream, Outcome
from palfrey.asgi.scope import Address, accepts_trailers, http_scope

if TYPE_CHECKING:
    from palfrey.protocols.events import RequestReceived
    from palfrey.transport.state import ServerState

#: Takes over a request that asked to switch protocols; returns how the stream
#: ended, or None when it declined (the request is then served as plain HTTP).
UpgradeHandler = Callable[[dict[str, Any]], Awaitable[Outcome | None]]


async def serve_request(
    state: ServerState,
    request: RequestReceived,
    stream: HTTPStream,
    *,
    scheme: str,
    client: Address,
    server: Address,
    upgrade: UpgradeHandler | None = None,
    tls: dict[str, Any] | None = None,
) -> Outcome:
    """Serve ``request`` on ``stream`` through the app and say how the stream ended.

    ``tls`` is the connection's ``tls`` scope extension (TLS connections only).
    """
    state.count_request()
    scope = http_scope(
        method=request.method,
        target=request.target,
        headers=request.headers,
        http_version=request.http_version,
        scheme=_scheme(request.scheme, scheme),
        client=client,
        server=server,
        root_path=state.config.root_path,
        state=state.lifespan_state,
    )
    extensions = scope["extensions"]
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
        return await HTTPCycle(scope, stream, state.defaults, metrics=state.metrics).run(state.app)
    finally:
        if limiter is not None:
            limiter.release_on_behalf_of(stream)


def _scheme(claimed: bytes | None, connection: str) -> str:
    """The request's ``:scheme`` (HTTP/2 and 3, RFC 9113 §8.3.1) when it is one an ASGI
    scope can carry, otherwise the connection's own."""
    if claimed == b"https":
        return "https"
    if claimed == b"http":
        return "http"
    return connection
