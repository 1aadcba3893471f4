"""The bridge refuses exactly the response header values the wire would refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palfrey.asgi.headers import validate_headers
from palfrey.protocols.h1_wire import _FIELD_VALUE

# Bytes that matter to the grammar, plus ordinary ones, so short values hit every case.
_INTERESTING = st.sampled_from(b"a~ \t\x00\n\r\x0b\x0c\x01\x7f\x80\xff")


def bridge_accepts(value: bytes) -> bool:
    try:
        validate_headers([(b"x-test", value)])
    except ValueError:
        return False
    return True


@given(st.lists(_INTERESTING, max_size=8).map(bytes))
def test_bridge_and_wire_agree_on_values(value: bytes) -> None:
    assert bridge_accepts(value) == (_FIELD_VALUE.fullmatch(value) is not None)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (b"", True),
        (b"text/plain; charset=utf-8", True),
        (b"a \t b", True),
        (b" leading", False),
        (b"trailing\t", False),
        (b"split\r\nx-injected: 1", False),
        (b"nul\x00", False),
    ],
)
def test_examples(value: bytes, accepted: bool) -> None:
    assert bridge_accepts(value) is accepted


def test_a_pair_checked_before_is_answered_alike_and_bad_pairs_still_fail() -> None:
    """Pairs already checked are remembered; remembering must not let a bad one through."""
    first = validate_headers([(b"X-Cached", b"v"), [b"x-list", b"w"]])
    assert validate_headers([(b"X-Cached", b"v"), [b"x-list", b"w"]]) == first
    assert first == [(b"x-cached", b"v"), (b"x-list", b"w")]
    for bad in ((b"x-cached", b"v\r\nx: y"), (b"x cached", b"v"), (b"x-cached", ["v"])):
        with pytest.raises((TypeError, ValueError)):
            validate_headers([bad])
        with pytest.raises((TypeError, ValueError)):
            validate_headers([bad])
