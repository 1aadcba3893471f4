"""``--proxy-headers``: the client, scheme and host as a trusted proxy saw them.

Only a peer listed in ``--forwarded-allow-ips`` is believed, and only as far
back as the chain of proxies stays trusted. Each proxy appends one entry (one
``Forwarded`` element, one ``X-Forwarded-For`` address) describing the hop it
received the request on, so the list is read right to left: the rightmost
entry was added by the direct peer; while the address in an entry is itself a
trusted proxy, that proxy added the entry before it, and so on. The first
address that is not a trusted proxy is the client, and the entry holding it,
added by the outermost trusted proxy, also gives the scheme and host the client
used. Entries further left were written by someone untrusted (possibly the
client itself) and are never read, so a client cannot forge its address, scheme
or host by sending these headers.

One family is read per request, never a mix (that would pair values from
different hops). ``X-Forwarded-For`` wins when a trusted peer sends it: the
proxies in front of most deployments (nginx, cloud load balancers, ingress
controllers) maintain the ``X-Forwarded-*`` headers and pass a client's own
``Forwarded`` through untouched, so preferring ``Forwarded`` would let any
client choose its address behind them, where Uvicorn, which reads only
``X-Forwarded-*``, was safe. Without ``X-Forwarded-For``, RFC 7239
``Forwarded`` is read. A ``Forwarded`` header that does not follow RFC 7239
then changes nothing at all: falling back to ``X-Forwarded-Proto`` or
``-Host`` would let a client break a proxy-appended ``Forwarded`` on purpose
and reach headers the proxy passes through untouched.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re

import attrs

from palfrey.asgi.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("palfrey.error")

#: Trust decisions remembered before the cache is emptied (bounds memory under many clients).
_DECISION_CACHE_SIZE = 1024
_KNOWN_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_SECURE_SCHEMES = frozenset({"https", "wss"})
_FORWARDED = b"forwarded"
_X_FOR = b"x-forwarded-for"
_X_PROTO = b"x-forwarded-proto"
_X_HOST = b"x-forwarded-host"
_X_PORT = b"x-forwarded-port"
#: Every header this middleware reads; one set lookup per request header keeps the scan cheap.
_PROXY_HEADERS = frozenset({_FORWARDED, _X_FOR, _X_PROTO, _X_HOST, _X_PORT})

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
#: One optional ``name=value`` pair with the optional whitespace around it (RFC 7239 §4,
#: RFC 9110 §5.6.2-4). It always matches, so the parser never backtracks over the header.
_QDTEXT = r"[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]"
_PAIR = re.compile(
    rf"[ \t]*(?:({_TCHAR}+)=(?:({_TCHAR}+)"
    # quoted-string, its loop unrolled: runs of qdtext between quoted-pairs.
    rf'|"({_QDTEXT}*(?:\\[\t \x21-\x7e\x80-\xff]{_QDTEXT}*)*)"))?[ \t]*'
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_OBFUSCATED = r"_[A-Za-z0-9._\-]+"
#: RFC 7239 §6 node: ``[IPv6]``, IPv4, ``unknown`` or ``_obfuscated``, then ``:port``.
_NODE = re.compile(
    rf"(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)|([Uu][Nn][Kk][Nn][Oo][Ww][Nn])|({_OBFUSCATED}))"
    rf"(?::([0-9]{{1,5}}|{_OBFUSCATED}))?"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
#: RFC 9110 §7.2 Host: ``uri-host [":" port]``, the IP-literal or a reg-name.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+;=]+)(?::([0-9]{1,5}))?")
_PORT = re.compile(r"[0-9]{1,5}")


class MalformedForwardedError(ValueError):
    """A ``Forwarded`` header that does not follow RFC 7239."""


@attrs.define(slots=True, frozen=True)
class Node:
    """A ``for``/``by`` value: ``host`` is an address or ``_obfuscated``; None is ``unknown``."""

    host: str | None
    port: int


@attrs.define(slots=True)
class ForwardedElement:
    """One proxy hop of a ``Forwarded`` header; a parameter it did not send is None."""

    for_: Node | None = None
    by: Node | None = None
    proto: str | None = None
    host: str | None = None


def parse_forwarded(value: str) -> list[ForwardedElement]:
    """The hops of a ``Forwarded`` header value (several header lines joined by ``,``).

    Parameter names are case-insensitive and may come in any order; extension
    parameters are skipped. Empty list elements (``a,,b``) are dropped, as RFC
    9110 §5.6.1 asks. Raises MalformedForwardedError for anything else out of
    the grammar: a repeated parameter, a bad quoted-string, or a ``for``, ``by``,
    ``proto`` or ``host`` value of the wrong form (an IPv6 ``for`` must be
    quoted and bracketed).
    """
    elements: list[ForwardedElement] = []
    pairs: dict[str, str] = {}
    position, end = 0, len(value)
    while True:
        match = _PAIR.match(value, position)
        assert match is not None  # every part of the pattern is optional
        position = match.end()
        name, token, quoted = match.groups()
        if name is not None:
            name = name.lower()
            if name in pairs:
                raise MalformedForwardedError(f"repeated parameter {name!r}")
            if quoted is not None and "\\" in quoted:
                quoted = _QUOTED_PAIR.sub(r"\1", quoted)
            pairs[name] = token if quoted is None else quoted
        separator = value[position] if position < end else ","
        if separator == ",":
            if pairs:
                elements.append(_element(pairs))
                pairs = {}
            if position >= end:
                return elements
        elif separator != ";":
            raise MalformedForwardedError(f"unexpected {separator!r} at {position}")
        position += 1


def _element(pairs: dict[str, str]) -> ForwardedElement:
    proto = pairs.get("proto")
    if proto is not None and not _SCHEME.fullmatch(proto):
        raise MalformedForwardedError(f"bad proto {proto!r}")
    host = pairs.get("host")
    if host is not None and not _HOST.fullmatch(host):
        raise MalformedForwardedError(f"bad host {host!r}")
    return ForwardedElement(
        for_=_node(pairs.get("for")),
        by=_node(pairs.get("by")),
        proto=None if proto is None else proto.lower(),
        host=host,
    )


def _node(text: str | None) -> Node | None:
    return None if text is None else _parse_node(text)


@functools.lru_cache(maxsize=_DECISION_CACHE_SIZE)
def _parse_node(text: str) -> Node:
    """Cached: checking an address costs microseconds, and the same clients and proxies recur."""
    match = _NODE.fullmatch(text)
    if match is None:
        raise MalformedForwardedError(f"bad node {text!r}")
    ipv6, ipv4, unknown, obfuscated, port_text = match.groups()
    if ipv6 is not None or ipv4 is not None:
        try:
            address = (
                ipaddress.IPv6Address(ipv6) if ipv6 is not None else ipaddress.IPv4Address(ipv4)
            )
        except ValueError:
            raise MalformedForwardedError(f"bad address {text!r}") from None
        host: str | None = str(address)
    else:
        host = None if unknown is not None else obfuscated
    # An obfuscated port says nothing usable; 0 is what X-Forwarded-For gives too.
    port = int(port_text) if port_text is not None and port_text[0] != "_" else 0
    if port > 65535:
        raise MalformedForwardedError(f"bad port {text!r}")
    return Node(host, port)


class TrustedHosts:
    """The parsed ``--forwarded-allow-ips``: addresses, networks, literals, ``unix`` or ``*``.

    ``unix`` trusts peers on a UNIX socket, which have no address to match.
    Entries that are not addresses are compared as plain strings, so an
    RFC 7239 obfuscated identifier such as ``_edge`` names a trusted proxy too.
    """

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.always = "*" in items
        self.unix = self.always or "unix" in items
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        # Parsing an address costs more than the rest of the middleware; clients repeat.
        self._decisions: dict[str, bool] = {}
        for item in items:
            if item == "unix":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)

    def __contains__(self, host: object) -> bool:
        if self.always:
            return True
        if not isinstance(host, str):
            return False
        trusted = self._decisions.get(host)
        if trusted is None:
            trusted = self._decide(host)
            if len(self._decisions) >= _DECISION_CACHE_SIZE:
                self._decisions.clear()
            self._decisions[host] = trusted
        return trusted

    def peer_trusted(self, client: tuple[str, int] | None) -> bool:
        """Whether the socket peer is a trusted proxy; None is a UNIX socket peer."""
        return self.unix if client is None else client[0] in self

    def _decide(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return any(address in network for network in self.networks)


#: ``scope["client"]`` is left as it is.
_KEEP_CLIENT = object()


@attrs.define(slots=True)
class _Hop:
    """What the outermost trusted proxy reported about the request it received."""

    client: object = _KEEP_CLIENT
    proto: str | None = None
    host: str | None = None
    port: str | None = None


class ProxyHeadersMiddleware:
    """Rewrites ``client``, ``scheme``, ``server`` and the ``host`` header from proxy headers.

    Runs on every request, so the common cases stay cheap: an untrusted peer
    costs one cached lookup, and a trusted one a single pass over the headers
    that stops there when none of them is a proxy header.
    """

    __slots__ = ("app", "trusted")

    def __init__(self, app: ASGIApp, trusted_hosts: str) -> None:
        self.app = app
        self.trusted = TrustedHosts(trusted_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted.peer_trusted(
            scope.get("client")
        ):
            self.rewrite(scope)
        await self.app(scope, receive, send)

    def rewrite(self, scope: Scope) -> None:
        """Apply the proxy headers of a request whose peer is already known to be trusted.

        The server calls this directly for HTTP requests, having decided once
        per connection whether its peer is trusted, instead of running the
        middleware around the app for every request.
        """
        found: dict[bytes, bytes] | None = None
        for name, value in scope["headers"]:
            if name in _PROXY_HEADERS:
                if found is None:
                    found = {}
                # Repeated header lines are one comma-separated list (RFC 9110 §5.3).
                previous = found.get(name)
                found[name] = value if previous is None else previous + b"," + value
        if found is not None:
            hop = self._hop(found)
            if hop is not None:
                _apply(scope, hop)

    def _hop(self, found: dict[bytes, bytes]) -> _Hop | None:
        forwarded = found.get(_FORWARDED)
        if forwarded is not None and _X_FOR not in found:
            return self._forwarded_hop(forwarded.decode("latin-1"))
        return self._x_forwarded_hop(found)

    def _forwarded_hop(self, value: str) -> _Hop | None:
        """The element added by the outermost trusted proxy; None if the header is malformed.

        An element without ``for`` ends the walk (the hop before it is not
        known), and the client then stays the socket peer; ``for=unknown``
        ends it too and makes the client None, as the proxy did not know it.
        """
        try:
            elements = parse_forwarded(value)
        except MalformedForwardedError as error:
            logger.debug("Ignoring the proxy headers of a malformed Forwarded header: %s", error)
            return None
        if not elements:
            return None
        for element in reversed(elements):
            node = element.for_
            if node is None or node.host is None or node.host not in self.trusted:
                break
        hop = _Hop(proto=element.proto, host=element.host)
        if node is not None:
            hop.client = None if node.host is None else (node.host, node.port)
        return hop

    def _x_forwarded_hop(self, found: dict[bytes, bytes]) -> _Hop:
        """The ``X-Forwarded-*`` values of the outermost trusted proxy.

        Counting works as in Werkzeug's ProxyFix: if the client was found ``n``
        addresses from the right of ``X-Forwarded-For`` (1 without that
        header), the proto, host and port are the ``n``-th values from the
        right of their headers. A header with fewer values was not appended to
        by every trusted proxy, so which value is trustworthy is unknown and it
        is ignored.
        """
        hop = _Hop()
        hops = 1
        forwarded_for = found.get(_X_FOR)
        if forwarded_for is not None:
            hosts = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
            hosts = [host for host in hosts if host]
            if hosts:
                index = len(hosts) - 1
                while index > 0 and hosts[index] in self.trusted:
                    index -= 1
                hop.client = (hosts[index], 0)
                hops = len(hosts) - index
        hop.proto = _nth_from_right(found.get(_X_PROTO), hops)
        if hop.proto is not None:
            hop.proto = hop.proto.lower()
        host = _nth_from_right(found.get(_X_HOST), hops)
        hop.host = host if host is not None and _HOST.fullmatch(host) else None
        port = _nth_from_right(found.get(_X_PORT), hops)
        hop.port = port if port is not None and _PORT.fullmatch(port) else None
        return hop


def _nth_from_right(value: bytes | None, n: int) -> str | None:
    if value is None:
        return None
    values = value.decode("latin-1").split(",")
    if len(values) < n:
        return None
    return values[-n].strip() or None


def _apply(scope: Scope, hop: _Hop) -> None:
    if hop.client is not _KEEP_CLIENT:
        scope["client"] = hop.client
    if hop.proto in _KNOWN_SCHEMES:
        secure = hop.proto in _SECURE_SCHEMES
        if scope["type"] == "websocket":
            scope["scheme"] = "wss" if secure else "ws"
        else:
            scope["scheme"] = "https" if secure else "http"
    if hop.host is None and hop.port is None:
        return
    if hop.host is not None:
        host_value = hop.host
    else:
        host_value = _host_header(scope)
        if host_value is None:
            return
    match = _HOST.fullmatch(host_value)
    if match is None:  # only a client's own Host header can be this broken
        return
    name, port_text = match.groups()
    default_port = 443 if scope["scheme"] in _SECURE_SCHEMES else 80
    if hop.port is not None:
        port = int(hop.port)
        host_value = name if port == default_port else f"{name}:{port}"
    else:
        port = int(port_text) if port_text is not None else default_port
    if port > 65535:
        return
    scope["server"] = (name.strip("[]"), port)
    scope["headers"] = _with_host(scope["headers"], host_value.encode("latin-1"))


def _host_header(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"host":
            return value.decode("latin-1")
    return None


def _with_host(headers: list[tuple[bytes, bytes]], host: bytes) -> list[tuple[bytes, bytes]]:
    """A copy with one ``host`` header, where the first one was (first if there was none)."""
    result: list[tuple[bytes, bytes]] = []
    replaced = False
    for key, value in headers:
        if key != b"host":
            result.append((key, value))
        elif not replaced:
            result.append((b"host", host))
            replaced = True
    if not replaced:
        result.insert(0, (b"host", host))
    return result
