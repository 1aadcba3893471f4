"""The bridge refuses exactly the response header values the wire would refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palfrey.asgi import headers
from palfrey.asgi.headers import check_response_headers, validate_headers
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


_CHECK_CHOICES = [
    (b"content-length", b"2"),
    (b"content-length", b"02"),
    (b"content-length", b"x"),
    (b"Content-Type", b"text/plain"),
    (b"server", b"app"),
    (b"x-bad", b"v\r\nx: y"),
    (b"x big", b"v"),
    [b"x-list", b"w"],
]


def checked_or_error(raw: object) -> object:
    try:
        checked = check_response_headers(raw)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return checked.fields, checked.names, checked.declared_length


def fresh_check(raw: list) -> object:
    try:
        fields = validate_headers(raw)
        lengths = {int(value) for name, value in fields if name == b"content-length"}
        if any(name == b"content-length" and not value.isdigit() for name, value in fields):
            raise ValueError("invalid content-length")
    except (TypeError, ValueError) as exc:
        return type(exc)
    if len(lengths) > 1:
        return ValueError
    return fields, frozenset(name for name, _ in fields), lengths.pop() if lengths else None


@given(st.lists(st.sampled_from(_CHECK_CHOICES), max_size=4))
def test_checked_lists_are_answered_alike_when_remembered(raw: list) -> None:
    expected = fresh_check(raw)
    for _ in range(2):
        outcome = checked_or_error(raw)
        assert (outcome[0] if isinstance(expected, type) else outcome) == expected


def test_checking_takes_any_iterable_and_names_what_is_wrong() -> None:
    pairs = [(b"a", b"1"), (b"content-length", b"3")]
    assert check_response_headers(iter(pairs)).declared_length == 3
    assert check_response_headers(pairs).fields == pairs
    with pytest.raises(TypeError, match="must be bytes"):
        check_response_headers([(b"x", memoryview(bytearray(b"writable")))])
    with pytest.raises(TypeError, match="not iterable"):
        check_response_headers(None)
    with pytest.raises(ValueError, match="invalid content-length"):
        check_response_headers([(b"content-length", b"1"), (b"content-length", b"2")])


def test_remembered_lists_stay_bounded_and_short() -> None:
    for i in range(3 * headers._CHECKED_LIMIT):
        check_response_headers([(b"content-length", b"%d" % i)])
    assert len(headers._CHECKED) <= headers._CHECKED_LIMIT
    headers._CHECKED.clear()
    long = [(b"x-long", b"v" * (headers._CHECKED_MAX_BYTES + 1))]
    assert check_response_headers(long).fields == long
    assert not headers._CHECKED
