"""Response header validation and the headers the server adds itself."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import attrs

from palfrey.protocols.fields import TOKEN, is_field_value, is_token

__all__ = [
    "TOKEN",
    "CheckedHeaders",
    "DefaultHeaders",
    "check_response_headers",
    "validate_headers",
    "validate_trailers",
]

#: Header names already checked; applications send the same few names over and over.
_VALID_NAMES: set[bytes] = set()
_VALID_NAMES_LIMIT = 512
#: Whole ``(name, value)`` pairs already checked, mapped to their lower-cased form:
#: most responses repeat the same few fields (``content-type``, a fixed length).
_VALID_FIELDS: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
_VALID_FIELDS_LIMIT = 1024


def validate_headers(raw: Any) -> list[tuple[bytes, bytes]]:
    """Check application-supplied headers; return them as lower-cased byte pairs.

    Raises ``TypeError`` for non-bytes names or values and ``ValueError`` for
    names that are not tokens or values that could split a header. Checked here,
    before anything reaches the wire, so a bad header raises out of ``send()``
    and the client still gets a 500.
    """
    headers = []
    known_fields = _VALID_FIELDS
    for item in raw:
        if type(item) is tuple:
            try:
                known = known_fields.get(item)
            except (TypeError, ValueError):  # unhashable (a writable memoryview): refused below
                known = None
            if known is not None:
                headers.append(known)
                continue
        try:
            name, value = item
        except (TypeError, ValueError):
            raise TypeError(f"each header must be a (name, value) pair, got {item!r}") from None
        if type(name) is not bytes or type(value) is not bytes:
            raise TypeError(f"header names and values must be bytes, got {item!r}")
        if name not in _VALID_NAMES:
            if not is_token(name):
                raise ValueError(f"invalid header name {name!r}")
            if len(_VALID_NAMES) < _VALID_NAMES_LIMIT:
                _VALID_NAMES.add(name)
        if not is_field_value(value):
            raise ValueError(
                f"invalid header value for {name!r}: CR, LF, NUL and surrounding"
                " whitespace are not allowed"
            )
        field = (name.lower(), value)
        if type(item) is tuple:
            if len(known_fields) >= _VALID_FIELDS_LIMIT:
                known_fields.clear()
            known_fields[item] = field
        headers.append(field)
    return headers


@attrs.frozen(slots=True)
class CheckedHeaders:
    """An ``http.response.start`` message's headers, checked once for every use."""

    #: :func:`validate_headers`' result; shared, so never to be mutated.
    fields: list[tuple[bytes, bytes]]
    names: frozenset[bytes]
    #: The body length ``content-length`` declares; one value, however often repeated
    #: (RFC 9110 §8.6).
    declared_length: int | None


#: Header lists already checked, keyed by their fields: an endpoint sends the same
#: list response after response. Only short lists are kept, and only a bounded number.
_CHECKED: dict[tuple[Any, ...], CheckedHeaders] = {}
_CHECKED_LIMIT = 256
_CHECKED_MAX_BYTES = 2048


def check_response_headers(raw: Any) -> CheckedHeaders:
    """:func:`validate_headers` and the declared body length, in one pass.

    Raises as :func:`validate_headers` does, and ``ValueError`` for a
    ``content-length`` that is not digits or that two fields disagree on, so that
    the error comes out of ``send()`` before anything is framed.
    """
    try:
        key = tuple(raw)
        checked = _CHECKED.get(key)
    except (TypeError, ValueError):  # not iterable, or a field that cannot be hashed
        return _check(validate_headers(raw))
    if checked is None:
        checked = _check(validate_headers(key))
        if sum(len(name) + len(value) for name, value in checked.fields) <= _CHECKED_MAX_BYTES:
            if len(_CHECKED) >= _CHECKED_LIMIT:
                _CHECKED.clear()
            _CHECKED[key] = checked
    return checked


def _check(fields: list[tuple[bytes, bytes]]) -> CheckedHeaders:
    declared: int | None = None
    for name, value in fields:
        if name == b"content-length":
            if not value.isdigit() or (declared is not None and int(value) != declared):
                raise ValueError(f"invalid content-length {value!r}")
            declared = int(value)
    return CheckedHeaders(fields, frozenset(name for name, _ in fields), declared)


#: Fields a trailer section may not carry: they frame the message or belong to the
#: connection (RFC 9110 §6.5.1, RFC 9113 §8.2.2), so no HTTP version can honour them
#: after the content.
_NOT_IN_TRAILERS = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"upgrade",
        b"te",
        b"trailer",
        b"host",
    )
)


def validate_trailers(raw: Any) -> list[tuple[bytes, bytes]]:
    """:func:`validate_headers` for an ``http.response.trailers`` message.

    Also raises ``ValueError`` for the framing and connection fields no trailer
    section may hold.
    """
    trailers = validate_headers(raw)
    for name, _ in trailers:
        if name in _NOT_IN_TRAILERS:
            raise ValueError(f"{name!r} is not allowed in trailers")
    return trailers


@attrs.define(slots=True)
class DefaultHeaders:
    """``server``, ``date`` and ``--header`` values, rebuilt at most once a second."""

    server_header: bool = True
    date_header: bool = True
    extra: list[tuple[bytes, bytes]] = attrs.Factory(list)
    _second: int = -1
    _cached: list[tuple[bytes, bytes]] = attrs.Factory(list)
    _names: frozenset[bytes] = frozenset()

    def current(self) -> list[tuple[bytes, bytes]]:
        """The defaults for a response sent now; callers must not mutate the list."""
        now = int(time.time())
        if now != self._second:
            headers = []
            if self.server_header:
                headers.append((b"server", b"palfrey"))
            if self.date_header:
                headers.append((b"date", formatdate(now, usegmt=True).encode("ascii")))
            headers.extend(self.extra)
            self._cached = headers
            self._names = frozenset(name for name, _ in headers)
            self._second = now
        return self._cached

    def invalidate(self) -> None:
        """Rebuild on the next response (after :attr:`extra` changed)."""
        self._second = -1

    def merge(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Append each default the application did not set itself."""
        return self.merge_checked(headers, frozenset(name for name, _ in headers))

    def merge_checked(
        self, headers: list[tuple[bytes, bytes]], names: frozenset[bytes]
    ) -> list[tuple[bytes, bytes]]:
        """:meth:`merge` for ``headers`` whose names are known to be ``names``."""
        defaults = self.current()
        if names.isdisjoint(self._names):
            # The usual case: the application set none of them.
            return headers + defaults
        return headers + [pair for pair in defaults if pair[0] not in names]
