"""``--proxy-headers``: take the client address and scheme from a trusted proxy.

Only a peer listed in ``--forwarded-allow-ips`` is believed. ``X-Forwarded-For``
is read right to left and the first address that is not itself a trusted
proxy becomes the client, so a client cannot forge its address by sending the
header itself.
"""

from __future__ import annotations

import ipaddress

from palfrey.asgi.types import ASGIApp, Receive, Scope, Send

#: Trust decisions remembered before the cache is emptied (bounds memory under many clients).
_DECISION_CACHE_SIZE = 1024
_KNOWN_SCHEMES = frozenset({"http", "https", "ws", "wss"})


class TrustedHosts:
    """The parsed ``--forwarded-allow-ips`` value: addresses, networks, literals or ``*``."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.always = "*" in items
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        # Parsing an address costs more than the rest of the middleware; clients repeat.
        self._decisions: dict[str, bool] = {}
        for item in items:
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

    def _decide(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return any(address in network for network in self.networks)


class ProxyHeadersMiddleware:
    __slots__ = ("app", "trusted")

    def __init__(self, app: ASGIApp, trusted_hosts: str) -> None:
        self.app = app
        self.trusted = TrustedHosts(trusted_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            # A UNIX socket peer has no address: only '*' trusts it.
            trusted = self.trusted.always if client is None else client[0] in self.trusted
            if trusted:
                self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> None:
        forwarded_for = forwarded_proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for = value
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
        if forwarded_proto:
            proto = forwarded_proto.decode("latin-1").split(",")[0].strip().lower()
            if proto in _KNOWN_SCHEMES:
                secure = proto in ("https", "wss")
                if scope["type"] == "websocket":
                    scope["scheme"] = "wss" if secure else "ws"
                else:
                    scope["scheme"] = "https" if secure else "http"
        if forwarded_for:
            hosts = [h.strip() for h in forwarded_for.decode("latin-1").split(",") if h.strip()]
            if hosts:
                untrusted = (host for host in reversed(hosts) if host not in self.trusted)
                scope["client"] = (next(untrusted, hosts[0]), 0)
