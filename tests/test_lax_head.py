"""``lax_head_error``: the request-smuggling checks the h11 handler runs on every head.

The function takes a shortcut for ordinary heads (one ``translate`` pass instead
of a count per line ending and a regular expression for control characters);
these tests hold it to the plain statement of the rules, byte for byte and
message for message.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palfrey.protocols.h1_wire import lax_head_error

_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FRAMING_LINE = re.compile(rb"\n(content-length|transfer-encoding)[ \t]*:([^\r\n]*)", re.IGNORECASE)


def reference(head: bytes) -> str | None:
    """The rules as written in RFC 9112 order, one check after another."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        return "bare LF or CR in request head"
    if b"\n " in head or b"\n\t" in head:
        return "obsolete line folding in request head"
    if _CONTROL.search(head) is not None:
        return "control character in request head"
    lengths = 0
    for name, value in _FRAMING_LINE.findall(head):
        if name[0] in b"cC":
            lengths += 1
            if lengths > 1 or b"," in value:
                return "repeated Content-Length"
        elif b"\t" in value:
            return "tab in Transfer-Encoding"
    return None


def message(head: bytes) -> str | None:
    error = lax_head_error(head)
    return None if error is None else str(error)


GOOD = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nUser-Agent: caf\xc3\xa9\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (GOOD, None),
        (GOOD.replace(b"\r\nAccept", b"\nAccept"), "bare LF or CR in request head"),
        (GOOD.replace(b"Host: a", b"Host: a\rb"), "bare LF or CR in request head"),
        # A CR and an LF that are not neighbours: as many of each as CRLF pairs would be.
        (b"GET / HTTP/1.1\r\nHost: a\rb\nc\r\n\r\n", "bare LF or CR in request head"),
        (GOOD.replace(b"\r\nAccept", b"\r\n Accept"), "obsolete line folding in request head"),
        (GOOD.replace(b"*/*", b"*/\x01*"), "control character in request head"),
        (GOOD.replace(b"*/*", b"*/\x7f*"), "control character in request head"),
        (GOOD.replace(b"*/*", b"*/*\t"), None),
        # Folding is reported before a control character, as the rules are ordered.
        (
            GOOD.replace(b"*/*", b"\x00").replace(b"\r\nUser", b"\r\n\tUser"),
            "obsolete line folding in request head",
        ),
        (GOOD.replace(b"Host: a", b"Host: a\r\nContent-Length: 1, 1"), "repeated Content-Length"),
        (
            GOOD.replace(b"Host: a", b"Host: a\r\nTransfer-Encoding: \tchunked"),
            "tab in Transfer-Encoding",
        ),
    ],
)
def test_each_rule(head: bytes, expected: str | None) -> None:
    assert message(head) == expected == reference(head)


_PIECES = st.sampled_from(
    [
        b"\r\n",
        b"\r",
        b"\n",
        b" ",
        b"\t",
        b"\x00",
        b"\x1f",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"a",
        b":",
        b",",
        b"Content-Length: 1",
        b"transfer-encoding:",
        b"GET / HTTP/1.1",
    ]
)


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_same_answer_as_the_rules(head: bytes) -> None:
    assert message(head) == reference(head)
    assert message(bytearray(head)) == reference(head)
