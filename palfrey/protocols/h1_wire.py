"""HTTP/1.1 wire rules shared by the two HTTP/1.1 handlers.

llhttp only parses request heads for :mod:`palfrey.protocols.httptools`; the
chunked request body and the response head are handled here, with h11's
grammar, normalisation and error messages, so both handlers accept, reject and
write the same bytes. The checks Palfrey adds on top of h11 (:func:`check_request_head`,
:class:`BodyCounter`) live here too, so both handlers apply one policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from palfrey.protocols.events import LocalProtocolError, ProtocolError
from palfrey.protocols.status import reason_phrase, status_line

# How a response body is framed on the wire.
LENGTH = 0
CHUNKED = 1
UNTIL_CLOSE = 2

# h11's grammar (RFC 9110 §5): field names are tokens; values have no NUL or
# whitespace other than SP/HTAB runs between visible characters.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_FIELD_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*(.*?)[ \t]*")
_CHUNK_HEADER = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
_LINE_END = re.compile(rb"\r?\n")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_FOLD = re.compile(rb"[ \t]+")
_CONTENT_LENGTH_MAX_DIGITS = 20
#: Lengths are 64-bit in llhttp, which refuses more, so a Content-Length or chunk
#: size this large is a framing error for both handlers, not a wait for data.
CHUNK_SIZE_LIMIT = 2**64
#: The longest request-target accepted before answering 414 unless told otherwise
#: (``--limit-request-target``; RFC 9112 §3: servers ought to take at least 8000
#: octets; 8190 is the limit other servers use).
MAX_TARGET_LENGTH = 8190
#: The start of a request-target in origin-form or asterisk-form (``/``, ``*``) or
#: absolute-form (RFC 9112 §3.2), as llhttp reads it: a scheme of letters, ``://``
#: and an authority of the characters llhttp allows there, then ``/``, ``?`` or the
#: end. Authority-form is CONNECT's alone, answered 405 before this is checked.
_TARGET_START = re.compile(rb"[/*]|[A-Za-z]+://[-!$%&'()*+,.0-9:;=@A-Z\[\]_a-z~]*(?:[/?]|\Z)")
#: ``uri-host [ ":" port ]`` (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP-literal in
#: brackets (IPv6 loosely: hex digits, colons, dots; or IPvFuture), or a reg-name
#: of unreserved, sub-delims and percent-encoded octets. Empty is allowed: a
#: request-target without an authority is sent with an empty Host (RFC 9112 §3.2).
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|\[[vV][0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+\]"
    rb"|(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)
#: Control characters other than HTAB, CR and LF (RFC 9110 §5.5), which llhttp
#: refuses in a request head and h11 tolerates in field values.
#: Host values already found valid: a server sees the same few on every request, and
#: the grammar check costs more than the rest of the head checks together.
_VALID_HOSTS: set[bytes] = set()
#: Remembered before the set is emptied (bounds memory whatever clients send).
_VALID_HOSTS_SIZE = 256
#: What a request head may hold anywhere: HTAB, SP, visible ASCII and obs-text.
#: Deleting these leaves its CRs, LFs and control characters.
_ORDINARY_BYTES = bytes((0x09, *range(0x20, 0x7F), *range(0x80, 0x100)))
_FOLDED_LINE = re.compile(rb"\n[ \t]")
#: The framing fields' lines, to count them and read their raw values.
_FRAMING_LINE = re.compile(rb"\n(content-length|transfer-encoding)[ \t]*:([^\r\n]*)", re.IGNORECASE)
_TRANSFER_ENCODING_LINE = re.compile(rb"\ntransfer-encoding[ \t]*:([^\r\n]*)", re.IGNORECASE)
_FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"connection"))

#: Field sections already rendered, keyed by the response's fields, when they frame
#: the body with one ``content-length`` alone: the section's bytes and the length.
#: Whatever the status, method, version and keep-alive, such a head is its status
#: line, this section and at most ``Connection: close``, so most responses skip
#: validating and rendering their fields field by field. Long sections are not kept.
_SECTIONS: dict[tuple[object, ...], tuple[bytes, int]] = {}
_SECTIONS_SIZE = 256
_SECTION_MAX_BYTES = 2048
_CLOSE_LINE = b"Connection: close\r\n"

#: ``name: value`` lines of response fields already validated, keyed by the
#: application's (name, value) pair: most responses repeat the same few fields
#: (server, date, content-type), so they skip validation and formatting.
_LINE_CACHE: dict[tuple[bytes, bytes], bytes] = {}
_LINE_CACHE_SIZE = 1024


class PeerError(ProtocolError):
    """Bad input of the kind h11 reports as ``RemoteProtocolError``.

    After the peer's end of file these become ``ConnectionClosed`` instead,
    exactly as :class:`~palfrey.protocols.h11.H1Protocol` does.
    """


def check_request_head(
    method: bytes,
    target: bytes,
    http_version: str,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    content_length: int | None,
    chunked: bool,
    max_head_size: int,
    limit_request_body: int | None,
    max_target_length: int = MAX_TARGET_LENGTH,
    raw_size: int | None = None,
    host: bytes | None = None,
) -> str:
    """Apply Palfrey's checks on a request head the parser accepted; return the scope version.

    Both handlers call this, in this order, so a given head gets the same status
    code whichever ``--http`` is chosen. ``headers`` are lower-cased (name, value)
    pairs; ``content_length`` and ``chunked`` say what the framing fields held,
    since each parser already knows and a second scan would cost every request.
    ``raw_size`` is the head's size on the wire when known: the size measured
    here is at most that plus one byte per field, so below the limit it is skipped.
    ``host`` is the Host field's value; the parsers have already required exactly
    one in HTTP/1.1 and at most one in HTTP/1.0 (RFC 9112 §3.2).

    A request in absolute-form still needs a valid Host, since a client must send
    one (RFC 9112 §3.2), but the two are not compared: RFC 9112 §3.2.2 has the
    server ignore Host and use the target's authority, so a mismatch changes
    nothing the server does.
    """
    if method == b"CONNECT":
        # RFC 9110 §9.3.6: an origin server need not support tunnelling.
        raise ProtocolError("CONNECT is not supported", 405)
    if not target.isascii():
        raise ProtocolError("request target is not ASCII", 400)
    if target[:1] != b"/" and _TARGET_START.match(target) is None:
        # h11 takes any visible characters; llhttp (and RFC 9112 §3.2) only these forms.
        raise ProtocolError("invalid request target", 400)
    if http_version != "1.1" and not http_version.startswith("1."):
        raise ProtocolError("HTTP version not supported", 505)
    if len(target) > max_target_length:
        raise ProtocolError("request target too long", 414)
    if host is not None and host not in _VALID_HOSTS:
        if _HOST.fullmatch(host) is None:
            # RFC 9112 §3.2: a Host that is not uri-host [":" port] is answered 400.
            raise ProtocolError("invalid Host header", 400)
        if len(_VALID_HOSTS) >= _VALID_HOSTS_SIZE:
            _VALID_HOSTS.clear()
        _VALID_HOSTS.add(host)
    # h11 only limits a head that is still incomplete; one that arrives in a
    # single read is measured here (request line, fields, CRLFs).
    if raw_size is None or raw_size + len(headers) > max_head_size:
        size = len(method) + len(target) + 14
        size += sum(len(name) + len(value) + 4 for name, value in headers)
        if size > max_head_size:
            raise ProtocolError("request head too large", 431)
    if chunked and http_version == "1.0":
        # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request", 400)
    if content_length is not None:
        if content_length >= CHUNK_SIZE_LIMIT:
            raise ProtocolError("bad Content-Length", 400)
        if limit_request_body is not None and content_length > limit_request_body:
            raise ProtocolError("request body too large", 413)
        if chunked:
            # RFC 9112 §6.1: a request smuggling vector; rejecting it is allowed.
            raise ProtocolError("both Content-Length and Transfer-Encoding", 400)
    # RFC 9112 §2.3: a higher 1.x minor version is processed as 1.1.
    return "1.0" if http_version == "1.0" else "1.1"


def lax_head_error(head: bytes | bytearray) -> PeerError | None:
    """What h11 accepts in a complete request head but llhttp refuses, as llhttp's 400.

    Each of these lets two parsers disagree about where a field or message ends
    (request smuggling), so both handlers refuse them: llhttp does already and
    :class:`~palfrey.protocols.h11.H1Protocol` calls this on the raw head, since
    h11 unfolds lines, accepts bare LF and merges identical Content-Length fields
    before anyone sees them. Repeated Content-Length fields (or a list, even of
    one value) are refused rather than merged, which RFC 9112 §6.3 allows; so is
    a Transfer-Encoding value with a tab in it, which llhttp refuses.
    """
    # One pass finds whether anything but CRLF pairs is left once the ordinary bytes
    # are gone; only a head with a bare CR or LF or a control character takes the
    # slower passes below that say which it is.
    crlf = head.count(b"\r\n")
    unusual = len(head.translate(None, _ORDINARY_BYTES)) != 2 * crlf
    if unusual and (head.count(b"\n") != crlf or head.count(b"\r") != crlf):
        # A bare LF or CR ends a line for one parser and not another (RFC 9112 §2.2).
        return PeerError("bare LF or CR in request head")
    if _FOLDED_LINE.search(head) is not None:
        return PeerError("obsolete line folding in request head")  # RFC 9112 §5.2
    if unusual:
        return PeerError("control character in request head")
    lengths = 0
    for name, value in _FRAMING_LINE.findall(head):
        if name[0] in b"cC":
            lengths += 1
            if lengths > 1 or b"," in value:
                return PeerError("repeated Content-Length")
        elif b"\t" in value:
            return PeerError("tab in Transfer-Encoding")
    return None


def transfer_coding_error(head: bytes) -> PeerError:
    """The answer to a request head whose Transfer-Encoding is not one ``chunked``.

    RFC 9112 §6.3: when chunked is not the final coding (``identity``,
    ``xchunked``, ``chunked, identity``) the body length cannot be known: 400
    and close. Chunked twice (two fields or a list) is forbidden to senders
    (§6.1), so also 400. Only an unknown coding under a final chunked (``gzip,
    chunked``) gets 501 (§6.1); a lone ``chunked`` the parsers still refused
    (``chunked,``) is 400. Both parsers refuse before giving us a value, so
    the codings are read from the raw head; this runs only on that error path.
    """
    codings = [
        coding
        for name, value in _FRAMING_LINE.findall(head)
        if name[0] in b"tT"
        for coding in comma_tokens(value)
    ]
    if len(codings) > 1 and codings[-1] == b"chunked" and codings.count(b"chunked") == 1:
        return PeerError("unsupported transfer coding", 501)
    return PeerError("chunked is not the final transfer coding, or is repeated")


class BodyCounter:
    """Counts one request's body bytes against ``limit_request_body``.

    Content-Length is checked up front, but a chunked body (or one that lies)
    is only known to be too large as it arrives. One instance per connection,
    reset per request, so counting allocates nothing.
    """

    __slots__ = ("limit", "received")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.received = 0

    def add(self, size: int) -> None:
        """Count ``size`` more bytes; raise 413 once the total passes the limit."""
        self.received += size
        if self.limit is not None and self.received > self.limit:
            raise ProtocolError("request body too large", 413)


def comma_tokens(value: bytes) -> list[bytes]:
    """h11's ``get_comma_header`` for one value: lower-cased, stripped, non-empty items."""
    return [token for token in (item.strip() for item in value.lower().split(b",")) if token]


class ChunkedDecoder:
    """h11's ChunkedReader: the same grammar, the same errors, the same leniencies.

    Kept in step with h11 rather than llhttp so that where a chunked body ends,
    and whether it is valid, never depends on the ``--http`` choice.
    """

    __slots__ = ("_discard", "_left", "_trailer")

    def __init__(self) -> None:
        self._left = 0
        self._discard = b""
        self._trailer = False

    def decode(
        self, buf: bytes, parts: list[bytes], count: Callable[[int], None]
    ) -> tuple[int, bool]:
        """Append the body bytes in ``buf`` to ``parts``; return (bytes used, body complete).

        ``count`` sees each piece before it is appended and may raise (body limit).
        Unused bytes are a partial chunk line or trailer, or the next request.
        """
        size = len(buf)
        pos = 0
        while True:
            if self._trailer:
                end = _trailer_end(buf, pos)
                if end < 0:
                    return pos, False
                return end, True
            if self._discard:
                got = buf[pos : pos + len(self._discard)]
                if not got:
                    return pos, False
                if not self._discard.startswith(got):
                    raise PeerError(f"malformed chunk footer: {got!r} (expected {self._discard!r})")
                pos += len(got)
                self._discard = self._discard[len(got) :]
                if self._discard:
                    return pos, False
            if self._left == 0:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return pos, False
                match = _CHUNK_HEADER.fullmatch(buf, pos, line_end + 2)
                if match is None:
                    raise PeerError(f"illegal chunk header: {buf[pos : line_end + 2]!r}")
                pos = line_end + 2
                self._left = int(match[1], 16)
                if self._left >= CHUNK_SIZE_LIMIT:
                    raise PeerError("chunk size too large")
                if self._left == 0:
                    self._trailer = True
                    continue
            if pos == size:
                return pos, False
            take = min(self._left, size - pos)
            count(take)
            parts.append(buf[pos : pos + take])
            pos += take
            self._left -= take
            if self._left == 0:
                self._discard = b"\r\n"


def _trailer_end(buf: bytes, pos: int) -> int:
    """Index past the trailer section starting at ``pos`` (h11's ``maybe_extract_lines``)."""
    if buf.startswith(b"\n", pos):
        return pos + 1
    if buf.startswith(b"\r\n", pos):
        return pos + 2
    match = _BLANK_LINE.search(buf, pos)
    if match is None:
        return -1
    _check_trailers(_LINE_END.split(buf[pos : match.start() + 1])[:-1])
    return match.end()


def _check_trailers(lines: list[bytes]) -> None:
    """Validate trailer lines with h11's field grammar, obsolete folding and framing rules."""
    unfolded: list[bytes] = []
    for line in lines:
        fold = _FOLD.match(line)
        if fold is None:
            unfolded.append(line)
        elif not unfolded:
            raise PeerError("continuation line at start of headers")
        else:
            unfolded[-1] = unfolded[-1] + b" " + line[fold.end() :]
    seen_length: bytes | None = None
    seen_encoding = False
    for line in unfolded:
        match = _FIELD_LINE.fullmatch(line)
        if match is None or _FIELD_VALUE.fullmatch(match[2]) is None:
            raise PeerError(f"illegal header line: {line!r}")
        name = match[1].lower()
        value = match[2]
        if name == b"content-length":
            lengths = {length.strip() for length in value.split(b",")}
            length = lengths.pop() if len(lengths) == 1 else b""
            if not _is_length(length):
                raise PeerError("bad Content-Length")
            if seen_length is not None and seen_length != length:
                raise PeerError("conflicting Content-Length headers")
            seen_length = length
        elif name == b"transfer-encoding":
            if seen_encoding or value.lower() != b"chunked":
                # A trailer cannot change the framing it ends (RFC 9110 §6.5.1).
                raise PeerError("bad Transfer-Encoding in trailers")
            seen_encoding = True


def _is_length(value: bytes) -> bool:
    return value.isdigit() and value.isascii() and len(value) <= _CONTENT_LENGTH_MAX_DIGITS


class ResponseFields:
    """Response fields validated and serialised like h11's ``normalize_and_validate``.

    ``lines[0]`` is left for the status line. Framing fields are remembered by
    position so the handler can drop or replace them, as h11's
    ``set_comma_header`` does, without searching the list again.
    """

    __slots__ = ("chunked", "connection", "content_length", "length_digits", "lines", "positions")

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        lines = [b""]
        self.lines = lines
        self.positions: list[tuple[bytes, int]] = []
        self.content_length: int | None = None
        self.length_digits: bytes | None = None
        self.chunked = False
        self.connection: list[bytes] = []
        cache = _LINE_CACHE
        for field in headers:
            cacheable = type(field) is tuple
            try:
                line = cache.get(field) if cacheable else None
            except (TypeError, ValueError):  # unhashable: a bytearray, a writable memoryview
                cacheable = False
                line = None
            if line is not None:
                lines.append(line)
                continue
            raw_name, raw_value = field
            if (
                raw_name == b"content-length"
                and self.length_digits is None
                and type(raw_value) is bytes
                and _is_length(raw_value)
            ):
                # The one framing field nearly every response has, with a fresh value each time.
                self.length_digits = raw_value
                self.content_length = int(raw_value)
                self.positions.append((raw_name, len(lines)))
                lines.append(b"content-length: %s\r\n" % raw_value)
                continue
            name = _bytesify(raw_name)
            value = _bytesify(raw_value)
            if _TOKEN.fullmatch(name) is None:
                raise LocalProtocolError(f"Illegal header name {name!r}")
            if _FIELD_VALUE.fullmatch(value) is None:
                raise LocalProtocolError(f"Illegal header value {value!r}")
            lower = name.lower()
            if lower in _FRAMING_FIELDS:
                self._framing(lower, name, value)
                continue
            line = b"%s: %s\r\n" % (name, value)
            if cacheable and name is raw_name and value is raw_value:
                if len(cache) >= _LINE_CACHE_SIZE:
                    cache.clear()
                cache[field] = line
            lines.append(line)

    def _framing(self, lower: bytes, name: bytes, value: bytes) -> None:
        if lower == b"content-length":
            lengths = {length.strip() for length in value.split(b",")}
            if len(lengths) != 1:
                raise LocalProtocolError("conflicting Content-Length headers")
            value = lengths.pop()
            if not _is_length(value):
                raise LocalProtocolError("bad Content-Length")
            if self.length_digits is not None:
                # h11 compares the digits, so "5" and "05" conflict; a repeat is dropped.
                if value != self.length_digits:
                    raise LocalProtocolError("conflicting Content-Length headers")
                return
            self.length_digits = value
            self.content_length = int(value)
        elif lower == b"transfer-encoding":
            if self.chunked:
                raise LocalProtocolError("multiple Transfer-Encoding headers")
            value = value.lower()
            if value != b"chunked":
                raise LocalProtocolError("Only Transfer-Encoding: chunked is supported")
            self.chunked = True
        else:
            self.connection.extend(comma_tokens(value))
        self.positions.append((lower, len(self.lines)))
        self.lines.append(b"%s: %s\r\n" % (name, value))

    def response_head(
        self, status: int, method: bytes | None, version: str | None, keep_alive: bool
    ) -> tuple[bytes, int, int, bool]:
        """The response head, the body framing, its length and whether to keep the connection.

        h11's ``_clean_up_response_headers_for_sending`` (a HEAD response gets the
        framing headers a GET would have), then its ``_body_framing`` for the bytes
        that follow, with the real method. ``version`` is the request's, or None.
        """
        lines = self.lines
        no_body = status in (204, 304)
        need_close = False
        if not no_body and (self.chunked or self.content_length is None):
            self.drop(b"content-length")
            self.drop(b"transfer-encoding")
            self.content_length = None
            if version is None or version < "1.1":
                # An HTTP/1.0 client cannot read chunked: the end of the body is the close.
                self.chunked = False
                need_close = method != b"HEAD"
            else:
                self.chunked = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
        if not keep_alive or need_close:
            tokens = set(self.connection)
            tokens.discard(b"keep-alive")
            tokens.add(b"close")
            self.drop(b"connection")
            lines.extend(b"Connection: %s\r\n" % token for token in sorted(tokens))
            keep_alive = False
        elif b"close" in self.connection:
            keep_alive = False
        lines[0] = status_line(status)
        lines.append(b"\r\n")
        head = b"".join(lines)
        if no_body or method == b"HEAD":
            return head, LENGTH, 0, keep_alive
        if self.chunked:
            return head, CHUNKED, 0, keep_alive
        if self.content_length is not None:
            return head, LENGTH, self.content_length, keep_alive
        return head, UNTIL_CLOSE, 0, keep_alive

    def drop(self, lower: bytes) -> None:
        """Blank out every line of the framing field ``lower``."""
        for name, index in self.positions:
            if name == lower:
                self.lines[index] = b""


def render_response_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    method: bytes | None,
    version: str | None,
    keep_alive: bool,
) -> tuple[bytes, int, int, bool]:
    """:meth:`ResponseFields.response_head` for ``headers``, from :data:`_SECTIONS` when
    they were rendered before.

    The result depends on the fields' values alone, and only a section that passed
    every check is remembered, so a remembered one is exactly what rendering again
    would give. Fields that cannot be a key (a list, a bytearray, a writable
    memoryview) are rendered.
    """
    key = tuple(headers)
    try:
        known = _SECTIONS.get(key)
    except (TypeError, ValueError):  # unhashable, or a writable memoryview
        return ResponseFields(key).response_head(status, method, version, keep_alive)
    if known is None:
        fields = ResponseFields(key)
        section = b"".join(fields.lines)
        if (
            fields.content_length is not None
            and len(section) <= _SECTION_MAX_BYTES
            and len(fields.positions) == 1
            and not fields.chunked
            and not fields.connection
        ):
            if len(_SECTIONS) >= _SECTIONS_SIZE:
                _SECTIONS.clear()
            _SECTIONS[key] = (section, fields.content_length)
        return fields.response_head(status, method, version, keep_alive)
    section, length = known
    if keep_alive:
        head = status_line(status) + section + b"\r\n"
    else:
        head = status_line(status) + section + _CLOSE_LINE + b"\r\n"
    if method == b"HEAD" or status in (204, 304):
        return head, LENGTH, 0, keep_alive
    return head, LENGTH, length, keep_alive


def informational_head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """An interim response head, checked as h11's ``InformationalResponse`` is."""
    if status == 101:
        raise LocalProtocolError("101 Switching Protocols is sent by upgrade()")
    if not isinstance(status, int) or not 100 <= status < 200:
        raise LocalProtocolError(
            f"InformationalResponse status_code should be in range [100, 200), not {status}"
        )
    lines = ResponseFields(headers).lines
    lines[0] = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
    lines.append(b"\r\n")
    return b"".join(lines)


def trailer_section(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The last chunk and the trailer section (h11's ``ChunkedWriter.send_eom``)."""
    lines = [b"0\r\n"]
    for raw_name, raw_value in headers:
        name = _bytesify(raw_name)
        value = _bytesify(raw_value)
        if _TOKEN.fullmatch(name) is None:
            raise LocalProtocolError(f"Illegal header name {name!r}")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise LocalProtocolError(f"Illegal header value {value!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def _bytesify(value: object) -> bytes:
    """h11's ``bytesify``: ASCII text and bytes-like objects become bytes, ints are refused."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("ascii")
    if isinstance(value, int):
        raise TypeError("expected bytes-like object, not int")
    return bytes(value)  # type: ignore[call-overload]
