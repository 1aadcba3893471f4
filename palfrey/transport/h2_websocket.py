"""WebSocket over an HTTP/2 stream (RFC 8441): the trio glue between a stream and WSProtocol.

An extended CONNECT (``:method CONNECT``, ``:protocol websocket``) is a
request on a stream of its own; :class:`~palfrey.transport.http2.H2Connection`
hands it to :func:`h2_websocket` through ``serve_request``'s upgrade hook.
The handshake is checked as RFC 8441 §5 says (``Sec-WebSocket-Version: 13``,
no key), the same :class:`~palfrey.asgi.websocket.WebSocketSession` as over
HTTP/1.1 runs the app, and :class:`H2WebSocket` is its transport: the
handshake is answered with ``:status 200`` (no ``Upgrade``, no accept token),
and from then on the stream's DATA carries the WebSocket frames, both ways.

Differences from HTTP/1.1 (:mod:`palfrey.transport.websocket`):

- back-pressure is the stream's flow-control window: a chunk is handed back
  to the window as it is read, and reading follows the same
  :class:`~palfrey.transport.ws_reader.MessageReader` rules (read inline by
  the app, read ahead by the stream's task while at most ``--ws-max-queue``
  messages wait), so a slow app leaves the window shut and the peer stops;
- writes go through the stream's flow-controlled send path and the
  connection's single writer. Each takes exactly the bytes WSProtocol produced
  up to then, under one lock; a write cut short after part of a frame was
  queued resets the stream (RST_STREAM CANCEL), since the rest would never
  follow, and the WebSocket ends (1006 for the app);
- the end is the stream's: after the closing handshake (or our failure's
  close frame) END_STREAM, when the peer is gone or stopped answering
  RST_STREAM CANCEL. Nothing lingers: frames on one stream stay in order, and
  other streams are untouched;
- the server's shutdown closes with 1012 as over HTTP/1.1 (the connection
  itself sends GOAWAY).

The timers, the closing handshake and the write discipline are the same as
over HTTP/1.1 and live in :class:`~palfrey.transport.ws_transport.WebSocketBase`;
what is the stream's own is here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from palfrey.asgi.errors import ClientDisconnected
from palfrey.asgi.http import Outcome
from palfrey.asgi.messages import plain_text_headers
from palfrey.protocols.events import LocalProtocolError
from palfrey.protocols.ws import HandshakeError, WSProtocol
from palfrey.transport.ws_transport import CLOSE_HANDSHAKE_TIMEOUT, WebSocketBase

if TYPE_CHECKING:
    from palfrey.config.schema import Config
    from palfrey.transport.h2_stream import H2Stream


async def h2_websocket(stream: H2Stream, scope: dict[str, Any]) -> Outcome | None:
    """Serve an extended CONNECT for ``websocket`` on ``stream``; how the stream ended."""
    state = stream.connection.state
    config = state.config
    # The protocol layer let only an extended CONNECT with ``:protocol websocket`` here.
    try:
        protocol = WSProtocol(
            scope["headers"],
            max_size=config.ws_max_size,
            per_message_deflate=config.ws_per_message_deflate,
            require_key=False,
        )
    except HandshakeError as exc:
        await _refuse(stream, exc)
        return _outcome(stream)
    websocket = H2WebSocket(stream, protocol, config)
    session = websocket.session(scope, state.defaults, state.metrics)
    # The connection says goodbye with GOAWAY; the WebSocket with close 1012.
    stream.on_shutdown = session.shutdown
    if state.stopping:
        session.shutdown()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run_app, state.app)
            try:
                await websocket.run()
            finally:
                await websocket.release()
    finally:
        stream.on_shutdown = None
    return _outcome(stream)


def _outcome(stream: H2Stream) -> Outcome:
    # Anything but a complete response (or a stream already reset) gets RST_STREAM.
    return Outcome.COMPLETED if stream.complete or stream.gone else Outcome.RESET_STREAM


async def _refuse(stream: H2Stream, exc: HandshakeError) -> None:
    """Answer a request that is not a valid handshake; the app never sees it."""
    body = str(exc).encode("utf-8")
    headers = plain_text_headers(stream.connection.state.defaults, body, exc.headers)
    try:
        await stream.send_head(exc.status_code, headers, body, True)
    except ClientDisconnected:
        return


class H2WebSocket(WebSocketBase):
    """The :class:`~palfrey.asgi.websocket.WebSocketTransport` of an extended CONNECT stream.

    It is also the reader's :class:`~palfrey.transport.ws_reader.EventSource`:
    ``read`` is one chunk of the stream's DATA under the timers' deadline.
    """

    __slots__ = ("_stream",)

    #: What the handshake's acceptance answers with (RFC 8441 §5).
    accept_status = 200

    def __init__(
        self,
        stream: H2Stream,
        protocol: WSProtocol,
        config: Config,
    ) -> None:
        self._stream = stream
        super().__init__(
            protocol,
            stream.receive_tunnel,
            config,
        )

    # The handshake answers.

    async def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        protocol = self.protocol
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            # RFC 8441 §5: a 2xx answers the extended CONNECT; the HTTP/1.1-only
            # fields (Upgrade, Connection, Sec-WebSocket-Accept) are never made.
            response = protocol.accept(subprotocol, headers)
            self._accepted = True
            self.reader.received(protocol.next_events())
            if self._ping_interval is not None:
                self._next_ping = trio.current_time() + self._ping_interval
            # The head is queued at once; only the checkpoint after it waits. A cancel
            # landing there would make the session answer a second time on a stream
            # already accepted, so from here the accept is done, or the stream is reset.
            with trio.CancelScope(
                shield=True, deadline=trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT
            ) as scope:
                try:
                    await self._stream.send_head(200, response, b"", False)
                except ClientDisconnected:
                    self._lose()
                    raise
                finally:
                    self._answered.set()
            if scope.cancelled_caught:
                self._stream.reset()
                self._lose()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, end: bool
    ) -> None:
        if 200 <= status < 300:
            # RFC 9113 §8.5: a 2xx answer to a CONNECT opens the tunnel; the client would
            # take the body for WebSocket frames. The session makes this the app's error.
            await trio.lowlevel.checkpoint()
            raise LocalProtocolError(
                f"a {status} response accepts a WebSocket over HTTP/2; deny with 3xx-5xx"
            )
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._stream.send_head(status, headers, body, end)
        if end:
            self._answered.set()

    async def send_body(self, body: bytes, end: bool) -> None:
        async with self._writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._stream.send_body(body, end)
        if end:
            self._answered.set()

    # The end of the stream.

    async def release(self) -> None:
        """End the stream now that the WebSocket is over, even if the app task still runs.

        After the closing handshake, or our own close frame when we failed the
        WebSocket, END_STREAM (a frame the app's write left unsent goes first);
        RST_STREAM CANCEL when the peer is gone or stopped answering. A refused
        handshake's response is the connection's to finish or reset.
        """
        stream = self._stream
        if not self._accepted or stream.gone or stream.complete:
            return
        if self._lost:
            stream.reset()
            return
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT) as scope:
            async with self._writing:
                if self._lost:
                    stream.reset()
                    return
                try:
                    await stream.send_tunnel(self.protocol.data_to_send(), end=True)
                except ClientDisconnected:
                    return
        if scope.cancelled_caught:
            stream.reset()

    async def _write(self, data: bytes) -> None:
        """Queue ``data`` on the stream whole, or give the stream up; call with the lock held."""
        stream = self._stream
        if self._lost:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise ClientDisconnected("the WebSocket stream was given up")
        try:
            await stream.send_tunnel(data)
        except ClientDisconnected:
            self._lose()
            raise
        except BaseException:
            if stream.gone:
                # Cut short part-way: the stream was reset, nothing more can follow.
                self._lose()
            raise
