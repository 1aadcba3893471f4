"""Message checks and server-made responses shared by the HTTP and WebSocket bridges."""

from __future__ import annotations

from collections.abc import Sequence

from palfrey.asgi.headers import DefaultHeaders
from palfrey.asgi.types import Message
from palfrey.protocols.fields import is_field_value

INTERNAL_ERROR_BODY = b"Internal Server Error"


def response_body(message: Message) -> tuple[bytes, bool]:
    """The checked ``body`` and ``more_body`` of a response body message."""
    body = message.get("body", b"")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"'body' must be bytes, got {type(body).__name__}")
    more = message.get("more_body", False)
    if type(more) is not bool:
        raise TypeError(f"'more_body' must be a bool, got {more!r}")
    return bytes(body), more


def early_hint_links(message: Message) -> list[bytes]:
    """The checked ``links`` of an ``http.response.early_hint``: ``link`` field values."""
    links = message.get("links", ())
    if isinstance(links, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"'links' must be an iterable of bytes, got {type(links).__name__}")
    checked = []
    for link in links:
        if type(link) is not bytes:
            raise TypeError(f"each link must be bytes, got {link!r}")
        if not link or not is_field_value(link):
            raise ValueError(f"invalid link {link!r}: it must be a non-empty header value")
        checked.append(link)
    return checked


def plain_text_headers(
    defaults: DefaultHeaders, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """Headers for a complete text response the server sends itself.

    Whether the connection closes afterwards is the transport's decision
    (HTTP/1.1 says so with ``connection: close``; HTTP/2 and HTTP/3 forbid that field).
    """
    return defaults.merge(
        [
            *extra,
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
    )
