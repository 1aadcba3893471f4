"""Reason phrases and the fixed-form responses the server writes on its own.

Some load tools count ``HTTP/1.1 200 `` (empty reason) as a failure, so every
status line carries the standard phrase (RFC 9110 §15).
"""

from __future__ import annotations

from http import HTTPStatus

REASON_PHRASES: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in REASON_PHRASES.items()
}


#: Phrases for codes RFC 9110 does not name, by class (§15: the first digit).
_CLASS_PHRASES = {
    1: b"Informational",
    2: b"Success",
    3: b"Redirection",
    4: b"Client Error",
    5: b"Server Error",
}


def reason_phrase(status: int) -> bytes:
    """The standard phrase, or a phrase naming the status class for unregistered codes."""
    phrase = REASON_PHRASES.get(status)
    if phrase is None:
        phrase = _CLASS_PHRASES.get(status // 100, b"Unknown")
    return phrase


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
    return line


def render_simple_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> bytes:
    """A complete HTTP/1.1 text response after which the server closes the connection.

    For the errors the server answers itself, before or instead of the app.
    """
    parts = [status_line(status)]
    parts.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    parts.append(b"content-type: text/plain; charset=utf-8\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    parts.append(b"connection: close\r\n\r\n")
    parts.append(body)
    return b"".join(parts)
