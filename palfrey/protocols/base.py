"""The contract every HTTP/1.1 handler implements: bytes in, events out, bytes to write."""

from __future__ import annotations

from typing import Protocol

from palfrey.protocols.events import ProtocolEvent


class ProtocolHandler(Protocol):
    """Sans-I/O HTTP/1.1 server connection.

    ``receive_data(b"")`` means the peer closed its side (end of file), as
    with ``socket.recv``. After ``start_new_cycle`` the handler may already
    hold a pipelined request; ``next_events`` parses it without new input.
    """

    def receive_data(self, data: bytes) -> list[ProtocolEvent]: ...

    def next_events(self) -> list[ProtocolEvent]: ...

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes: ...

    def send_body(self, data: bytes, more: bool = False) -> bytes: ...

    def frame_body(self, length: int, more: bool = False) -> tuple[bytes, bytes]:
        """Frame ``length`` body bytes that the transport writes itself (``os.sendfile``).

        Returns what to write before them and after them (a chunk's size line and
        end; without ``more``, the end of the response too), so that the bytes never
        pass through the handler. Checked as :meth:`send_body` checks. Only for a
        response with content (not HEAD, 204 or 304) and ``length`` above 0.
        """
        ...

    def send_continue(self) -> bytes: ...

    def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """An interim ``1xx`` response (not 101: see :meth:`upgrade`) before the final one.

        Returns ``b""`` for an HTTP/1.0 client, which must not get one (RFC 9110
        §15.2). A client waiting for ``100 Continue`` still waits for it after
        any other ``1xx``. Raises :class:`~palfrey.protocols.events.LocalProtocolError`
        for a bad status or headers, or once the response has started.
        """
        ...

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """End the response with a trailer section holding ``headers``.

        Only a chunked body can carry one (RFC 9112 §7.1.2): after a body framed
        by ``content-length``, for an HTTP/1.0 client, or for a response without
        a body, the fields are dropped and this is ``send_body(b"")``.
        """
        ...

    def start_new_cycle(self) -> None: ...

    def upgrade(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """Write ``101 Switching Protocols`` with ``headers``; return its bytes and the bytes
        already received after the request, which belong to the new protocol. Raises
        :class:`~palfrey.protocols.events.LocalProtocolError` for headers it cannot send."""
        ...

    @property
    def upgrade_requested(self) -> bool:
        """The request just received asks to switch protocols: its ``Upgrade`` field
        lists a protocol (RFC 9110 §7.8). Read before its response starts."""
        ...

    @property
    def awaiting_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and still holds its body back: no
        body byte has arrived and nothing has answered it. Never for HTTP/1.0, whose
        expectation a server must ignore (RFC 9110 §10.1.1)."""
        ...

    @property
    def keep_alive(self) -> bool: ...

    @property
    def response_complete(self) -> bool: ...

    @property
    def request_complete(self) -> bool: ...

    @property
    def has_pending_input(self) -> bool: ...

    @property
    def unread_body_size(self) -> int | None:
        """Body bytes of the current request not yet received: 0 once it is complete,
        None when the framing does not say (chunked)."""
        ...

    @property
    def pending_input_size(self) -> int:
        """Bytes received but not yet turned into events (a pipelined request, an
        unread body): the transport stops reading while this is over its bound."""
        ...
