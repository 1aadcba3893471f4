"""``--access-log-format``: gunicorn/Hypercorn atoms such as ``%(h)s "%(r)s" %(s)s``.

The configuration imports this module to reject a bad format before anything
starts, so it loads nothing but the standard library and attrs. A format is
compiled once: each atom it names is looked up to its getter, and a line is
rendered with ``format % atoms`` where ``atoms`` computes a value only when
the ``%`` operator asks for it. A format that never says ``%(t)s`` never
formats a date.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

#: Method shown for a WebSocket handshake, as in Palfrey's default line.
WEBSOCKET_METHOD = "WebSocket"


@attrs.define
class AccessEntry:
    """What one access line is made of: the request's scope and how it was answered.

    ``response_headers`` is None for a WebSocket handshake, whose answer the
    line doesn't record.
    """

    scope: dict[str, Any]
    status: int
    size: int
    duration: float
    response_headers: list[tuple[bytes, bytes]] | None = None


Getter = Callable[[AccessEntry], object]


def protocol(scope: dict[str, Any]) -> str:
    """``HTTP/1.1``, ``HTTP/2`` or ``HTTP/3`` from the scope's ``http_version``."""
    return "HTTP/" + scope.get("http_version", "1.1")


def method(scope: dict[str, Any]) -> str:
    return WEBSOCKET_METHOD if scope["type"] == "websocket" else scope["method"]


def client(scope: dict[str, Any]) -> str | None:
    """``host:port`` of the peer, or None (UNIX sockets)."""
    peer = scope.get("client")
    return f"{peer[0]}:{peer[1]}" if peer else None


def target(scope: dict[str, Any]) -> str:
    """The raw path and query string, as the client sent them."""
    path = scope["raw_path"].decode("latin-1")
    query = scope["query_string"]
    return path + "?" + query.decode("latin-1") if query else path


def header(headers: list[tuple[bytes, bytes]] | None, name: bytes) -> str | None:
    """The values of the header ``name`` (lower case) joined by ``, ``, or None."""
    if not headers:
        return None
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ", ".join(values) if values else None


def _request_header(name: bytes) -> Getter:
    return lambda entry: header(entry.scope.get("headers"), name) or "-"


def _response_header(name: bytes) -> Getter:
    return lambda entry: header(entry.response_headers, name) or "-"


def _environment(name: str) -> Getter:
    return lambda _entry: os.environ.get(name, "-")


ATOMS: dict[str, Getter] = {
    "h": lambda entry: client(entry.scope) or "-",
    "l": lambda _entry: "-",
    "u": lambda _entry: "-",
    "t": lambda _entry: time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
    "r": lambda entry: f"{method(entry.scope)} {target(entry.scope)} {protocol(entry.scope)}",
    "m": lambda entry: method(entry.scope),
    "U": lambda entry: entry.scope["path"],
    "q": lambda entry: entry.scope["query_string"].decode("latin-1"),
    "H": lambda entry: protocol(entry.scope),
    "s": lambda entry: entry.status,
    "b": lambda entry: entry.size or "-",
    "B": lambda entry: entry.size,
    "D": lambda entry: int(entry.duration * 1_000_000),
    "M": lambda entry: int(entry.duration * 1_000),
    "L": lambda entry: f"{entry.duration:.6f}",
    "T": lambda entry: int(entry.duration),
    "p": lambda _entry: f"<{os.getpid()}>",
    "a": lambda entry: header(entry.scope.get("headers"), b"user-agent") or "-",
    "f": lambda entry: header(entry.scope.get("headers"), b"referer") or "-",
}

_NAMED = {"i": _request_header, "o": _response_header}
# One ``%`` directive: ``%%``, or ``%(key)`` and its conversion, or a bare ``%``.
_DIRECTIVE = re.compile(r"%(?:%|\((?P<key>[^)]*)\)[#0 +\-]*\d*(?:\.\d+)?\w?|)")


def _getter(key: str) -> Getter | None:
    getter = ATOMS.get(key)
    if getter is not None:
        return getter
    if len(key) > 3 and key[0] == "{" and key[-2] == "}":
        name, kind = key[1:-2], key[-1]
        if kind == "e":
            return _environment(name)
        if kind in _NAMED:
            return _NAMED[kind](name.lower().encode("latin-1", "replace"))
    return None


@attrs.define
class AccessFormat:
    """A compiled ``--access-log-format``: the text and a getter for each atom it names."""

    text: str
    getters: dict[str, Getter]

    def atoms(self, entry: AccessEntry) -> Atoms:
        """The ``%`` operand for ``text``: computes only the atoms ``text`` names."""
        return Atoms(self.getters, entry)

    def render(self, entry: AccessEntry) -> str:
        return self.text % self.atoms(entry)


@attrs.define
class Atoms(Mapping[str, object]):
    """The values of one line's atoms, each computed when asked for.

    A :class:`~collections.abc.Mapping` so that ``logger.info(text, atoms)``
    keeps it as the record's ``args`` and the line is rendered only when a
    handler formats the record.
    """

    getters: dict[str, Getter]
    entry: AccessEntry

    def __getitem__(self, key: str) -> object:
        return self.getters[key](self.entry)

    def __iter__(self) -> Iterator[str]:
        return iter(self.getters)

    def __len__(self) -> int:
        return len(self.getters)

    def __bool__(self) -> bool:
        # ``logging`` keeps a lone mapping argument only when it is true; a
        # format with no atom must still be rendered through ``%`` (for ``%%``).
        return True


def compile_format(text: str) -> AccessFormat:
    """Check ``text`` and look up its atoms once.

    Raises ValueError naming the first unknown atom, or saying what else is
    wrong with the ``%`` directives (a bare ``%s`` would print the whole
    mapping, as gunicorn does, so it is refused).
    """
    getters: dict[str, Getter] = {}
    for match in _DIRECTIVE.finditer(text):
        key = match["key"]
        if match[0] == "%%":
            continue
        if key is None:
            raise ValueError(
                f"access log format {text!r} has a '%' that names no atom (write '%%' for '%')"
            )
        getter = _getter(key)
        if getter is None:
            raise ValueError(f"unknown access log atom {match[0]!r}")
        getters[key] = getter
    try:
        text % dict.fromkeys(getters, 0)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad access log format {text!r}: {exc}") from None
    return AccessFormat(text, getters)
