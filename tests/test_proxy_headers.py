"""``--proxy-headers``: client address and scheme from trusted proxies only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from h1_client import (
    connect,
    no_connection_crashes,  # noqa: F401 - autouse fixture
    request,
)

from palfrey.asgi.proxy_headers import ProxyHeadersMiddleware, TrustedHosts

Scope = dict[str, Any]


async def client_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    host, port = scope["client"]
    body = f"{scope['scheme']}://{host}:{port}".encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


async def fetch(srv: Any, headers: list[tuple[str, str]]) -> tuple[str, int]:
    """The (scheme://host, port) the app saw, and the port the client really used."""
    async with connect(srv) as client:
        await client.send(request(headers=headers))
        body = (await client.read_response()).body.decode()
        port = client.stream.socket.getsockname()[1]
    return body, port


class TestThroughTheServer:
    async def test_trusted_proxy_sets_client_and_scheme(self, serve: Any) -> None:
        async with serve(client_app) as srv:
            seen, _ = await fetch(
                srv, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
            )
        assert seen == "https://203.0.113.7:0"

    async def test_chain_is_read_right_to_left(self, serve: Any) -> None:
        async with serve(client_app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as srv:
            seen, _ = await fetch(srv, [("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.1.2.3")])
        # 10.1.2.3 is a trusted proxy; 203.0.113.7 is the first address that is not.
        assert seen == "http://203.0.113.7:0"

    async def test_no_headers_keeps_the_socket_peer(self, serve: Any) -> None:
        async with serve(client_app) as srv:
            seen, port = await fetch(srv, [])
        assert seen == f"http://127.0.0.1:{port}"

    async def test_untrusted_peer_is_ignored(self, serve: Any) -> None:
        async with serve(client_app, forwarded_allow_ips="10.0.0.1") as srv:
            seen, port = await fetch(
                srv, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
            )
        assert seen == f"http://127.0.0.1:{port}"

    async def test_disabled(self, serve: Any) -> None:
        async with serve(client_app, proxy_headers=False) as srv:
            seen, port = await fetch(
                srv, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
            )
        assert seen == f"http://127.0.0.1:{port}"

    async def test_trust_everyone_takes_the_leftmost_address(self, serve: Any) -> None:
        async with serve(client_app, forwarded_allow_ips="*") as srv:
            seen, _ = await fetch(srv, [("X-Forwarded-For", "198.51.100.1, 203.0.113.7")])
        assert seen == "http://198.51.100.1:0"


class TestMiddleware:
    @staticmethod
    async def run(scope: Scope, trusted: str = "127.0.0.1") -> Scope:
        seen: list[Scope] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope)

        await ProxyHeadersMiddleware(app, trusted)(scope, None, None)  # type: ignore[arg-type]
        return seen[0]

    @staticmethod
    def scope(kind: str = "http", scheme: str = "http", **headers: str) -> Scope:
        return {
            "type": kind,
            "scheme": scheme,
            "client": ("127.0.0.1", 5000),
            "headers": [
                (name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()
            ],
        }

    @pytest.mark.parametrize(
        ("kind", "proto", "scheme"),
        [
            ("http", "https", "https"),
            ("http", "HTTPS", "https"),
            ("http", "http", "http"),
            ("http", "wss", "https"),
            ("websocket", "https", "wss"),
            ("websocket", "http", "ws"),
            ("websocket", "wss", "wss"),
            ("http", "https, http", "https"),
        ],
    )
    async def test_forwarded_proto(self, kind: str, proto: str, scheme: str) -> None:
        scope = await self.run(self.scope(kind, x_forwarded_proto=proto))
        assert scope["scheme"] == scheme

    async def test_unknown_proto_is_ignored(self) -> None:
        scope = await self.run(self.scope(scheme="http", x_forwarded_proto="gopher"))
        assert scope["scheme"] == "http"

    async def test_empty_forwarded_for_keeps_client(self) -> None:
        scope = await self.run(self.scope(x_forwarded_for=" , "))
        assert scope["client"] == ("127.0.0.1", 5000)

    async def test_lifespan_scope_untouched(self) -> None:
        scope = {"type": "lifespan"}
        assert await self.run(scope) == {"type": "lifespan"}

    async def test_unix_socket_client_is_not_trusted_by_address(self) -> None:
        scope = self.scope(x_forwarded_for="203.0.113.7")
        scope["client"] = None
        assert (await self.run(scope))["client"] is None


class TestTrustedHosts:
    def test_addresses_networks_and_literals(self) -> None:
        trusted = TrustedHosts("127.0.0.1, 10.0.0.0/8, ::1, fd00::/8, unix-proxy")
        assert "127.0.0.1" in trusted
        assert "10.200.3.4" in trusted
        assert "::1" in trusted
        assert "fd12::34" in trusted
        assert "unix-proxy" in trusted
        assert "127.0.0.2" not in trusted
        assert "11.0.0.1" not in trusted
        assert "2001:db8::1" not in trusted
        assert "not-an-address" not in trusted
        assert None not in trusted

    def test_star_trusts_everything(self) -> None:
        trusted = TrustedHosts("*")
        assert "203.0.113.7" in trusted
        assert "anything" in trusted

    def test_empty_trusts_nothing(self) -> None:
        assert "127.0.0.1" not in TrustedHosts("")


async def test_unix_socket_peer_is_trusted_only_with_star(serve: Any, tmp_path: Any) -> None:
    """A UNIX socket has no peer address, so only ``--forwarded-allow-ips '*'`` trusts it."""
    seen: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["scheme"], scope["client"]))
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})

    headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
    for allowed, expected in (("127.0.0.1", ("http", None)), ("*", ("https", ("203.0.113.9", 0)))):
        path = str(tmp_path / f"{len(seen)}.sock")
        async with serve(app, uds=path, forwarded_allow_ips=allowed, lifespan="off"):
            transport = httpx.AsyncHTTPTransport(uds=path)
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get("http://palfrey/", headers=headers)).status_code == 200
        assert seen[-1] == expected
