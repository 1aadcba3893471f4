"""One HTTP request/response cycle seen from the application (ASGI ``http`` scope).

The cycle owns the ASGI rules — message order and types, 500 on failure,
``http.disconnect`` — and nothing about the wire. Each HTTP version supplies
an :class:`HTTPStream`, so HTTP/1.1, HTTP/2 and HTTP/3 share this code, and
:meth:`HTTPCycle.run` tells the transport what is left to do with an
:class:`Outcome`; how a version closes or resets is the transport's business
(``connection: close`` is never added here: HTTP/2 and HTTP/3 forbid it,
RFC 9113 §8.2.2).

Two extensions ride on the same stream calls: ``http.response.early_hint``
(a ``103 Early Hints`` before the head, :meth:`HTTPStream.send_informational`)
and ``http.response.trailers`` (fields after the body,
:meth:`HTTPStream.send_trailers`). The transport offers them in the scope;
the cycle drops what the stream cannot carry instead of failing the response.

Every ``receive()`` and ``send()`` is a trio checkpoint, whatever the state:
an app that loops on either can be cancelled and never starves other tasks.
The stream's own reads and writes are checkpoints; where a call does no I/O,
the cycle takes one itself.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.file_body import (
    FILE_MESSAGES,
    FileBody,
    open_path,
    send_file,
    with_content_length,
    zerocopy_file,
)
from palfrey.asgi.headers import DefaultHeaders, check_response_headers, validate_trailers
from palfrey.asgi.messages import (
    INTERNAL_ERROR_BODY,
    early_hint_links,
    plain_text_headers,
    response_body,
)
from palfrey.asgi.types import ASGIApp, Message
from palfrey.observability import access_log
from palfrey.observability.metrics import Metrics
from palfrey.protocols.events import LocalProtocolError

logger = logging.getLogger("palfrey.error")

#: How long ``receive()`` from a cancelled scope looks for a disconnect (see ``_poll_disconnect``).
_POLL_TIME = 0.001


class Outcome(enum.Enum):
    """What a finished cycle leaves the transport to do with its stream."""

    #: The response is complete on the wire; the stream ended normally.
    COMPLETED = "completed"
    #: The response is incomplete (the client left, the app failed after the head,
    #: the body broke its framing): the stream must be reset. HTTP/1.1 has no
    #: stream reset, so it closes the connection.
    RESET_STREAM = "reset stream"
    #: A write was interrupted part-way (cancelled, timed out): how much of it
    #: reached the peer is unknown, so no further byte may be written on the connection.
    CLOSE_CONNECTION = "close connection"


class HTTPStream(Protocol):
    """What a transport provides for one request.

    ``send_head`` writes the status line, headers and the first body chunk in
    one go (the bridge holds the head back until the first body message so a
    small response is one write). Both send methods raise
    :class:`ClientDisconnected` when the peer is gone and
    :class:`LocalProtocolError` when the body breaks the framing the headers
    promised (for example, more bytes than ``content-length``). Every method
    is a trio checkpoint.

    ``supports_trailers`` and ``supports_early_hints`` say whether the stream can
    carry a trailer section and an interim ``1xx`` response; they are read once,
    when the scope is built, and decide which extensions the app is offered.
    """

    supports_trailers: bool
    supports_early_hints: bool

    async def receive_body(self) -> tuple[bytes, bool] | None:
        """The next body chunk and whether more follows, or None once the client is gone."""
        ...

    async def refuse(self) -> None:
        """Turn the request away unseen by the app: the server is at its concurrency limit."""
        ...

    async def wait_disconnected(self) -> None:
        """Return when the request can get nothing more from the client: it went away or
        broke the protocol. Consumes no body the app has not read; while such body
        is pending, only a disconnect already known can be reported."""
        ...

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None: ...

    async def send_body(self, body: bytes, end: bool) -> None: ...

    async def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Write an interim ``1xx`` response (never 101); only before ``send_head``."""
        ...

    async def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Write the trailer section ``headers`` (never empty) and end the response.

        Called after ``send_head``/``send_body`` with ``end=False``. A stream whose
        framing cannot carry trailers (HTTP/1.1 with ``content-length``) drops them
        and ends the response all the same.
        """
        ...


@attrs.define(slots=True, eq=False)
class HTTPCycle:
    """The ``receive``/``send`` pair handed to the application for one request."""

    scope: dict[str, Any]
    stream: HTTPStream
    defaults: DefaultHeaders
    response_started: bool = False
    response_complete: bool = False
    head_sent: bool = False
    disconnected: bool = False
    #: A write raised something other than a disconnect (cancelled, timed out) part-way.
    write_interrupted: bool = False
    status: int = 0
    bytes_sent: int = 0
    #: Request body bytes handed to the app.
    bytes_received: int = 0
    #: Where the request is counted, when ``--metrics-bind`` is on.
    metrics: Metrics | None = None
    #: The body length the app's ``content-length`` promises, when it is held to it.
    _declared_length: int | None = None
    _headers: list[tuple[bytes, bytes]] = attrs.Factory(list)
    _body_complete: bool = False
    #: The app said ``"trailers": True``: the response ends with its trailers message.
    #: The request is HEAD: body messages are checked but never sent or counted.
    _head_request: bool = False
    _trailers_declared: bool = False
    #: ...and they go on the wire: the extension was offered and the response has content.
    _trailers_on_wire: bool = False
    #: The last body message is sent; ``http.response.trailers`` messages are due.
    _awaiting_trailers: bool = False
    #: Trailer fields collected over ``more_trailers`` messages.
    _trailer_fields: list[tuple[bytes, bytes]] | None = None
    _wait_scope: trio.CancelScope | None = None
    #: Made by the first ``receive()``: most requests (a GET) never call it.
    _receive_turn: trio.Semaphore | None = None

    async def run(self, app: ASGIApp) -> Outcome:
        """Call the app, enforce the ASGI rules on what it did, and say how the stream ends.

        Every exception except cancellation is contained here: the client gets
        a 500 if nothing was sent yet, otherwise the stream is reset.
        """
        logged = access_log.enabled()
        metrics = self.metrics
        started = time.perf_counter() if logged or metrics is not None else 0.0
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("Client disconnected while the application was sending")
        except Exception:
            logger.exception("Exception in ASGI application")
            await self._fail()
        else:
            # A client that left first excuses an app that then stops answering.
            if not self.disconnected and not self.response_started:
                logger.error("ASGI callable returned without starting a response")
                await self._fail()
            elif not self.disconnected and not self.response_complete:
                logger.error("ASGI callable returned without completing the response")
                await self._fail()
        finally:
            if self._wait_scope is not None:
                self._wait_scope.cancel()
            if metrics is not None:
                metrics.request_done(
                    self.scope["http_version"],
                    self.status,
                    self.bytes_received,
                    self.bytes_sent,
                    time.perf_counter() - started,
                )
            if logged:
                access_log.log_http(
                    self.scope,
                    self.status,
                    self.bytes_sent,
                    time.perf_counter() - started,
                    self._headers,
                )
        if self.write_interrupted:
            return Outcome.CLOSE_CONNECTION
        if self.response_complete:
            return Outcome.COMPLETED
        return Outcome.RESET_STREAM

    async def receive(self) -> Message:
        # Apps may call receive() from two tasks (a disconnect watcher and a body
        # reader); the stream under it has one reader, so calls take turns.
        turn = self._receive_turn
        if turn is None:
            turn = self._receive_turn = trio.Semaphore(1)
        try:
            turn.acquire_nowait()
        except trio.WouldBlock:
            await turn.acquire()
        try:
            return await self._receive()
        finally:
            turn.release()

    async def _receive(self) -> Message:
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            # Called from an already-cancelled scope (a poll). A disconnect already
            # known is answered at once, and the cancel stays pending for the caller's
            # next checkpoint; otherwise _poll_disconnect looks once and lets it through.
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            return await self._poll_disconnect()
        if self.disconnected or self.response_complete:
            await trio.lowlevel.checkpoint()
            return {"type": "http.disconnect"}
        if not self._body_complete:
            chunk = await self.stream.receive_body()
            if chunk is None:
                self.disconnected = True
                return {"type": "http.disconnect"}
            body, more = chunk
            self._body_complete = not more
            self.bytes_received += len(body)
            return {"type": "http.request", "body": body, "more_body": more}
        with trio.CancelScope() as scope:
            self._wait_scope = scope
            await self.stream.wait_disconnected()
            self.disconnected = True
        self._wait_scope = None
        if not self.disconnected:
            # The response completed while we waited (it cancelled the wait): a
            # cancelled wait may have returned without a checkpoint.
            await trio.lowlevel.checkpoint()
        return {"type": "http.disconnect"}

    async def _poll_disconnect(self) -> Message:
        """``receive()`` from an already-cancelled scope: look once, then let the cancel through.

        Starlette's ``Request.is_disconnected()`` polls this way. Reads check for
        cancellation before touching the socket, so without a short shielded look
        a disconnect could never be reported to such a caller.
        """
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _POLL_TIME):
            await self.stream.wait_disconnected()
            self.disconnected = True
        if not self.disconnected:
            await trio.lowlevel.checkpoint()  # raises the caller's Cancelled
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        message_type = message.get("type")
        if message_type == "http.response.early_hint" and not (
            self.response_complete or self._awaiting_trailers
        ):
            await self._early_hint(message)
            return
        if not self.response_started or self.response_complete:
            # Neither writes (the head waits for the first body message), so neither
            # reaches a checkpoint of the stream's.
            await trio.lowlevel.checkpoint()
        if not self.response_started:
            if message_type != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', got {message_type!r}"
                )
            status = message.get("status")
            # 1xx responses are the server's business (RFC 9110 §15.2), not the app's.
            if type(status) is not int or not 200 <= status <= 999:
                raise TypeError(f"'status' must be an int from 200 to 999, got {status!r}")
            checked = check_response_headers(message.get("headers", ()))
            trailers = message.get("trailers", False)
            if type(trailers) is not bool:
                raise TypeError(f"'trailers' must be a bool, got {trailers!r}")
            self.status = status
            self._headers = self.defaults.merge_checked(checked.fields, checked.names)
            declared = checked.declared_length
            self._head_request = self.scope.get("method") == "HEAD"
            # A HEAD response and a 304 describe a body they don't carry (RFC 9110 §8.6).
            if status != 304 and not self._head_request:
                self._declared_length = declared
            if trailers:
                self._trailers_declared = True
                self._trailers_on_wire = (
                    status not in (204, 304)
                    and self.scope.get("method") != "HEAD"
                    and "http.response.trailers" in (self.scope.get("extensions") or ())
                )
            self.response_started = True
            return
        if self.response_complete:
            if self.disconnected:
                raise ClientDisconnected("the client has disconnected")
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} after the response")
        if self._awaiting_trailers:
            if message_type != "http.response.trailers":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.trailers', got {message_type!r}"
                )
            await self._trailers(message)
            return
        if message_type != "http.response.body":
            offered = self.scope.get("extensions") or ()
            if message_type in FILE_MESSAGES and message_type in offered:
                await self._file(message)
                return
            raise RuntimeError(f"Expected ASGI message 'http.response.body', got {message_type!r}")
        body, more = response_body(message)
        declared = self._declared_length
        if declared is not None:
            total = self.bytes_sent + len(body)
            if total > declared or (not more and total < declared):
                # Checked before the stream frames anything, so a first body message
                # that breaks the promise still leaves room for a 500.
                raise RuntimeError(
                    f"Invalid response body: {total} bytes where content-length is {declared}"
                )
        if self.disconnected or self.write_interrupted:
            raise ClientDisconnected("the client has disconnected")
        if more or not self._trailers_declared:
            await self._write(body, not more)
            return
        # The last body message of a response with trailers: the stream stays open for them.
        await self._write(body, False)
        self._awaiting_trailers = True

    async def _write(self, body: bytes, end: bool) -> None:
        # A cancel that arrives before the stream has framed anything interrupts nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if self.head_sent:
                await self.stream.send_body(body, end)
            else:
                await self.stream.send_head(self.status, self._headers, body, end)
                self.head_sent = True
        except ClientDisconnected:
            self.disconnected = True
            raise
        except LocalProtocolError as exc:
            raise RuntimeError(f"Invalid response body: {exc}") from None
        except BaseException:
            self.write_interrupted = True
            raise
        if not self._head_request:
            # A HEAD response's body never reaches the wire: nothing is counted as sent.
            self.bytes_sent += len(body)
        if end:
            self.response_complete = True
            if self._wait_scope is not None:
                self._wait_scope.cancel()

    async def _file(self, message: Message) -> None:
        """A body read from a file (:mod:`palfrey.asgi.file_body`), under the rules of
        ``http.response.body``.

        ``pathsend`` is the whole body, so it comes first and alone (the extension
        forbids mixing it with body messages), and when the app gave no length the
        head gets the file's, as Granian does: a plain file needs no chunked framing.
        ``zerocopysend`` is one body message among others. A response without
        content (HEAD, 204, 304) reads nothing.
        """
        if message["type"] == "http.response.pathsend":
            if self.head_sent:
                raise RuntimeError("'http.response.pathsend' must be the only body message")
            file, more = await open_path(message), False
        else:
            file, more = zerocopy_file(message)
        try:
            declared = self._declared_length
            total = self.bytes_sent + file.count
            if declared is not None and (total > declared or (not more and total < declared)):
                raise RuntimeError(
                    f"Invalid response body: {total} bytes where content-length is {declared}"
                )
            if file.owned and not self._trailers_on_wire and self.status not in (204, 304):
                self._headers = with_content_length(self._headers, file.count)
            if self.disconnected or self.write_interrupted:
                raise ClientDisconnected("the client has disconnected")
            end = not more and not self._trailers_declared
            if not file.count or self.status in (204, 304) or self.scope.get("method") == "HEAD":
                await self._write(b"", end)
            else:
                await self._write_extra(self._write_file, file, end)
                file.sent()
                self.bytes_sent += file.count
                if end:
                    self.response_complete = True
                    if self._wait_scope is not None:
                        self._wait_scope.cancel()
            self._awaiting_trailers = not more and self._trailers_declared
        finally:
            file.close()

    async def _write_file(self, file: FileBody, end: bool) -> None:
        if not self.head_sent:
            await self.stream.send_head(self.status, self._headers, b"", False)
            self.head_sent = True
        await send_file(self.stream, file, end)

    async def _early_hint(self, message: Message) -> None:
        """Send ``103 Early Hints`` with a ``link`` field per link, while no head is out.

        Dropped (the extension allows it) where no ``1xx`` can go: once the head
        is on the wire, or on a stream without interim responses (HTTP/1.0).
        """
        links = early_hint_links(message)
        if self.disconnected or self.write_interrupted:
            await trio.lowlevel.checkpoint()
            raise ClientDisconnected("the client has disconnected")
        if not links or self.head_sent or not self.stream.supports_early_hints:
            await trio.lowlevel.checkpoint()
            return
        await self._write_extra(
            self.stream.send_informational, 103, [(b"link", link) for link in links]
        )

    async def _trailers(self, message: Message) -> None:
        """Collect an ``http.response.trailers`` message; the last one ends the response.

        The fields go on the wire only where the extension was offered (the stream
        carries trailers and the client sent ``te: trailers``) and the response has
        content to trail (not ``HEAD``, ``204`` or ``304``); otherwise the response
        ends without them.
        """
        fields = validate_trailers(message.get("headers", ()))
        more = message.get("more_trailers", False)
        if type(more) is not bool:
            raise TypeError(f"'more_trailers' must be a bool, got {more!r}")
        if self.disconnected or self.write_interrupted:
            await trio.lowlevel.checkpoint()
            raise ClientDisconnected("the client has disconnected")
        if fields:
            if self._trailer_fields is None:
                self._trailer_fields = fields
            else:
                self._trailer_fields += fields
        if more:
            await trio.lowlevel.checkpoint()
            return
        fields = self._trailer_fields
        if fields and self._trailers_on_wire:
            await self._write_extra(self.stream.send_trailers, fields)
        else:
            await self._write_extra(self.stream.send_body, b"", True)
        self._awaiting_trailers = False
        self.response_complete = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def _write_extra(self, write: Callable[..., Awaitable[None]], *args: Any) -> None:
        """A write other than the head and body (an early hint, the trailers): the same
        rules as :meth:`_write`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await write(*args)
        except ClientDisconnected:
            self.disconnected = True
            raise
        except LocalProtocolError as exc:
            raise RuntimeError(f"Invalid response: {exc}") from None
        except BaseException:
            self.write_interrupted = True
            raise

    async def _fail(self) -> None:
        """Answer 500 if the head is not on the wire yet (a complete response, so the
        stream ends normally); otherwise the stream stays incomplete and is reset."""
        if self.head_sent or self.disconnected or self.write_interrupted:
            return
        self.status = 500
        self.head_sent = self.response_started = True
        if self.metrics is not None:
            self.metrics.server_response(500)
        headers = plain_text_headers(self.defaults, INTERNAL_ERROR_BODY)
        try:
            await self.stream.send_head(500, headers, INTERNAL_ERROR_BODY, True)
        except (ClientDisconnected, LocalProtocolError):
            return
        self.bytes_sent = len(INTERNAL_ERROR_BODY)
        self.response_complete = True
