"""Serving a WSGI (PEP 3333) application as an ASGI 3 app.

The WSGI callable runs in a worker thread (``trio.to_thread.run_sync``,
bounded by ``--wsgi-threads``). Nothing is buffered on its behalf: each
``wsgi.input`` read that needs more bytes pulls the next ``http.request``
chunk from the trio side, and each response chunk is sent as soon as the
iterable yields it, so a slow client pushes back on the application through
TCP just as it would with an ASGI app.

The thread is abandoned when the request is cancelled (graceful-shutdown
timeout), because a WSGI app cannot be interrupted and shutdown must stay
bounded. From then on every read or write it attempts fails with
:class:`ClientDisconnected`, so it unwinds at its next I/O.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import attrs
import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.types import Message, Receive, Scope, Send

logger = logging.getLogger("palfrey.error")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
T = TypeVar("T")

DEFAULT_WSGI_THREADS = 40

_STATUS = re.compile(r"([1-9][0-9]{2}) [^\r\n\0]*\Z")
_WEBSOCKET_REFUSAL = b"WebSocket is not available: this server runs a WSGI application."


@attrs.define(slots=True, eq=False)
class _Portal:
    """The worker thread's only way into trio, cut off once the request is over.

    Calls run in a trio system task (the thread is started with
    ``abandon_on_cancel``); ``open`` is read and written on the trio thread
    only, so an abandoned thread can never touch a connection that has moved on.
    """

    open: bool = True

    def call(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return trio.from_thread.run(self._guarded, afn, *args)
        except (trio.RunFinishedError, trio.Cancelled):
            raise ClientDisconnected("the server stopped serving this request") from None

    async def _guarded(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if not self.open:
            raise ClientDisconnected("the server stopped serving this request")
        return await afn(*args)


class WSGIInput:
    """``wsgi.input``: a read-only binary stream over the request body, filled on demand."""

    __slots__ = ("_buffer", "_eof", "_pull")

    def __init__(self, pull: Callable[[], tuple[bytes, bool]]) -> None:
        self._pull = pull
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        """Append the next body chunk; False once the body is exhausted."""
        if self._eof:
            return False
        body, more = self._pull()
        self._buffer += body
        self._eof = not more
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end != -1:
                length = end + 1
                break
            if limit is not None and len(self._buffer) >= limit:
                length = limit
                break
            start = len(self._buffer)
            if not self._fill():
                length = len(self._buffer)
                break
        if limit is not None:
            length = min(length, limit)
        return self._take(length)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> WSGIInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


@attrs.define(slots=True, eq=False)
class _Response:
    """``start_response`` and ``write`` for one call, and the ASGI messages they turn into."""

    portal: _Portal
    send: Send
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = attrs.Factory(list)
    headers_sent: bool = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        """PEP 3333: a second call is only allowed with ``exc_info``, and only before sending."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called again without exc_info")
        if not isinstance(status, str) or not (match := _STATUS.match(status)):
            raise ValueError(f"WSGI status must be a str like '200 OK', got {status!r}")
        encoded = []
        for item in headers:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"WSGI headers must be (str, str) tuples, got {item!r}")
            if type(item[0]) is not str or type(item[1]) is not str:
                raise TypeError(f"WSGI headers must be (str, str) tuples, got {item!r}")
            try:
                encoded.append((item[0].encode("latin-1"), item[1].encode("latin-1")))
            except UnicodeEncodeError:
                raise ValueError(f"WSGI header {item!r} is not latin-1") from None
        self.status = int(match.group(1))
        self.headers = encoded
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable: sends ``data`` before returning, as PEP 3333 asks."""
        if data:
            self.send_body(data, more=True)

    def send_body(self, data: bytes, *, more: bool) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"WSGI response chunks must be bytes, got {type(data).__name__}")
        body: Message = {"type": "http.response.body", "body": bytes(data), "more_body": more}
        if self.headers_sent:
            self.portal.call(self.send, body)
            return
        if self.status is None:
            raise RuntimeError("the WSGI application sent a body before calling start_response()")
        self.headers_sent = True
        start: Message = {
            "type": "http.response.start",
            "status": self.status,
            "headers": self.headers,
        }
        self.portal.call(self._send_both, start, body)

    async def _send_both(self, start: Message, body: Message) -> None:
        await self.send(start)
        await self.send(body)


@attrs.define(slots=True, eq=False)
class WSGIAdapter:
    """An ASGI 3 app that serves ``http`` scopes with a WSGI callable."""

    app: WSGIApp
    threads: int = DEFAULT_WSGI_THREADS
    limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await _refuse_websocket(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        else:
            raise RuntimeError(f"a WSGI application cannot serve {kind!r} scopes")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        portal = _Portal()

        async def next_chunk() -> tuple[bytes, bool]:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("the client disconnected while sending the body")
            return message.get("body", b""), message.get("more_body", False)

        environ = build_environ(scope, WSGIInput(lambda: portal.call(next_chunk)))
        response = _Response(portal, send)
        try:
            await trio.to_thread.run_sync(
                self._run, environ, response, limiter=self.limiter, abandon_on_cancel=True
            )
        finally:
            portal.open = False

    def _run(self, environ: dict[str, Any], response: _Response) -> None:
        """The worker thread: call the app, stream its iterable, always ``close()`` it."""
        iterable = self.app(environ, response.start_response)
        try:
            if _single_chunk(iterable):
                for chunk in iterable:
                    if not any(name == b"content-length" for name, _ in response.headers):
                        response.headers.append((b"content-length", b"%d" % len(chunk)))
                    response.send_body(chunk, more=False)
                return
            for chunk in iterable:
                if chunk:
                    response.send_body(chunk, more=True)
            response.send_body(b"", more=False)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()


def _single_chunk(iterable: Iterable[bytes]) -> bool:
    """PEP 3333 lets the server compute Content-Length when ``len(iterable) == 1``."""
    try:
        return len(iterable) == 1  # type: ignore[arg-type]
    except TypeError:
        return False


def build_environ(scope: Scope, body: WSGIInput) -> dict[str, Any]:
    """The PEP 3333 environ for an ASGI ``http`` scope.

    ``SCRIPT_NAME`` is the root path and ``PATH_INFO`` the rest, percent-decoded
    and carried as latin-1 "bytes in a str" so undecodable bytes survive.
    Header names with ``_`` are dropped: after the ``-`` to ``_`` mapping they
    would be indistinguishable from (and could spoof) their dashed twins.
    """
    root_path: str = scope.get("root_path", "")
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    root = root_path.encode("utf-8")
    if root and raw_path.startswith(root):
        raw_path = raw_path[len(root) :]
    scheme = scope.get("scheme", "http")
    server = scope.get("server")
    if server is not None and server[1] is not None:
        server_name, server_port = server[0], str(server[1])
    else:
        server_name, server_port = "localhost", "443" if scheme == "https" else "80"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.decode("latin-1"),
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        if client[1] is not None:
            environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue
        value = raw_value.decode("latin-1")
        if name == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        elif name == "CONTENT-LENGTH":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.replace("-", "_")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            value = environ[key] + separator + value
        environ[key] = value
    return environ


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Decline the handshake; with the denial-response extension the client is told why."""
    await receive()
    logger.warning("Refused a WebSocket request: WSGI applications cannot serve WebSockets")
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(_WEBSOCKET_REFUSAL)),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": _WEBSOCKET_REFUSAL})
        return
    await send({"type": "websocket.close", "code": 1003, "reason": "WSGI application"})


async def _lifespan(receive: Receive, send: Send) -> None:
    """WSGI has no lifespan; acknowledge both phases so startup is not reported as a failure."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
