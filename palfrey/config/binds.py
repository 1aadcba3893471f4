"""The addresses ``--bind`` accepts: ``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH`` and ``fd://N``.

Parsed here, beside the schema, so a mistake is a configuration error that
names the value before anything is bound.
"""

from __future__ import annotations

import attrs

from palfrey.protocols.fields import split_host_port


@attrs.frozen(slots=True)
class TCPAddress:
    host: str
    port: int


@attrs.frozen(slots=True)
class UnixAddress:
    path: str


@attrs.frozen(slots=True)
class InheritedSocket:
    fd: int


BindAddress = TCPAddress | UnixAddress | InheritedSocket


def parse_bind(text: str) -> BindAddress:
    """One ``--bind`` value as an address; raises ``ValueError`` saying what was expected."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError("expected a path after 'unix:'")
        return UnixAddress(path)
    if text.startswith("fd://"):
        number = text[len("fd://") :]
        if not number.isdigit():
            raise ValueError("expected a file descriptor number after 'fd://'")
        return InheritedSocket(int(number))
    try:
        host, port = split_host_port(text)
    except ValueError:
        raise ValueError("expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N") from None
    return TCPAddress(host, port)
