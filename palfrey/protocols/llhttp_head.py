"""One request head collected from llhttp's callbacks, and the parsers that fill them.

llhttp (through httptools) calls back once per URL piece and per field; a
:class:`RequestHead` gathers them and notes the fields the handler's framing
and connection rules depend on, so that
:class:`~palfrey.protocols.httptools.H1HttpToolsProtocol` reads one object
instead of scanning the fields again.
"""

from __future__ import annotations

import httptools

from palfrey.protocols.h1_wire import PeerError, comma_tokens

_TRAILING_WHITESPACE = frozenset(b" \t")
_SPECIAL_REQUEST_FIELDS = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade")
)


class RequestHead:
    """Collects one request head from llhttp's callbacks.

    Separate from the handler so that the parser (which holds these bound
    methods) and the handler do not form a reference cycle the GC must break.
    """

    __slots__ = (
        "chunked",
        "close",
        "content_length",
        "done",
        "error",
        "expect",
        "fields",
        "host",
        "hosts",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.hosts = 0
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.close = False
        self.expect = False
        self.upgrade = False
        self.done = False
        self.error: PeerError | None = None

    def _reject(self, message: str) -> None:
        self.error = PeerError(message)
        raise self.error

    def on_url(self, url: bytes) -> None:
        if self.done:
            self._reject("more than one request in a request head")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done:
            self._reject("more than one request in a request head")
        name = name.lower()
        # llhttp drops the whitespace before a value but not after it. The last byte
        # is looked up as an int: ``value[-1:] in b" \t"`` is much slower, since
        # bytes.__contains__ first tries to read its operand as an integer.
        if value and value[-1] in _TRAILING_WHITESPACE:
            value = value.rstrip(b" \t")
        if name in _SPECIAL_REQUEST_FIELDS:
            value = self._special(name, value)
        self.fields.append((name, value))

    def _special(self, name: bytes, value: bytes) -> bytes:
        if name == b"host":
            self.hosts += 1
            self.host = value
        elif name == b"content-length":
            self.content_length = int(value)
        elif name == b"transfer-encoding":
            # One Transfer-Encoding, and only "chunked"; anything else is answered
            # by transfer_coding_error, but only once the whole head has passed
            # the grammar (so not raised here).
            value = value.lower()
            if (self.chunked or value != b"chunked") and self.error is None:
                self.error = PeerError("unsupported Transfer-Encoding", 501)
            self.chunked = True
        elif name == b"connection":
            self.close = self.close or b"close" in comma_tokens(value)
        elif name == b"expect":
            self.expect = self.expect or b"100-continue" in comma_tokens(value)
        elif comma_tokens(value):
            self.upgrade = True
        return value

    def on_headers_complete(self) -> None:
        if self.done:
            self._reject("more than one request in a request head")
        self.done = True


#: Parsers ready for a new request head, each with the RequestHead its callbacks fill.
#: A parser only ever gets one complete head and is used without yielding, so
#: connections share them: an idle connection holds none and most requests create
#: none. A parser left mid-message (a body, an upgrade, a close) is dropped.
#: ``list.pop``/``append`` are atomic, so two threads never share one.
PARSERS: list[tuple[httptools.HttpRequestParser, RequestHead]] = []


def new_parser() -> tuple[httptools.HttpRequestParser, RequestHead]:
    head = RequestHead()
    parser = httptools.HttpRequestParser(head)
    # Like h11, accept any HTTP/d.d (llhttp's default is 0.9, 1.x and 2.0 only),
    # so that other versions get H1Protocol's 505 rather than a 400.
    parser.set_dangerous_leniencies(lenient_version=True)
    return parser, head
